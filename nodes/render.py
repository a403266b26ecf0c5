"""Render Condition: what the camera will see, before any GPU time is spent on the world model.

Data flow: ``INSPATIO_SCENE`` + ``INSPATIO_CAMERA_PATH`` → **here** → the splat render (IMAGE,
holes black) and its validity mask (MASK), plus an ``INSPATIO_RENDER`` bundle for the world
sampler: the render, the mask and the source video aligned frame by frame with the path.

The core does the work: ``core.scene.align_frame_counts`` pairs path frames with video frames,
``core.splat.render_video_scene`` / ``render_image_scene`` splat with the official soft z-buffer
(v1.5 per-frame normalisation by default, v1's whole-video normalisation as an option), and a
4-view image scene takes its source frames from ``select_chunk_top3`` as v1.5 does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from . import comfy as cf
from .errors import reported_as

if TYPE_CHECKING:
    from ..core.types import RenderFrames, RenderMask, VideoFrames

CATEGORY = "InSpatio/Render"
SCENE_TYPE = "INSPATIO_SCENE"
CAMERA_PATH_TYPE = "INSPATIO_CAMERA_PATH"
RENDER_TYPE = "INSPATIO_RENDER"

ALIGNMENT_POLICIES = ("exact", "shortest", "hold_last", "bounce")
SPLAT_SEMANTICS = ("v1.5", "v1")
FRAMES_PER_CALL = 4  # frames splatted together: bounds memory, does not change the result


@dataclass(frozen=True)
class RenderCondition:
    """The explicit spatial constraint of one run, one entry per output frame.

    source_frames: [T, 3, H, W] in [-1, 1], the reference video the sampler encodes
    render:        [T, 3, H, W] in [-1, 1], holes -1
    mask:          [T, 1, H, W] in {0, 1}
    fps:           playback rate of the output
    """

    source_frames: VideoFrames
    render: RenderFrames
    mask: RenderMask
    fps: float

    @property
    def num_frames(self) -> int:
        return int(self.render.shape[0])


def render_condition(
    scene, path, alignment: str = "exact", semantics: str = "v1.5", device=None
) -> RenderCondition:
    """Splat ``scene`` along ``path`` (plain core call sequence, shared by the node and the demo).

    The splat runs on ``device`` (default: where the scene is); the result comes back on
    ComfyUI's intermediate device, so no node output holds GPU memory (COMFYUI.md §13.5).
    """
    from ..core.scene import align_frame_counts, chunk_frame_indices, padded_frame_count
    from ..core.splat import V1_SPLAT, V15_SPLAT, render_image_scene, render_video_scene

    config = {"v1.5": V15_SPLAT, "v1": V1_SPLAT}[semantics]
    scene, path = _on_device(scene, path, device or scene.frames.device)
    poses = path.world_to_camera
    fps = path.fps or scene.fps
    if scene.kind == "video":
        indices = align_frame_counts(scene.num_frames, path.num_frames, alignment)
        aligned = scene.select_frames(indices)
        result = render_video_scene(
            aligned, poses[: len(indices)], path.intrinsics, config, FRAMES_PER_CALL
        )
        return _condition(aligned.frames, result.frames, result.mask, fps)
    # Source views are chosen per chunk of whole blocks, so the path is padded like v1.5 pads the
    # video (holding the last pose) and the extra frames are cut again afterwards.
    valid = path.num_frames
    padded = [
        index for chunk in chunk_frame_indices(valid, padded_frame_count(valid)) for index in chunk
    ]
    result = render_image_scene(scene, poses[padded], path.intrinsics, config, FRAMES_PER_CALL)
    source_frames = scene.frames[result.source_view_of_frames().to(scene.frames.device)]
    return _condition(
        source_frames[:valid], result.render.frames[:valid], result.render.mask[:valid], fps
    )


def _on_device(scene, path, device):
    """The scene's tensors and the path's poses on ``device`` (the same objects when already there)."""
    from dataclasses import replace

    moved_scene = replace(
        scene,
        frames=scene.frames.to(device),
        depth=scene.depth.to(device),
        intrinsics=scene.intrinsics.to(device),
        world_to_camera=scene.world_to_camera.to(device),
    )
    intrinsics = None if path.intrinsics is None else path.intrinsics.to(device)
    moved_path = replace(
        path, world_to_camera=path.world_to_camera.to(device), intrinsics=intrinsics
    )
    return moved_scene, moved_path


def _condition(source_frames, render, mask, fps) -> RenderCondition:
    output_device = cf.intermediate_device()
    return RenderCondition(
        source_frames.to(output_device), render.to(output_device), mask.to(output_device), fps
    )


class InSpatioRenderCondition:
    """Scene + camera path → the render and mask the world model will be conditioned on."""

    NODE = "InSpatio Render Condition"
    CATEGORY = CATEGORY
    RETURN_TYPES = ("IMAGE", "MASK", RENDER_TYPE)
    RETURN_NAMES = ("render", "mask", "condition")
    OUTPUT_TOOLTIPS = (
        "The scene seen from the path, one frame per pose; black where nothing is known.",
        "1 where the render is known, 0 in the holes the world model will fill.",
        "Render, mask and aligned source video for Initialize World Cache.",
    )
    FUNCTION = "render"
    DESCRIPTION = "Forward-splat the scene into every camera of the path (official soft z-buffer)."

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "scene": (SCENE_TYPE, {"tooltip": "From Scene from Video / Scene from Images."}),
                "camera_path": (
                    CAMERA_PATH_TYPE,
                    {"tooltip": "The target cameras, one per output frame."},
                ),
                "frame_alignment": (
                    list(ALIGNMENT_POLICIES),
                    {
                        "default": "exact",
                        "tooltip": "Video scenes only, when the path and the video differ in length: 'exact' = error; "
                        "'shortest' = cut both; 'hold_last' = hold the last video frame (v1.5); "
                        "'bounce' = play the video back and forth (v1).",
                    },
                ),
                "splat_semantics": (
                    list(SPLAT_SEMANTICS),
                    {
                        "default": "v1.5",
                        "tooltip": "'v1.5': depth weights normalised per frame (default); 'v1': over the whole video, "
                        "as the v1 release renders.",
                    },
                ),
            },
        }

    def render(self, scene, camera_path, frame_alignment, splat_semantics):
        if frame_alignment not in ALIGNMENT_POLICIES:
            raise cf.NodeInputError(
                self.NODE,
                "frame_alignment",
                f"is {frame_alignment!r}: use one of {', '.join(ALIGNMENT_POLICIES)}",
            )
        if splat_semantics not in SPLAT_SEMANTICS:
            raise cf.NodeInputError(
                self.NODE,
                "splat_semantics",
                f"is {splat_semantics!r}: use one of {', '.join(SPLAT_SEMANTICS)}",
            )
        with reported_as(self.NODE, "camera_path"):
            condition = render_condition(
                scene, camera_path, frame_alignment, splat_semantics, cf.compute_device()
            )
        return (
            cf.frames_to_image(condition.render),
            cf.render_mask_to_mask(condition.mask),
            condition,
        )


NODE_CLASS_MAPPINGS = {"InSpatioRenderCondition": InSpatioRenderCondition}
NODE_DISPLAY_NAME_MAPPINGS = {"InSpatioRenderCondition": InSpatioRenderCondition.NODE}
