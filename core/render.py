"""The render condition of one run: a scene splatted along a camera path, frame by frame.

Data flow: ``core.scene.Scene`` + ``core.paths.CameraPath`` → **here** → :class:`RenderCondition`
(the splat render, its validity mask and the source video aligned with the path) → the world
sampler, which encodes the render and the source video as the DiT's conditions. Used by the Render
Condition node (``nodes/render.py``) and the demo.

The steps are the official ones, each done by its core module: a video scene's frames are paired
with path frames by a frame-count policy (``core/frame_counts.py``) and splatted with the soft
z-buffer of ``core/splat.py`` (v1.5 normalises the depth weights per frame, v1 over the whole
video); a 4-view image scene picks its source views per chunk of whole blocks with
``select_chunk_top3`` as v1.5's image pipeline does. The third semantics, "v1_ply", is v1's
alternative ``--render_backend ply`` (``scripts/render_point_cloud.py``): frame 0 of the video
becomes one coloured point cloud that ``core/point_render.py`` draws into every target camera with
a hard z-buffer.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import get_args

import torch
from einops import rearrange

from .frame_counts import FrameCountPolicy, padded_frame_indices
from .paths import CameraPath
from .point_render import render_points_v1
from .preview import scene_point_cloud
from .scene import Scene, align_scene_to_path
from .splat import V1_SPLAT, V15_SPLAT, frames_from_u8, render_image_scene, render_video_scene
from .types import RenderFrames, RenderMask, VideoFrames

ALIGNMENT_POLICIES: tuple[str, ...] = get_args(FrameCountPolicy)
#: The splat normalisation of each release, by the name the node's widget shows.
SPLAT_SEMANTICS = {"v1.5": V15_SPLAT, "v1": V1_SPLAT}
#: v1's point-cloud backend: frame 0 drawn as points with a hard z-buffer instead of the splat.
V1_PLY = "v1_ply"
#: Every render semantics, in the order the node's widget lists them (append, never reorder).
RENDER_SEMANTICS: tuple[str, ...] = (*SPLAT_SEMANTICS, V1_PLY)
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


def check_semantics(scene: Scene, semantics: str) -> None:
    """Raise :class:`RenderConditionError` unless ``semantics`` can render ``scene``."""
    if semantics not in RENDER_SEMANTICS:
        raise RenderConditionError(
            f"splat semantics {semantics!r} is unknown: use one of {', '.join(RENDER_SEMANTICS)}"
        )
    if semantics == V1_PLY and scene.kind != "video":
        raise RenderConditionError(
            f"splat semantics {V1_PLY!r} renders video scenes only (it is v1's point-cloud "
            "backend, which draws the video's frame 0): use 'v1.5' for an image scene"
        )


def render_condition(
    scene: Scene,
    path: CameraPath,
    alignment: str = "exact",
    semantics: str = "v1.5",
    device: torch.device | str | None = None,
) -> RenderCondition:
    """Render ``scene`` into every camera of ``path``; the result stays on ``device`` (default:
    where the scene is), where the render runs.

    ``semantics`` is one of :data:`RENDER_SEMANTICS`: a soft-splat normalisation ("v1.5", "v1")
    or "v1_ply", which takes video scenes only (the official ply backend is v1's, and v1 has no
    image scenes).
    """
    check_semantics(scene, semantics)
    scene, path = _on_device(scene, path, device or scene.frames.device)
    poses = path.world_to_camera
    fps = path.fps or scene.fps
    if semantics == V1_PLY:
        return _render_point_cloud(scene, path, alignment, fps)
    config = SPLAT_SEMANTICS[semantics]
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


def _render_point_cloud(
    scene: Scene, path: CameraPath, alignment: str, fps: float
) -> RenderCondition:
    """The v1 ply backend: frame 0's points drawn into every pose, the video aligned as for "v1"."""
    aligned = align_scene_to_path(scene, path.num_frames, alignment)
    height, width = scene.depth.shape[1:]
    # Every pixel of frame 0 with depth, in row-major order: the last point drawn wins a z-tie,
    # so the order is part of the result. Upstream clips missing depth to 1e-4 instead, which
    # puts those points at the source camera's centre, behind its 0.1 near plane.
    points, colours = scene_point_cloud(scene.select_frames([0]), max_points=height * width)
    device = scene.frames.device
    intrinsics = scene.intrinsics[0] if path.intrinsics is None else path.intrinsics
    # float32 points and colours, as upstream hands them to its renderer.
    rgb_u8, mask_u8 = render_points_v1(
        points.to(device, torch.float32),
        colours.to(device, torch.float32),
        path.world_to_camera[: aligned.num_frames],
        intrinsics,
        height,
        width,
    )
    # The bytes stay as upstream wrote them to render.mp4: a pixel whose 2x2 block was partly
    # covered keeps its area-averaged colour even where the (top-left, nearest) mask says 0;
    # pixels no point reached are 0 bytes, i.e. -1.
    mask = rearrange(mask_u8 > 0, "t h w -> t 1 h w").to(torch.float32)
    return RenderCondition(aligned.frames, frames_from_u8(rgb_u8), mask, fps)


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
