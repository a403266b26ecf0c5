"""WorldFM nodes: the frame model, its conditions and its frames along a camera path.

Data flow (SPEC-worldfm.md §2): ``INSPATIO_WORLDFM_SCENE`` (``nodes/worldfm_scene.py``: a panorama
or one image with its distance map) with an ``INSPATIO_CAMERA_PATH`` (any camera node, or Load
Camera Path on a WorldFM ``meta.json``) → **Render** (hard z-buffer anchor renders and the chosen
reference per frame, as previews) and **Sampler** (``core/worldfm/sampler.py`` ``iter_frames``:
render, select, 1/2 distilled steps, decode) → IMAGE frames. **Load WorldFM Model** reads
``worldfm_1-step.pth`` / ``worldfm_2-step.pth`` (or a safetensors copy) from
``models/diffusion_models`` through ``core/worldfm/model.py``. **Path from Input View** moves a
path relative to the input view (a preset, keyframes) into the WorldFM world (``core/paths.py``
``anchored_at``); a camera of the path that sees no point of the scene is an error naming its frame.

The frame model's image VAE is the host's: core Load VAE with the SDXL VAE, reached through its
public ``encode(IMAGE)`` / ``decode(latent)`` only (:func:`vae_image_codec`). Two facts of
ComfyUI's VAE object shape that adapter (``comfy/sd.py`` VAE, ``comfy/latent_formats.py`` SDXL):
``encode`` returns raw latents, which WorldFM multiplies by the SDXL ``scale_factor`` 0.13025
(``ImageCodec.scale``); and it returns the posterior *mean*, while upstream
``modules/worldfm_infer.py`` draws ``latent_dist.sample()``. The conditions here are therefore
the noise-free latents of the render and the reference: a deliberate, documented deviation (the
sample's spread is the VAE's small posterior std; the mean is what every ComfyUI encode gives).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import comfy as cf
from .camera import CameraPathNode, path_output
from .errors import reported_as
from .loaders import WEIGHT_DTYPES, resolve_weight_dtype

if TYPE_CHECKING:
    import torch

    from ..core.paths import CameraPath
    from ..core.types import Intrinsics, WorldToCamera
    from ..core.worldfm.bank import WorldFMScene
    from ..core.worldfm.model import WorldFMConfig
    from ..core.worldfm.sampler import ImageCodec

CATEGORY = "InSpatio/WorldFM"
MODEL_TYPE = "INSPATIO_WORLDFM_MODEL"
SCENE_TYPE = "INSPATIO_WORLDFM_SCENE"
CAMERA_PATH_TYPE = "INSPATIO_CAMERA_PATH"
# Users keep the WorldFM checkpoints beside their other diffusion models.
WORLDFM_FOLDERS = cf.DIT_FOLDERS

# The release renders and generates 512² frames; its demo K is fx = fy = 320, c = 256.
RELEASED_RENDER_SIZE = 512
RELEASED_TARGET_FOCAL = 320.0
#: The demo's field of view, used for camera paths that carry no K (about 77.3°).
RELEASED_TARGET_FOV_DEGREES = 2.0 * math.degrees(
    math.atan(RELEASED_RENDER_SIZE / 2.0 / RELEASED_TARGET_FOCAL)
)
#: How to fix a path that misses the scene: the two worlds' conventions differ (SPEC-worldfm.md §5).
INPUT_VIEW_HINT = (
    "the WorldFM world has the input view at the origin looking along +x (y down), while camera "
    "presets and keyframes start at the identity looking along +z: pass such a path through "
    "'WorldFM Path from Input View', or turn the camera towards the scene"
)
SDXL_LATENT_CHANNELS = 4
IMAGE_LATENT_NDIM = 4  # [B, C, h, w] and IMAGE [B, H, W, 3]; a video VAE adds a frame axis


@dataclass(frozen=True)
class WorldFMModelHandle:
    """What ``INSPATIO_WORLDFM_MODEL`` carries: the frame model, managed by ComfyUI."""

    managed: cf.ManagedModel

    @property
    def config(self) -> WorldFMConfig:
        return self.managed.module.config

    @property
    def dtype(self) -> torch.dtype:
        return next(self.managed.module.parameters()).dtype

    def load(self) -> torch.device:
        """Put the model on the compute device (a no-op when it is there) and return the device."""
        from ..core.worldfm.model import forward_working_memory

        return cf.load_to_device(self.managed, forward_working_memory(self.config, self.dtype))


def target_intrinsics(path: CameraPath, render_size: int) -> Intrinsics:
    """The path's K, used as given (upstream never rescales it), else the demo's FOV at this size."""
    from ..core.camera import intrinsics_from_fov

    if path.intrinsics is not None:
        return path.intrinsics
    return intrinsics_from_fov(RELEASED_TARGET_FOV_DEGREES, render_size, render_size)


def anchor_render(
    node: str, scene: WorldFMScene, intrinsics: Intrinsics, pose: WorldToCamera, frame_index: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The hard z-buffer render (RGB uint8, z-depth) of one target camera of the path.

    A camera that sees no point would silently give a black anchor render (and a frame generated
    from nothing), so it is an error on ``camera_path`` naming the frame, as is the core's
    all-points-behind-the-camera error, which does not know the frame index.
    """
    from ..core.splat import render_points_hard

    size = scene.render_size
    try:
        render, depth = render_points_hard(scene.cloud, intrinsics, pose, size, size)
    except ValueError as error:
        raise cf.NodeInputError(
            node,
            "camera_path",
            f"frame {frame_index} cannot be rendered: {error}; {INPUT_VIEW_HINT}",
        ) from error
    if not bool((depth > 0).any()):
        # The other usual cause: a K made for another canvas (the demo's c = 256 on a smaller
        # render puts the whole scene off the image), so the canvas and K are part of the message.
        centre_x, centre_y = float(intrinsics[0, 2]), float(intrinsics[1, 2])
        raise cf.NodeInputError(
            node,
            "camera_path",
            f"frame {frame_index} sees no point of the scene (its anchor render is black); "
            f"{INPUT_VIEW_HINT}. If the path has its own K, it must fit the {size}×{size} render "
            f"(its principal point is at ({centre_x:g}, {centre_y:g}))",
        )
    return render, depth


