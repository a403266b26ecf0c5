"""WorldFM scene nodes: a panorama, or one image, with its distance map becomes a WorldFM scene.

Data flow (SPEC-worldfm.md §2): panorama IMAGE + distance map from any depth node → **Scene from
Panorama** (``core/worldfm/bank.py``: one point per pixel, the 42-view reference bank, its
condition database) → ``INSPATIO_WORLDFM_SCENE`` → WorldFM Render and WorldFM Sampler
(``nodes/worldfm.py``). **Scene from Image** builds the degraded scene of one perspective image,
whose only reference is the image itself. Distance and depth maps are read like every other depth
map of the pack (``nodes/depth_maps.py``, ``core/depth.py``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import comfy as cf
from .depth_maps import depth_map_inputs, read_depth_input
from .errors import reported_as
from .worldfm import CATEGORY, RELEASED_RENDER_SIZE, SCENE_TYPE

if TYPE_CHECKING:
    from ..core.depth import DepthImage
    from ..core.types import DepthMaps, MaskBatch

#: HunyuanWorld places the input image over 80° of the panorama (SPEC-worldfm.md §2.2).
PANORAMA_INPUT_FOV_DEGREES = 80.0
DEFAULT_FAR_DISTANCE = 20.0  # metres: a room or a street around the panorama centre
RENDER_SIZE_STEP = 8  # the VAE stride
MAX_RENDER_SIZE = 4096


class WorldFMSceneNode:
    """The declarations both WorldFM scene nodes share: one ``INSPATIO_WORLDFM_SCENE`` output."""

    CATEGORY = CATEGORY
    RETURN_TYPES = (SCENE_TYPE,)
    RETURN_NAMES = ("worldfm_scene",)
    OUTPUT_TOOLTIPS = ("The scene, for WorldFM Render and WorldFM Sampler.",)
    FUNCTION = "build"


def _read_map(
    node: str,
    input_name: str,
    image_or_mask: DepthImage | MaskBatch,
    encoding: str,
    near: float,
    far: float,
    scale: float,
) -> DepthMaps:
    """The ``[1, H, W]`` distances of one image, from a depth node's IMAGE or MASK."""
    values = read_depth_input(node, input_name, image_or_mask, encoding, near, far, scale)
    if values.shape[0] != 1:
        raise cf.NodeInputError(
            node,
            input_name,
            f"holds {values.shape[0]} maps; connect the one map of this image",
        )
    return values


def _map_inputs(name: str, what: str, default_encoding: str) -> dict:
    return depth_map_inputs(
        name,
        f"{what} from any depth node (grayscale IMAGE or MASK).",
        default_encoding=default_encoding,
        default_far=DEFAULT_FAR_DISTANCE,
        scale_tooltip="Multiplier of 'metric' values (the WorldFM pipeline stores MoGe distances / "
        "100 and multiplies by 100).",
    )


def _render_size_input() -> dict:
    return {
        "render_size": (
            "INT",
            {
                "default": RELEASED_RENDER_SIZE,
                "min": RENDER_SIZE_STEP,
                "max": MAX_RENDER_SIZE,
                "step": RENDER_SIZE_STEP,
                "tooltip": "Side of the square anchor renders and references (512 as released); "
                "the sampler resizes them to the model's 512².",
            },
        )
    }


def _bank_inputs() -> dict:
    from ..core.worldfm.bank import RELEASED_CROP_FOCAL, RELEASED_CROP_SIZE

    return {
        "reference_size": (
            "INT",
            {
                "default": RELEASED_CROP_SIZE,
                "min": RENDER_SIZE_STEP,
                "max": MAX_RENDER_SIZE,
                "tooltip": "Side of the 42 perspective reference crops (504 as released). Their depth "
                "maps are drawn with this crop's K into the render_size canvas (an upstream quirk), "
                "so keep it close to render_size.",
            },
        ),
        "reference_focal": (
            "FLOAT",
            {
                "default": RELEASED_CROP_FOCAL,
                "min": 1.0,
                "max": 100000.0,
                "step": 0.1,
                "tooltip": "Focal length of the reference crops in pixels (320 as released: "
                "a 76° field of view at 504).",
            },
        ),
    }


