"""Rendering a scene into target cameras with the soft z-buffer: the explicit spatial constraint.

Place in the data flow: Scene + target poses -> :func:`render_video_scene` (source frame f into
target frame f) or :func:`render_image_scene` (every view into every frame, fused by nearest
depth, one source view chosen per latent group) -> render (holes -1) and {0, 1} mask -> the mask
latents (``core/mask_latents.py``) and the render codec. The per-pair projection and splat live
in ``core/soft_splat.py``; the hard z-buffer point renderers in ``core/point_render.py``.

Follows v1.5 ``pipeline/render_scene.py`` (``project_source``, the multi-image fusion,
``select_chunk_top3``), v1 ``scripts/render_point_cloud.py`` for the video scene, and the
official mp4 writers for the render's byte form.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated

import torch
from einops import rearrange, repeat
from torch import Tensor

from .frame_counts import FRAMES_PER_BLOCK, latent_frame_groups
from .mask_latents import pack_mask_latents
from .point_render import render_points_hard
from .scene import Scene
from .soft_splat import (
    V1_SPLAT,
    V15_SPLAT,
    PairDepth,
    SoftSplatConfig,
    SplatInputError,
    log_depth_peak,
    project_pixels,
    splat_soft,
)
from .types import (
    DepthMaps,
    Intrinsics,
    RenderFrames,
    RenderMask,
    VideoFrames,
    WorldToCamera,
)

# V1_SPLAT, V15_SPLAT, pack_mask_latents and render_points_hard are re-exported: nodes/ imports
# the scene renderer's configs, the mask packing and the WorldFM renderer from here.
__all__ = [
    "BYTE_MAX",
    "BYTE_SCALE",
    "HOLE",
    "V1_SPLAT",
    "V15_SPLAT",
    "ImageSceneRender",
    "SplatInputError",
    "SplatRender",
    "frames_from_u8",
    "fuse_nearest_view",
    "mask_u8",
    "pack_mask_latents",
    "render_image_scene",
    "render_points_hard",
    "render_u8",
    "render_video_scene",
    "select_chunk_top3",
]

ViewDistance = Annotated[Tensor, "F V H W float, splatted target depth of each view (0 unknown)"]
ViewKnown = Annotated[Tensor, "F V H W bool"]
ViewFrames = Annotated[Tensor, "F V 3 H W float in [-1, 1], each view's splat into each frame"]
OverlapPixels = Annotated[Tensor, "G V int64, known pixels of each view summed over a latent group"]
Bytes = Annotated[Tensor, "F H W 3 uint8"]
# (depth, source K, source Tcw, target Tcw, target K) of N pairs: project_pixels' arguments.
CameraPair = tuple[PairDepth, Intrinsics, WorldToCamera, WorldToCamera, Intrinsics]

HOLE = -1.0  # RGB of render pixels nothing landed on
BYTE_SCALE = 127.5  # [-1, 1] -> [0, 255] as the official mp4 writers quantise
BYTE_MAX = 255


@dataclass(frozen=True)
class SplatRender:
    """Render of a scene along target cameras.

    frames:   [F, 3, H, W] in [-1, 1], holes -1
    mask:     [F, 1, H, W] {0, 1}, exactly Σw > 0
    distance: [F, H, W] splatted target depth (weighted mean z, 0 where unknown)
    """

    frames: RenderFrames
    mask: RenderMask
    distance: DepthMaps


@dataclass(frozen=True)
class ImageSceneRender:
    """Render of a 1- or 4-image scene: every view splatted into every frame, fused by depth.

    render:          the fused frames (each pixel from the nearest known view)
    view_distance:   [F, V, H, W] per-view splatted depth (0 where unknown)
    view_known:      [F, V, H, W] per-view known mask
    overlap_pixels:  [G, V] per latent group, Σ over its frames of each view's known pixels
    source_indices:  [G] the view used as the source video in each latent group
    chunk_views:     [G/3, 3] the three views kept per chunk (empty for a single view)
    group_sizes:     [G] output frames in each latent group
    """

    render: SplatRender
    view_distance: ViewDistance
    view_known: ViewKnown
    overlap_pixels: OverlapPixels
    source_indices: Tensor
    chunk_views: Tensor
    group_sizes: Tensor

    def source_view_of_frames(self) -> Tensor:
        """[F] int64: the view whose image is the source frame of each output frame."""
        return torch.repeat_interleave(self.source_indices.cpu(), self.group_sizes)


def _check_targets(target_world_to_camera: WorldToCamera) -> None:
    if target_world_to_camera.ndim != 3 or target_world_to_camera.shape[-2:] != (4, 4):
        raise SplatInputError(
            f"target_world_to_camera has shape {tuple(target_world_to_camera.shape)}: "
            "expected [T, 4, 4] world-to-camera poses, one per output frame"
        )
    if not torch.isfinite(target_world_to_camera).all():
        raise SplatInputError("target_world_to_camera holds NaN or inf: check the camera path")


def _render_pairs(
    frames: VideoFrames,
    depth: PairDepth,
    source_intrinsics: Intrinsics,
    source_world_to_camera: WorldToCamera,
    target_world_to_camera: WorldToCamera,
    target_intrinsics: Intrinsics,
    config: SoftSplatConfig,
    peak: Tensor | None = None,
) -> SplatRender:
    """Splat RGB and z of each source frame into its own target camera (``project_source``)."""
    projection = project_pixels(
        depth, source_intrinsics, source_world_to_camera, target_world_to_camera, target_intrinsics
    )
    values = torch.cat([frames.to(torch.float32), projection.z[:, None]], dim=1)
    splat = splat_soft(values, projection, config, peak)
    rgb = splat.values[:, :3].clamp(-1, 1)
    return SplatRender(
        frames=torch.where(splat.known[:, None], rgb, HOLE),
        mask=splat.known[:, None].to(torch.float32),
        distance=splat.values[:, 3],
    )


def _batch_peak(config: SoftSplatConfig, pairs: Iterable[CameraPair]) -> Tensor | None:
    """v1's whole-video depth normalisation peak over every pair, so that the video can be
    splatted in pieces; None in the per-frame scope, where each pair is normalised on its own."""
    if config.depth_weight_scope == "frame":
        return None
    return torch.stack([log_depth_peak(project_pixels(*pair).z, config) for pair in pairs]).max()


def render_video_scene(
    scene: Scene,
    target_world_to_camera: WorldToCamera,
    target_intrinsics: Intrinsics | None = None,
    config: SoftSplatConfig = V15_SPLAT,
    frames_per_call: int = 4,
) -> SplatRender:
    """Target frame f rendered from source frame f with its own depth, K and pose.

    ``target_intrinsics`` ([3, 3] or one per frame) defaults to the scene's frame-0 K (the
    official target K). Frames are splatted ``frames_per_call`` at a time to bound memory; the
    depth normalisation is computed over the right scope first, so the result does not depend
    on it beyond float32 rounding.
    """
    _check_targets(target_world_to_camera)
    num_frames = target_world_to_camera.shape[0]
    if num_frames != scene.frames.shape[0]:
        raise SplatInputError(
            f"{num_frames} target poses for a video of {scene.frames.shape[0]} frames: align them "
            "first (core.frame_counts.align_frame_counts) so that target frame f renders source frame f"
        )
    target_k = _target_intrinsics(scene, target_intrinsics, num_frames)
    pairs: CameraPair = (
        scene.depth,
        scene.intrinsics,
        scene.world_to_camera,
        target_world_to_camera,
        target_k,
    )
    peak = _batch_peak(
        config, (tuple(part[index : index + 1] for part in pairs) for index in range(num_frames))
    )
    pieces = [
        _render_pairs(scene.frames[start:stop], *(part[start:stop] for part in pairs), config, peak)
        for start, stop in _spans(num_frames, frames_per_call)
    ]
    return SplatRender(
        frames=torch.cat([piece.frames for piece in pieces]),
        mask=torch.cat([piece.mask for piece in pieces]),
        distance=torch.cat([piece.distance for piece in pieces]),
    )


def _target_intrinsics(
    scene: Scene, target_intrinsics: Intrinsics | None, num_frames: int
) -> Intrinsics:
    """[T, 3, 3] target K: the given [3, 3] or [T, 3, 3], else the scene's first K (upstream's)."""
    target_k = scene.intrinsics[0] if target_intrinsics is None else target_intrinsics
    if target_k.shape not in ((3, 3), (num_frames, 3, 3)):
        raise SplatInputError(
            f"target_intrinsics has shape {tuple(target_k.shape)}: expected [3, 3] or [{num_frames}, 3, 3]"
        )
    return target_k.expand(num_frames, 3, 3)


def _spans(count: int, size: int) -> list[tuple[int, int]]:
    if size < 1:
        raise SplatInputError(f"frames_per_call={size}: must be at least 1")
    return [(start, min(start + size, count)) for start in range(0, count, size)]


def fuse_nearest_view(
    rgb: ViewFrames, distance: ViewDistance, known: ViewKnown
) -> tuple[SplatRender, Annotated[Tensor, "F H W int64"]]:
    """Per pixel, the known view with the smallest splatted depth; the earlier view on exact ties.

    Upstream folds the views in order with a strict ``<``, which is the
    first-index argmin over ``where(known, distance, inf)``. Returns the fused render and the
    winning view per pixel [F, H, W] (meaningless where the mask is 0).
    """
    nearest = torch.where(known, distance, torch.inf)
    winner = nearest.argmin(dim=1)  # argmin returns the first minimal index
    fused_rgb = torch.gather(rgb, 1, repeat(winner, "f h w -> f 1 c h w", c=rgb.shape[2]))[:, 0]
    fused_distance = torch.gather(distance, 1, winner[:, None])[:, 0]
    mask = known.any(dim=1)
    render = SplatRender(
        frames=torch.where(mask[:, None], fused_rgb, HOLE),
        mask=mask[:, None].to(torch.float32),
        distance=torch.where(mask, fused_distance, 0.0),
    )
    return render, winner


def select_chunk_top3(overlap_pixels: OverlapPixels) -> tuple[Tensor, Tensor]:
    """The official per-chunk choice of source views for a multi-view scene.

    For each chunk of 3 latent groups: keep the 3 views with the largest total overlap (ties to
    the lower index), then assign them to the groups by the permutation with the largest summed
    overlap (ties to the lexicographically smallest view tuple). Returns (source_indices [G],
    chunk_views [G/3, 3]).
    """
    groups, views = overlap_pixels.shape
    if groups % FRAMES_PER_BLOCK or views < FRAMES_PER_BLOCK:
        raise SplatInputError(
            f"overlap_pixels has {groups} latent groups and {views} views: source-view selection "
            f"needs whole chunks of {FRAMES_PER_BLOCK} groups and at least {FRAMES_PER_BLOCK} views "
            "(pad the frame count with core.frame_counts.padded_frame_count)"
        )
    scores = overlap_pixels.tolist()
    choices, chunk_views = [], []
    for start in range(0, groups, FRAMES_PER_BLOCK):
        chunk = scores[start : start + FRAMES_PER_BLOCK]
        totals = [sum(row[view] for row in chunk) for view in range(views)]
        top = sorted(range(views), key=lambda view: (-totals[view], view))[:FRAMES_PER_BLOCK]
        assignment = min(
            itertools.permutations(top),
            key=lambda order: (-sum(chunk[group][view] for group, view in enumerate(order)), order),
        )
        choices.extend(assignment)
        chunk_views.append(top)
    return torch.tensor(choices, dtype=torch.int64), torch.tensor(chunk_views, dtype=torch.int64)


def render_image_scene(
    scene: Scene,
    target_world_to_camera: WorldToCamera,
    target_intrinsics: Intrinsics | None = None,
    config: SoftSplatConfig = V15_SPLAT,
    frames_per_call: int = 4,
    first_frame: int = 0,
) -> ImageSceneRender:
    """Every view splatted into every target frame, fused by nearest depth (v1.5 image scenes).

    Each (view, frame) pair is normalised on its own in the default "frame" scope. With more
    than one view the source view of each latent group is chosen by :func:`select_chunk_top3`.
    ``first_frame`` is the output index of the first target, so that a streamed block (say
    frames 9..20) is grouped into latent frames as the whole video is; it must start a group.
    """
    _check_targets(target_world_to_camera)
    num_frames, num_views = target_world_to_camera.shape[0], scene.frames.shape[0]
    target_k = _target_intrinsics(scene, target_intrinsics, num_frames)
    views = (scene.depth, scene.intrinsics, scene.world_to_camera)
    peak = _batch_peak(
        config, ((*views, pose, k) for pose, k in zip(target_world_to_camera, target_k))
    )
    rgb, distance, known = [], [], []
    for start, stop in _spans(num_frames, frames_per_call):
        count = stop - start
        piece = _render_pairs(
            repeat(scene.frames, "v c h w -> (f v) c h w", f=count),
            repeat(scene.depth, "v h w -> (f v) h w", f=count),
            repeat(scene.intrinsics, "v i j -> (f v) i j", f=count),
            repeat(scene.world_to_camera, "v i j -> (f v) i j", f=count),
            repeat(target_world_to_camera[start:stop], "f i j -> (f v) i j", v=num_views),
            repeat(target_k[start:stop], "f i j -> (f v) i j", v=num_views),
            config,
            peak,
        )
        rgb.append(rearrange(piece.frames, "(f v) c h w -> f v c h w", v=num_views))
        distance.append(rearrange(piece.distance, "(f v) h w -> f v h w", v=num_views))
        known.append(rearrange(piece.mask[:, 0] > 0, "(f v) h w -> f v h w", v=num_views))
    view_distance, view_known = torch.cat(distance), torch.cat(known)
    render, _ = fuse_nearest_view(torch.cat(rgb), view_distance, view_known)

    known_per_frame = view_known.sum(dim=(2, 3))
    groups = _groups_from(first_frame, num_frames)
    overlap = torch.stack([known_per_frame[list(group)].sum(dim=0) for group in groups])
    if num_views == 1:
        source_indices = torch.zeros(overlap.shape[0], dtype=torch.int64)
        chunk_views = torch.zeros((0, FRAMES_PER_BLOCK), dtype=torch.int64)
    else:
        source_indices, chunk_views = select_chunk_top3(overlap)
    group_sizes = torch.tensor([len(group) for group in groups])
    return ImageSceneRender(
        render, view_distance, view_known, overlap.cpu(), source_indices, chunk_views, group_sizes
    )


def _groups_from(first_frame: int, num_frames: int) -> list[range]:
    """Latent frame groups of output frames first_frame.. first_frame+num_frames-1, 0-based."""
    groups = latent_frame_groups(first_frame + num_frames)
    if first_frame not in [group.start for group in groups]:
        raise SplatInputError(
            f"first_frame={first_frame} does not start a latent frame group (0, 1, 5, 9, ...): "
            "render image scenes in whole latent frames"
        )
    return [
        range(g.start - first_frame, g.stop - first_frame) for g in groups if g.start >= first_frame
    ]


def render_u8(frames: RenderFrames) -> Bytes:
    """[F, H, W, 3] bytes the official writer sends to render.mp4: ``(x+1)·127.5`` clipped, truncated."""
    scaled = ((frames.to(torch.float32) + 1) * BYTE_SCALE).clamp(0, BYTE_MAX)
    return rearrange(scaled.to(torch.uint8), "f c h w -> f h w c")


def mask_u8(mask: RenderMask) -> Bytes:
    """[F, H, W, 3] bytes of mask.mp4: 255 where known, in all three channels."""
    return repeat((mask[:, 0] > 0).to(torch.uint8) * BYTE_MAX, "f h w -> f h w c", c=3)


def frames_from_u8(images: Bytes) -> VideoFrames:
    """[F, H, W, 3] uint8 -> [F, 3, H, W] float32 in [-1, 1] as upstream (``u8/127.5 - 1``)."""
    return rearrange(images.to(torch.float32) / BYTE_SCALE - 1, "f h w c -> f c h w")