def vae_image_codec(node: str, input_name: str, vae: Any, model: WorldFMModelHandle) -> ImageCodec:
    """The core ``ImageCodec`` of a ComfyUI VAE object, through its public encode/decode only.

    ComfyUI takes IMAGE ``[B, H, W, 3]`` in [0, 1] and maps it to [-1, 1] itself, without
    clamping, so upstream's bicubic overshoot reaches the encoder unchanged; ``decode`` returns
    IMAGE clamped to [0, 1], which the sampler's clamp(127.5·x + 128) would clamp the same way.
    Latents come back on the frame model's device and dtype.
    """
    from einops import rearrange

    from ..core.worldfm.sampler import ImageCodec

    if not (callable(getattr(vae, "encode", None)) and callable(getattr(vae, "decode", None))):
        raise cf.NodeInputError(
            node, input_name, f"is a {type(vae).__name__}, not a VAE: connect Load VAE (SDXL VAE)"
        )
    channels = getattr(vae, "latent_channels", SDXL_LATENT_CHANNELS)
    if channels != SDXL_LATENT_CHANNELS:
        raise cf.NodeInputError(
            node,
            input_name,
            f"is a VAE with {channels} latent channels; WorldFM works in the 4-channel SDXL latent "
            "space: load sdxl_vae.safetensors with Load VAE",
        )

    def encode(pixels):
        images = rearrange((pixels.float() + 1.0) / 2.0, "b c h w -> b h w c")
        latents = vae.encode(images)
        if latents.ndim != IMAGE_LATENT_NDIM or latents.shape[1] != SDXL_LATENT_CHANNELS:
            raise cf.NodeInputError(
                node,
                input_name,
                f"encoded an image to latents of shape {tuple(latents.shape)}, not "
                f"[batch, {SDXL_LATENT_CHANNELS}, h, w]: load the SDXL image VAE",
            )
        # ComfyUI's VAE loads itself onto the GPU and may evict the frame model to make room,
        # so the model is (re)loaded before it runs on these latents.
        return latents.to(device=model.load(), dtype=model.dtype)

    def decode(latents):
        images = vae.decode(latents.float())
        if images.ndim != IMAGE_LATENT_NDIM:
            raise cf.NodeInputError(
                node,
                input_name,
                f"decoded to shape {tuple(images.shape)}, not IMAGE [batch, height, width, 3]: "
                "load the SDXL image VAE",
            )
        return rearrange(images.float(), "b h w c -> b c h w") * 2.0 - 1.0

    return ImageCodec(encode=encode, decode=decode)


# --- nodes ---------------------------------------------------------------------------------------


