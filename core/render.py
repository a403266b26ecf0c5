"""The render condition of one run: a scene splatted along a camera path, frame by frame.

Data flow: ``core.scene.Scene`` + ``core.paths.CameraPath`` → **here** → :class:`RenderCondition`
(the splat render, its validity mask and the source video aligned with the path) → the world
sampler, which encodes the render and the source video as the DiT's conditions. Used by the Render
Condition node (``nodes/render.py``) and the demo.

The steps are the official ones, each done by its core module: a video scene's frames are paired
with path frames by a frame-count policy (``core/frame_counts.py``) and splatted with the soft
z-buffer of ``core/splat.py`` (v1.5 normalises the depth weights per frame, v1 over the whole
video); a 4-view image scene picks its source views per chunk of whole blocks with
``select_chunk_top3`` as v1.5's image pipeline does.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import get_args

import torch

from .frame_counts import FrameCountPolicy, padded_frame_indices
from .paths import CameraPath
from .scene import Scene, align_scene_to_path
from .splat import V1_SPLAT, V15_SPLAT, render_image_scene, render_video_scene
from .types import RenderFrames, RenderMask, VideoFrames

ALIGNMENT_POLICIES: tuple[str, ...] = get_args(FrameCountPolicy)
#: The splat normalisation of each release, by the name the node's widget shows.
SPLAT_SEMANTICS = {"v1.5": V15_SPLAT, "v1": V1_SPLAT}
FRAMES_PER_CALL = 4  # frames splatted together: bounds memory, does not change the result


class RenderConditionError(ValueError):
    """A render request that cannot be carried out; the message says which value to change."""


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

    def to(self, device: torch.device | str) -> RenderCondition:
        return replace(
            self,
            source_frames=self.source_frames.to(device),
            render=self.render.to(device),
            mask=self.mask.to(device),
        )


def render_condition(
    scene: Scene,
    path: CameraPath,
    alignment: str = "exact",
    semantics: str = "v1.5",
    device: torch.device | str | None = None,
) -> RenderCondition:
    """Splat ``scene`` into every camera of ``path``; the result stays on ``device`` (default:
    where the scene is), where the splat runs."""
    if semantics not in SPLAT_SEMANTICS:
        raise RenderConditionError(
            f"splat semantics {semantics!r} is unknown: use one of {', '.join(SPLAT_SEMANTICS)}"
        )
    config = SPLAT_SEMANTICS[semantics]
    scene, path = _on_device(scene, path, device or scene.frames.device)
    poses = path.world_to_camera
    fps = path.fps or scene.fps
    if scene.kind == "video":
        aligned = align_scene_to_path(scene, path.num_frames, alignment)
        result = render_video_scene(
            aligned, poses[: aligned.num_frames], path.intrinsics, config, FRAMES_PER_CALL
        )
        return RenderCondition(aligned.frames, result.frames, result.mask, fps)
    # Source views are chosen per chunk of whole blocks, so the path is padded like v1.5 pads the
    # video (holding the last pose) and the extra frames are cut again afterwards.
    valid = path.num_frames
    padded = padded_frame_indices(valid)
    result = render_image_scene(scene, poses[padded], path.intrinsics, config, FRAMES_PER_CALL)
    source_frames = scene.frames[result.source_view_of_frames().to(scene.frames.device)]
    return RenderCondition(
        source_frames[:valid], result.render.frames[:valid], result.render.mask[:valid], fps
    )


def _on_device(
    scene: Scene, path: CameraPath, device: torch.device | str
) -> tuple[Scene, CameraPath]:
    """The scene's tensors and the path's poses on ``device`` (the same tensors when already there)."""
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
