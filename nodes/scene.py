"""Scene nodes: a video or 1/4 images plus depth become an ``INSPATIO_SCENE``.

Data flow: IMAGE frames (Load Video, Load Image) + a depth map from any depth node → **Scene from
Video / Images** → ``core.scene.Scene`` → Render Condition, Camera Path Preview, the world sampler.
Depth maps are read with ``nodes/depth_maps.py`` (``core/depth.py``: metric, inverse or
normalised), the scene is built and fitted to the model resolution by ``core/scene.py``; source
cameras come from any camera-path node (a v1.5 ``source_tcw.txt`` file, the JSON wire format) as
an ``INSPATIO_CAMERA_PATH``. The declarations every scene node shares (:class:`SceneNode`, the
fps and resolution widgets) are here; the v1 re-timing nodes are in ``nodes/scene_time.py``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import comfy as cf
from .depth_maps import depth_map_inputs, read_depth_input
from .errors import check_choice, reported_as

if TYPE_CHECKING:
    from ..core.depth import DepthImage
    from ..core.paths import CameraPath
    from ..core.types import (
        DepthMaps,
        ImageBatch,
        Intrinsics,
        MaskBatch,
        VideoFrames,
        WorldToCamera,
    )

CATEGORY = "InSpatio/Scene"
SCENE_TYPE = "INSPATIO_SCENE"
CAMERA_PATH_TYPE = "INSPATIO_CAMERA_PATH"

# v1.5 keeps every frame (the sampler pads to whole blocks and cuts the output back);
# v1 truncates the video to whole blocks before anything else.
FRAME_COUNT_POLICIES = ("pad_v1.5", "truncate_v1")

DEFAULT_WIDTH, DEFAULT_HEIGHT = 832, 480  # the released checkpoints' resolution
RESOLUTION_STEP = 16  # VAE stride 8 x DiT patch 2
MAX_RESOLUTION = 4096
DEFAULT_FPS = 16.0
MIN_FPS, MAX_FPS = 1.0, 240.0
DEFAULT_FOV_DEGREES = 60.0
DEFAULT_FAR = 10.0  # of inverse / normalised depth maps, scene units


class SceneNode:
    """The declarations every node with one ``INSPATIO_SCENE`` output shares."""

    CATEGORY = CATEGORY
    RETURN_TYPES = (SCENE_TYPE,)
    RETURN_NAMES = ("scene",)


def _depth_inputs() -> dict:
    return depth_map_inputs(
        "depth",
        "Depth map per frame from any depth node (grayscale IMAGE or MASK), at the frames' size "
        "or the same aspect ratio.",
        default_encoding="inverse",
        default_far=DEFAULT_FAR,
        scale_tooltip="Multiplier of 'metric' depth values (0.001 for millimetre maps).",
    )


def fps_input(tooltip: str) -> dict:
    """The frame-rate widget of the scene nodes."""
    return {
        "fps": (
            "FLOAT",
            {
                "default": DEFAULT_FPS,
                "min": MIN_FPS,
                "max": MAX_FPS,
                "step": 0.01,
                "tooltip": tooltip,
            },
        ),
    }


def resolution_inputs(width_tooltip: str) -> dict:
    """The model-resolution widgets of the scene nodes (multiples of the DiT's pixel stride)."""
    return {
        "width": (
            "INT",
            {
                "default": DEFAULT_WIDTH,
                "min": RESOLUTION_STEP,
                "max": MAX_RESOLUTION,
                "step": RESOLUTION_STEP,
                "tooltip": width_tooltip,
            },
        ),
        "height": (
            "INT",
            {
                "default": DEFAULT_HEIGHT,
                "min": RESOLUTION_STEP,
                "max": MAX_RESOLUTION,
                "step": RESOLUTION_STEP,
                "tooltip": "Model height (480 for the released model).",
            },
        ),
    }


def _camera_and_size_inputs() -> dict:
    return {
        "fov_degrees": (
            "FLOAT",
            {
                "default": DEFAULT_FOV_DEGREES,
                "min": 1.0,
                "max": 179.0,
                "step": 0.1,
                "tooltip": "Horizontal field of view of the source camera; ignored when "
                "source_cameras carries intrinsics.",
            },
        ),
        **resolution_inputs(
            "Model width: frames are resized to cover it and centre-cropped (832 for the "
            "released model)."
        ),
    }


def _source_views(
    node: str,
    input_name: str,
    images: ImageBatch,
    depth: DepthImage | MaskBatch,
    depth_encoding: str,
    depth_near: float,
    depth_far: float,
    depth_scale: float,
    fov_degrees: float,
    source_cameras: CameraPath | None,
) -> tuple[VideoFrames, DepthMaps, Intrinsics, WorldToCamera | None]:
    """What both scene nodes read from their inputs: the frames, one depth map per frame at their
    size, the intrinsics (the cameras' K, else from ``fov_degrees``) and the world-to-camera poses
    (None when no cameras are connected)."""
    from ..core.camera import intrinsics_from_fov
    from ..core.depth import match_depth_size

    frames = cf.image_to_frames(node, input_name, images)
    depth_maps = read_depth_input(
        node, "depth", depth, depth_encoding, depth_near, depth_far, depth_scale
    )
    if depth_maps.shape[0] != frames.shape[0]:
        raise cf.NodeInputError(
            node,
            "depth",
            f"has {depth_maps.shape[0]} depth maps for {frames.shape[0]} frames: estimate depth "
            f"for every frame (the same batch that feeds the {input_name} input)",
        )
    with reported_as(node, "depth"):
        depth_maps = match_depth_size(depth_maps, frames.shape[-2], frames.shape[-1])
    count, _, height, width = frames.shape
    if source_cameras is not None and source_cameras.num_frames != count:
        raise cf.NodeInputError(
            node,
            "source_cameras",
            f"has {source_cameras.num_frames} poses for {count} frames: give one source pose per frame",
        )
    intrinsics = None if source_cameras is None else source_cameras.intrinsics
    if intrinsics is None:
        with reported_as(node, "fov_degrees"):
            intrinsics = intrinsics_from_fov(fov_degrees, width, height)
    world_to_camera = None if source_cameras is None else source_cameras.world_to_camera
    return frames, depth_maps, intrinsics, world_to_camera


class InSpatioSceneFromVideo(SceneNode):
    """A video scene: target frame f is rendered from source frame f."""

    NODE = "InSpatio Scene from Video"
    OUTPUT_TOOLTIPS = (
        "The source video with depth, intrinsics and poses, at the model resolution.",
    )
    FUNCTION = "build"
    DESCRIPTION = "Frames + per-frame depth (+ optional source cameras) -> an InSpatio scene."

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "frames": (
                    "IMAGE",
                    {"tooltip": "Video frames, e.g. from Load Video + Get Video Components."},
                ),
                **_depth_inputs(),
                **fps_input("Frame rate of the video (and of the output)."),
                **_camera_and_size_inputs(),
                "frame_count_policy": (
                    list(FRAME_COUNT_POLICIES),
                    {
                        "default": FRAME_COUNT_POLICIES[0],
                        "tooltip": "'pad_v1.5' keeps every frame (the sampler pads to whole blocks and cuts the output back); "
                        "'truncate_v1' cuts the video to whole 12-frame blocks (v1).",
                    },
                ),
            },
            "optional": {
                "source_cameras": (
                    CAMERA_PATH_TYPE,
                    {
                        "tooltip": "One pose per frame (e.g. Load Camera Path on a v1.5 source_tcw.txt). Without it the "
                        "camera is static. Intrinsics it carries (pixel K of the input frames) replace fov_degrees."
                    },
                ),
            },
        }

    def build(
        self,
        frames,
        depth,
        depth_encoding,
        depth_near,
        depth_far,
        depth_scale,
        fps,
        fov_degrees,
        width,
        height,
        frame_count_policy,
        source_cameras=None,
    ):
        from ..core.scene import scene_from_video, truncated_frame_count

        check_choice(self.NODE, "frame_count_policy", frame_count_policy, FRAME_COUNT_POLICIES)
        source, depth_maps, intrinsics, world_to_camera = _source_views(
            self.NODE,
            "frames",
            frames,
            depth,
            depth_encoding,
            depth_near,
            depth_far,
            depth_scale,
            fov_degrees,
            source_cameras,
        )
        with reported_as(self.NODE, "frames"):
            scene = scene_from_video(
                source, depth_maps, intrinsics, world_to_camera, fps, (height, width)
            )
            if frame_count_policy == "truncate_v1":
                scene = scene.select_frames(range(truncated_frame_count(scene.num_frames)))
        return (scene,)