class InSpatioWorldFMModelLoader:
    NODE = "Load WorldFM Model"
    CATEGORY = CATEGORY
    DESCRIPTION = "Loads the InSpatio-WorldFM frame model (PixArt-Σ, distilled to 1 or 2 steps)."
    RETURN_TYPES = (MODEL_TYPE,)
    RETURN_NAMES = ("worldfm_model",)
    OUTPUT_TOOLTIPS = ("The frame model, for WorldFM Sampler.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                "checkpoint": (
                    cf.model_files(*WORLDFM_FOLDERS),
                    {
                        "tooltip": "worldfm_1-step.pth or worldfm_2-step.pth (inspatio/worldfm), or a "
                        "safetensors copy, from models/diffusion_models.",
                    },
                ),
                "weight_dtype": (
                    list(WEIGHT_DTYPES),
                    {
                        "default": "auto",
                        "tooltip": "auto: fp16 on a GPU (what the official service runs), fp32 on the CPU. "
                        "bf16 rounds the timestep 999 to 1000: avoid it.",
                    },
                ),
            }
        }

    @classmethod
    def IS_CHANGED(cls, checkpoint: str, **_widgets: object) -> str:
        return cf.model_file_fingerprint(checkpoint, *WORLDFM_FOLDERS)

    def load(self, checkpoint: str, weight_dtype: str) -> tuple[WorldFMModelHandle]:
        import torch

        from ..core.worldfm.model import load_worldfm

        path = cf.model_path(self.NODE, "checkpoint", checkpoint, *WORLDFM_FOLDERS)
        # fp16 is what the official service runs (bf16 would round the timestep 999 to 1000).
        dtype = resolve_weight_dtype(self.NODE, weight_dtype, auto=torch.float16)
        with reported_as(self.NODE, "checkpoint"):
            model = load_worldfm(path).to(dtype)
        return (WorldFMModelHandle(cf.manage_model(model)),)


class InSpatioWorldFMRender:
    NODE = "WorldFM Render"
    CATEGORY = CATEGORY
    DESCRIPTION = (
        "What the frame model is conditioned on, per camera: the point-cloud anchor render and "
        "the reference view chosen by the depth-consistency test. Costs no model time."
    )
    RETURN_TYPES = ("IMAGE", "IMAGE")
    RETURN_NAMES = ("anchor_renders", "references")
    OUTPUT_TOOLTIPS = (
        "The hard z-buffer render per frame; black where no point lands.",
        "The bank view selected for each frame (cond2), at the render size.",
    )
    FUNCTION = "render"

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                "worldfm_scene": (SCENE_TYPE, {"tooltip": "From a WorldFM Scene node."}),
                "camera_path": (
                    CAMERA_PATH_TYPE,
                    {
                        "tooltip": "Target cameras in the WorldFM world (origin at the panorama centre, "
                        "input view along +x, y down), e.g. Load Camera Path on a meta.json. "
                        "Its K is used as given; without one, the release's 512² demo FOV. A preset or keyframe path "
                        "goes through WorldFM Path from Input View first.",
                    },
                ),
            }
        }

    def render(self, worldfm_scene, camera_path):
        import torch

        from ..core.worldfm.bank import reference_image, select_reference

        node = self.NODE
        scene = worldfm_scene.to(cf.compute_device())
        size = scene.render_size
        intrinsics = target_intrinsics(camera_path, size)
        renders, references = [], []
        bar = cf.progress_bar(camera_path.num_frames)
        for frame_index, pose in enumerate(camera_path.world_to_camera):
            cf.check_interrupted()
            render, depth = anchor_render(node, scene, intrinsics, pose, frame_index)
            with reported_as(node, "camera_path"):
                chosen = select_reference(scene.database, depth[0], intrinsics, pose)
            renders.append(render[0].cpu())
            references.append(reference_image(scene.bank, chosen.best, size))
            bar.update(1)
        return (cf.u8_to_image(torch.stack(renders)), cf.u8_to_image(torch.stack(references)))