class InSpatioWorldFMSceneFromPanorama(WorldFMSceneNode):
    NODE = "WorldFM Scene from Panorama"
    DESCRIPTION = (
        "Equirectangular panorama + ray-distance map -> point cloud, 42-view reference bank and "
        "its condition database (the official step 2)."
    )

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                "panorama": (
                    "IMAGE",
                    {"tooltip": "A full 360x180 equirectangular panorama, 2:1 (e.g. 4096x2048)."},
                ),
                **_map_inputs(
                    "distance",
                    "Ray distance from the panorama centre (MoGe-style ||point||, not z-depth), "
                    "2:1 at any resolution",
                    "metric",
                ),
                **_render_size_input(),
                **_bank_inputs(),
            }
        }

    def build(
        self,
        panorama,
        distance,
        distance_encoding,
        distance_near,
        distance_far,
        distance_scale,
        render_size,
        reference_size,
        reference_focal,
    ):
        from ..core.worldfm.bank import fit_panorama, panorama_scene

        node = self.NODE
        with reported_as(node, "panorama"):
            pixels = fit_panorama(cf.image_to_u8(node, "panorama", panorama))
        distances = _read_map(
            node,
            "distance",
            distance,
            distance_encoding,
            distance_near,
            distance_far,
            distance_scale,
        )
        with reported_as(node, "distance"):
            scene = panorama_scene(
                pixels, distances[0], render_size, crop_size=reference_size, focal=reference_focal
            )
        return (scene,)


class InSpatioWorldFMSceneFromImage(WorldFMSceneNode):
    NODE = "WorldFM Scene from Image"
    DESCRIPTION = (
        "One perspective image + its depth -> a degraded WorldFM scene whose only reference is "
        "the image (no panorama: views away from it have holes)."
    )

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                "image": ("IMAGE", {"tooltip": "The perspective image; it looks along +x."}),
                **_map_inputs(
                    "depth", "z-depth of the image, at its size or the same aspect", "inverse"
                ),
                "fov_degrees": (
                    "FLOAT",
                    {
                        "default": PANORAMA_INPUT_FOV_DEGREES,
                        "min": 1.0,
                        "max": 179.0,
                        "step": 0.1,
                        "tooltip": "Horizontal field of view of the image (80 is what the panorama "
                        "pipeline assumes).",
                    },
                ),
                **_render_size_input(),
            }
        }

    def build(
        self,
        image,
        depth,
        depth_encoding,
        depth_near,
        depth_far,
        depth_scale,
        fov_degrees,
        render_size,
    ):
        from ..core.camera import intrinsics_from_fov
        from ..core.depth import match_depth_size
        from ..core.worldfm.bank import image_scene, input_view_world_to_camera

        node = self.NODE
        pixels = cf.image_to_u8(node, "image", image)
        height, width = pixels.shape[:2]
        depths = _read_map(node, "depth", depth, depth_encoding, depth_near, depth_far, depth_scale)
        with reported_as(node, "depth"):
            depths = match_depth_size(depths, height, width)
        with reported_as(node, "fov_degrees"):
            intrinsics = intrinsics_from_fov(fov_degrees, width, height)
        with reported_as(node, "image"):
            scene = image_scene(
                pixels, depths[0], intrinsics, input_view_world_to_camera(), render_size
            )
        return (scene,)


NODE_CLASSES = (InSpatioWorldFMSceneFromPanorama, InSpatioWorldFMSceneFromImage)
NODE_CLASS_MAPPINGS = {node.__name__: node for node in NODE_CLASSES}
NODE_DISPLAY_NAME_MAPPINGS = {node.__name__: node.NODE for node in NODE_CLASSES}