class InSpatioSceneFromImages(SceneNode):
    """A v1.5 image scene: one image, or four views fused into every target frame."""

    NODE = "InSpatio Scene from Images"
    OUTPUT_TOOLTIPS = (
        "The 1 or 4 views with depth, intrinsics and poses, at the model resolution.",
    )
    FUNCTION = "build"
    DESCRIPTION = "1 image or 4 views + depth (+ their cameras) -> an InSpatio image scene."

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "images": (
                    "IMAGE",
                    {"tooltip": "One image, or a batch of 4 views of the same place."},
                ),
                **_depth_inputs(),
                **fps_input("Frame rate of the generated video."),
                **_camera_and_size_inputs(),
            },
            "optional": {
                "source_cameras": (
                    CAMERA_PATH_TYPE,
                    {
                        "tooltip": "One pose per view (needed for 4 views, e.g. a v1.5 source_tcw.txt). A single image "
                        "without it sits at the origin. Intrinsics it carries (pixel K of the input images) replace "
                        "fov_degrees."
                    },
                ),
            },
        }

    def build(
        self,
        images,
        depth,
        depth_encoding,
        depth_near,
        depth_far,
        depth_scale,
        fps,
        fov_degrees,
        width,
        height,
        source_cameras=None,
    ):
        import torch

        from ..core.scene import scene_from_images

        views, depth_maps, intrinsics, world_to_camera = _source_views(
            self.NODE,
            "images",
            images,
            depth,
            depth_encoding,
            depth_near,
            depth_far,
            depth_scale,
            fov_degrees,
            source_cameras,
        )
        if world_to_camera is None:
            if views.shape[0] != 1:
                raise cf.NodeInputError(
                    self.NODE,
                    "source_cameras",
                    f"is missing: {views.shape[0]} views need one pose each",
                )
            world_to_camera = torch.eye(4)[None]
        with reported_as(self.NODE, "images"):
            scene = scene_from_images(
                views, depth_maps, intrinsics, world_to_camera, fps, (height, width)
            )
        return (scene,)


NODE_CLASSES = (InSpatioSceneFromVideo, InSpatioSceneFromImages)
NODE_CLASS_MAPPINGS = {node.__name__: node for node in NODE_CLASSES}
NODE_DISPLAY_NAME_MAPPINGS = {node.__name__: node.NODE for node in NODE_CLASSES}