class InSpatioWorldFMSampler:
    NODE = "WorldFM Sampler"
    CATEGORY = CATEGORY
    DESCRIPTION = (
        "Generates one frame per camera: anchor render + chosen reference -> the distilled frame "
        "model (1 or 2 steps) -> the VAE decoder. Frames are independent; each one's noise comes "
        "from (seed, frame index)."
    )
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("frames",)
    OUTPUT_TOOLTIPS = ("The generated frames, one per camera of the path.",)
    FUNCTION = "sample"

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        from ..core.worldfm.sampler import STEP_TIMESTEPS

        return {
            "required": {
                "worldfm_model": (MODEL_TYPE, {"tooltip": "From Load WorldFM Model."}),
                "vae": (
                    "VAE",
                    {
                        "tooltip": "The SDXL VAE (Load VAE, sdxl_vae.safetensors); WorldFM's latents "
                        "are SDXL latents x 0.13025."
                    },
                ),
                "worldfm_scene": (SCENE_TYPE, {"tooltip": "From a WorldFM Scene node."}),
                "camera_path": (
                    CAMERA_PATH_TYPE,
                    {"tooltip": "Target cameras in the WorldFM world, one per output frame."},
                ),
                "steps": (
                    "INT",
                    {
                        "default": max(STEP_TIMESTEPS),
                        "min": min(STEP_TIMESTEPS),
                        "max": max(STEP_TIMESTEPS),
                        "tooltip": "1 for worldfm_1-step, 2 for worldfm_2-step (the checkpoint's "
                        "distillation).",
                    },
                ),
                "seed": (
                    "INT",
                    {
                        "default": 0,
                        "min": 0,
                        "max": cf.MAX_SEED,
                        "control_after_generate": True,
                        "tooltip": "Noise seed; the same seed gives the same frames, so a fixed seed "
                        "avoids flicker from fresh noise per frame.",
                    },
                ),
            }
        }

    def sample(self, worldfm_model, vae, worldfm_scene, camera_path, steps, seed):
        import torch

        from ..core.worldfm.sampler import STEP_TIMESTEPS, iter_frames

        node = self.NODE
        if steps not in STEP_TIMESTEPS:
            raise cf.NodeInputError(
                node,
                "steps",
                f"is {steps}: use 1 with worldfm_1-step and 2 with worldfm_2-step",
            )
        handle = worldfm_model
        codec = vae_image_codec(node, "vae", vae, handle)
        scene = worldfm_scene.to(handle.load())
        intrinsics = target_intrinsics(camera_path, scene.render_size)
        # Every camera is checked before any model time is spent: a path that misses the scene
        # (usually a preset not moved into the WorldFM world) fails at once, naming the frame,
        # instead of after minutes of frames generated from black renders. The hard render is
        # cheap next to a frame of the model and the VAE.
        for frame_index, pose in enumerate(camera_path.world_to_camera):
            anchor_render(node, scene, intrinsics, pose, frame_index)
        bar = cf.progress_bar(camera_path.num_frames)
        frames = []
        with reported_as(node, "camera_path"):
            generated = iter_frames(
                handle.managed.module,
                codec,
                scene,
                intrinsics,
                camera_path.world_to_camera,
                seed=seed,
                steps=steps,
            )
            cf.check_interrupted()
            # One frame per iteration: the bank views are encoded once, on first selection, and
            # the user can cancel between frames.
            for _, frame, _ in generated:
                frames.append(frame.cpu())
                bar.update(1, preview=cf.u8_to_image(frame)[0])
                cf.check_interrupted()
        return (cf.u8_to_image(torch.cat(frames)),)


class InSpatioWorldFMPathFromInputView(CameraPathNode):
    """A camera path relative to the input view, moved into the WorldFM world."""

    NODE = "WorldFM Path from Input View"
    CATEGORY = CATEGORY
    FUNCTION = "anchor"
    DESCRIPTION = (
        "Any camera path whose identity pose means 'the input view' (presets, keyframes, v1 "
        "files) becomes the same move in the WorldFM world, where the input view sits at the "
        "origin looking along +x: Tcw_world = Tcw_path @ Tcw_input_view."
    )

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                "camera_path": (
                    CAMERA_PATH_TYPE,
                    {
                        "tooltip": "A move relative to the input view (its first camera is usually "
                        "the identity), e.g. from Camera Path Preset without a scene.",
                    },
                ),
            }
        }

    def anchor(self, camera_path):
        from ..core.paths import anchored_at
        from ..core.worldfm.bank import input_view_world_to_camera

        with reported_as(self.NODE, "camera_path"):
            return path_output(anchored_at(camera_path, input_view_world_to_camera()))


NODE_CLASSES = (
    InSpatioWorldFMModelLoader,
    InSpatioWorldFMRender,
    InSpatioWorldFMSampler,
    InSpatioWorldFMPathFromInputView,
)
NODE_CLASS_MAPPINGS = {node.__name__: node for node in NODE_CLASSES}
NODE_DISPLAY_NAME_MAPPINGS = {node.__name__: node.NODE for node in NODE_CLASSES}
