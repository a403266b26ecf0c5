"""Rendering source pixels into target cameras: the explicit spatial constraint.

Two renderers live here:

- forward splatting with the official soft z-buffer (InSpatio-World v1 / v1.5 ``DepthWarper``);
- the hard z-buffer point renderer of InSpatio-WorldFM (``modules/point_renderer.py``).
"""

from __future__ import annotations

# --- soft z-buffer forward splatting (InSpatio-World) --------------------------------------
# Follows v1.5 ``pipeline/depth_warper.py`` (``bilinear_splatting``) and ``pipeline/render_scene.py``
# (``project_source``, the multi-image fusion, ``select_chunk_top3``), with v1's whole-batch depth
# normalisation (``scripts/render_point_cloud.py``) as a config value; mask packing follows v1
# ``utils/render_warper.py convert_mask_video`` and v1.5 ``datasets/utils.py iter_mask_latents``.
# Data flow: Scene + target poses -> render_video_scene / render_image_scene -> render (holes -1)
# and {0, 1} mask -> pack_mask_latents (the DiT's 4 mask channels) and the render codec.
# Projection, splat, fusion, mask packing and v1's point backend share one set of conventions
# (integer pixel centres, the +1 canvas border, hole values and byte quantisation), which is why
# they sit in one section (~640 lines); splitting mask packing and the v1 point backend into
# their own modules is the natural next step.
import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from einops import rearrange, reduce, repeat
from torch import Tensor

from .scene import FRAMES_PER_BLOCK, FRAMES_PER_LATENT, Scene, latent_frame_groups
from .types import (
    DepthMaps,
    Intrinsics,
    MaskLatents,
    RenderFrames,
    RenderMask,
    VideoFrames,
    WorldToCamera,
)

PairDepth = Annotated[Tensor, "N H W float, one (source, target) pair per row"]
PairCoords = Annotated[Tensor, "N 2 H W float, target pixel (x, y) of each source pixel"]
PairValues = Annotated[Tensor, "N C H W float"]
PairMask = Annotated[Tensor, "N H W bool"]
ViewDistance = Annotated[Tensor, "F V H W float, splatted target depth of each view (0 unknown)"]
ViewKnown = Annotated[Tensor, "F V H W bool"]
ViewFrames = Annotated[Tensor, "F V 3 H W float in [-1, 1], each view's splat into each frame"]
OverlapPixels = Annotated[Tensor, "G V int64, known pixels of each view summed over a latent group"]
Bytes = Annotated[Tensor, "F H W 3 uint8"]

CANVAS_BORDER = (
    1  # points are splatted at +1 on an (H+2)x(W+2) canvas; off-image ones hit the border
)
DEPTH_WEIGHT_SHARPNESS = (
    50.0  # weight 1/exp(50·log(1+z)/max log(1+z)): near points win by up to e^50
)
DEPTH_SATURATION = 1000.0  # z is clamped to [0, 1000] before the log
LOG_DEPTH_PEAK_FLOOR = (
    1e-6  # keeps the normalisation finite when no pixel is in front of the camera
)
PROJECTION_DEPTH_FLOOR = 1e-6  # v1.5 divides by z.clamp_min(1e-6)
HOLE = -1.0  # RGB of render pixels nothing landed on
BYTE_SCALE = 127.5  # [-1, 1] -> [0, 255] as the official mp4 writers quantise
BYTE_MAX = 255
MASK_THRESHOLD = 127.5  # v1.5 reads the mask video back as `u8 > 127.5`
LATENT_STRIDE = 8  # Wan2.1 VAE spatial stride: mask latents are H/8 x W/8

DepthWeightScope = Literal["frame", "batch"]


class SplatInputError(ValueError):
    """Inputs of the splat renderer with the wrong shape or kind."""


@dataclass(frozen=True)
class SoftSplatConfig:
    """The soft z-buffer's constants.

    depth_weight_scope: over which pixels ``max log(1+z)`` is taken. "frame" (v1.5, default): each
        (source view, target frame) pair on its own; "batch" (v1): all pairs of the video at once.
    sharpness:          exponent scale of the depth weight (official 50).
    depth_saturation:   z is clamped to [0, this] before the log (official 1000).
    """

    depth_weight_scope: DepthWeightScope = "frame"
    sharpness: float = DEPTH_WEIGHT_SHARPNESS
    depth_saturation: float = DEPTH_SATURATION

    def __post_init__(self) -> None:
        if self.depth_weight_scope not in ("frame", "batch"):
            raise SplatInputError(
                f"depth_weight_scope={self.depth_weight_scope!r}: use 'frame' (v1.5) or 'batch' (v1)"
            )
        if not (self.sharpness > 0 and self.depth_saturation > 0):
            raise SplatInputError("sharpness and depth_saturation must be positive")


V15_SPLAT = SoftSplatConfig()
V1_SPLAT = SoftSplatConfig(depth_weight_scope="batch")


@dataclass(frozen=True)
class PixelProjection:
    """Where each source pixel lands in its target camera.

    coords: [N, 2, H, W] target pixel (x, y), integer pixel centres (no +0.5)
    z:      [N, H, W] depth in the target camera
    valid:  [N, H, W] source depth > 0 and z > 0
    """

    coords: PairCoords
    z: PairDepth
    valid: PairMask


@dataclass(frozen=True)
class SplatResult:
    """Soft z-buffer output: the weighted mean of each channel, 0 where nothing landed."""

    values: PairValues
    known: PairMask


def pixel_grid(height: int, width: int, device: torch.device | str | None = None) -> Tensor:
    """[2, H, W] float32 (x, y) of every pixel centre, in integer pixel units."""
    rows, cols = torch.meshgrid(
        torch.arange(height, device=device, dtype=torch.float32),
        torch.arange(width, device=device, dtype=torch.float32),
        indexing="ij",
    )
    return torch.stack([cols, rows])


def project_pixels(
    depth: PairDepth,
    source_intrinsics: Intrinsics,
    source_world_to_camera: WorldToCamera,
    target_world_to_camera: WorldToCamera,
    target_intrinsics: Intrinsics,
) -> PixelProjection:
    """Unproject every source pixel with its depth and project it into the target camera.

    Cameras are [N, 3, 3] / [N, 4, 4] (or [3, 3] / [4, 4], shared by every pair). Everything is
    float32, as upstream: ``P = inv(K_s)[x, y, 1]·d``, ``p = K_t·(Tcw_t·inv(Tcw_s)·[P, 1])[:3]``.
    """
    n, height, width = depth.shape
    cameras = [source_intrinsics, source_world_to_camera, target_world_to_camera, target_intrinsics]
    k_source, tcw_source, tcw_target, k_target = (
        camera.to(device=depth.device, dtype=torch.float32).expand(n, *camera.shape[-2:])
        for camera in cameras
    )
    depth = depth.to(torch.float32)
    grid = pixel_grid(height, width, depth.device)
    homogeneous_pixels = torch.cat([grid, torch.ones_like(grid[:1])])
    rays = torch.einsum("nij,jhw->nihw", torch.linalg.inv(k_source), homogeneous_pixels)
    source_points = rays * depth[:, None]
    source_to_target = torch.bmm(tcw_target, torch.linalg.inv(tcw_source))
    camera_points = (
        torch.einsum("nij,njhw->nihw", source_to_target[:, :3, :3], source_points)
        + source_to_target[:, :3, 3, None, None]
    )
    image_points = torch.einsum("nij,njhw->nihw", k_target, camera_points)
    z = image_points[:, 2]
    coords = image_points[:, :2] / z.clamp_min(PROJECTION_DEPTH_FLOOR)[:, None]
    # v1 keeps z >= 0 and divides by z unclamped: its z == 0 points get inf/NaN coordinates
    # that land on the cropped border, so dropping them here gives the same render.
    valid = (depth > 0) & (z > 0)
    return PixelProjection(coords=coords, z=z, valid=valid)


def log_depth_peak(z: PairDepth, config: SoftSplatConfig) -> Tensor:
    """``max log(1 + clamp(z, 0, sat))`` over the config's scope: [N, 1, 1] or a 0-dim tensor.

    Upstream takes it over every pixel of the call, invalid ones included.
    """
    log_depth = torch.log(1 + z.clamp(0, config.depth_saturation))
    if config.depth_weight_scope == "frame":
        return log_depth.amax(dim=(-2, -1), keepdim=True)
    return log_depth.max()


def splat_soft(
    values: PairValues,
    projection: PixelProjection,
    config: SoftSplatConfig = V15_SPLAT,
    peak: Tensor | None = None,
) -> SplatResult:
    """Bilinear forward splatting with the official soft z-buffer (``bilinear_splatting``).

    ``peak`` overrides :func:`log_depth_peak` when a batch-scoped video is rendered in pieces.
    """
    n, channels, height, width = values.shape
    canvas_height, canvas_width = height + 2 * CANVAS_BORDER, width + 2 * CANVAS_BORDER
    grid = pixel_grid(height, width, values.device)
    # Upstream splats `flow + grid` with `flow = coords - grid`; the round trip moves a coordinate
    # by up to one ulp, which decides pixels whose coordinate sits on an integer.
    position = (projection.coords - grid) + grid + CANVAS_BORDER
    upper = torch.tensor([canvas_width - 1, canvas_height - 1], device=values.device)
    # Clamping before floor/ceil equals upstream's clamping after (the bounds are integers) and
    # keeps far-away points finite.
    position = torch.minimum(position.clamp_min(0), upper[:, None, None].to(position))
    low, high = position.floor(), position.ceil()
    # Bilinear factors of the low and high neighbour along each axis, as upstream writes them:
    # 1 - (o - floor(o)) and 1 - (ceil(o) - o). At an integral coordinate floor == ceil and both
    # neighbours take full weight.
    (x_to_low, y_to_low), (x_to_high, y_to_high) = (
        (1 - (position - low)).unbind(1),
        (1 - (high - position)).unbind(1),
    )
    # Corner order NW, SW, NE, SE as upstream, so each pixel sums its terms in the same order.
    corner_weights = torch.stack(
        [
            y_to_low * x_to_low,
            y_to_high * x_to_low,
            y_to_low * x_to_high,
            y_to_high * x_to_high,
        ]
    )
    (x_low, y_low), (x_high, y_high) = low.long().unbind(1), high.long().unbind(1)
    corner_rows = torch.stack([y_low, y_high, y_low, y_high])
    corner_cols = torch.stack([x_low, x_low, x_high, x_high])

    z = projection.z.to(torch.float32)
    if peak is None:
        peak = log_depth_peak(z, config)
    log_depth = torch.log(1 + z.clamp(0, config.depth_saturation))
    depth_weight = torch.exp(log_depth / peak.clamp_min(LOG_DEPTH_PEAK_FLOOR) * config.sharpness)
    # Upstream multiplies by the 0/1 validity before dividing: the same numbers as this select.
    weights = torch.where(projection.valid, corner_weights / depth_weight, 0.0)

    pair_offset = torch.arange(n, device=values.device)[:, None, None] * (
        canvas_height * canvas_width
    )
    targets = (pair_offset + corner_rows * canvas_width + corner_cols).flatten()
    canvas = values.new_zeros((channels + 1, n * canvas_height * canvas_width), dtype=torch.float32)
    # Contributions are corner-major (k n h w), so every canvas cell sums its terms in upstream's
    # order. The sum must not depend on scheduling: two views with bit-identical inputs must get
    # bit-identical sums, or the strict `<` of the view fusion could pick the later one. CPU
    # index_add_ on a 1-D tensor adds serially in index order; CUDA index_put_(accumulate=True)
    # sorts the targets stably and sums each in order. (CUDA index_add_ and CPU index_put_ use
    # unordered atomics.) Hence one 1-D plane per channel, the weights last.
    for channel, plane in enumerate(canvas):
        contribution = (
            weights if channel == channels else values[:, channel].to(torch.float32) * weights
        )
        if plane.is_cuda:
            plane.index_put_((targets,), contribution.flatten(), accumulate=True)
        else:
            plane.index_add_(0, targets, contribution.flatten())
    canvas = rearrange(canvas, "c (n h w) -> n c h w", n=n, h=canvas_height, w=canvas_width)
    canvas = canvas[:, :, CANVAS_BORDER:-CANVAS_BORDER, CANVAS_BORDER:-CANVAS_BORDER]
    weight_sum = canvas[:, channels]
    known = weight_sum > 0
    mean = torch.where(known[:, None], canvas[:, :channels] / weight_sum[:, None], 0.0)
    return SplatResult(values=mean, known=known)


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


def _batch_peak(
    scene: Scene,
    target_world_to_camera: WorldToCamera,
    target_intrinsics: Intrinsics,
    config: SoftSplatConfig,
) -> Tensor | None:
    """v1's whole-video depth normalisation peak, so that the video can be splatted in pieces."""
    if config.depth_weight_scope == "frame":
        return None
    peaks = [
        log_depth_peak(
            project_pixels(
                scene.depth[index : index + 1],
                scene.intrinsics[index],
                scene.world_to_camera[index],
                target_world_to_camera[index],
                target_intrinsics[index],
            ).z,
            config,
        )
        for index in range(target_world_to_camera.shape[0])
    ]
    return torch.stack(peaks).max()


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
            "first (core.scene.align_frame_counts) so that target frame f renders source frame f"
        )
    target_k = _target_intrinsics(scene, target_intrinsics, num_frames)
    peak = _batch_peak(scene, target_world_to_camera, target_k, config)
    pieces = [
        _render_pairs(
            scene.frames[start:stop],
            scene.depth[start:stop],
            scene.intrinsics[start:stop],
            scene.world_to_camera[start:stop],
            target_world_to_camera[start:stop],
            target_k[start:stop],
            config,
            peak,
        )
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
            "(pad the frame count with core.scene.padded_frame_count)"
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
    peak = None
    if config.depth_weight_scope == "batch":
        peak = torch.stack(
            [
                log_depth_peak(
                    project_pixels(scene.depth, scene.intrinsics, scene.world_to_camera, pose, k).z,
                    config,
                )
                for pose, k in zip(target_world_to_camera, target_k)
            ]
        ).max()
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


def _downsample_mask(signed_mask: Tensor) -> Tensor:
    """[T, H, W] ±1 -> [T, H/8, W/8]: bilinear, ``align_corners=False`` (pixels 8i+3, 8i+4)."""
    height, width = signed_mask.shape[-2:]
    if height % LATENT_STRIDE or width % LATENT_STRIDE:
        raise SplatInputError(
            f"mask frames are {height}x{width}: height and width must be multiples of {LATENT_STRIDE}"
        )
    size = (height // LATENT_STRIDE, width // LATENT_STRIDE)
    return F.interpolate(signed_mask[:, None], size=size, mode="bilinear", align_corners=False)[
        :, 0
    ]


def pack_mask_latents(signed_mask: Annotated[Tensor, "F H W in [-1, 1]"]) -> MaskLatents:
    """The DiT's 4 mask channels per latent frame (``convert_mask_video``): [1, G, 4, H/8, W/8].

    Latent j, channel k is pixel frame ``max(4j + k - 3, 0)``: frame 0 is repeated to fill the
    first latent, and frames after the last whole group of 4 are dropped.
    """
    small = _downsample_mask(signed_mask.to(torch.float32))
    lead = repeat(small[:1], "1 h w -> k h w", k=FRAMES_PER_LATENT - 1)
    padded = torch.cat([lead, small])
    usable = padded.shape[0] // FRAMES_PER_LATENT * FRAMES_PER_LATENT
    return rearrange(padded[:usable], "(g k) h w -> 1 g k h w", k=FRAMES_PER_LATENT)


def iter_mask_latents(
    mask_chunks: Iterable[Annotated[Tensor, "T 3 H W uint8"]],
) -> Iterator[MaskLatents]:
    """Streamed mask latents (v1.5 ``iter_mask_latents``), one [1, 1, 4, h, w] per video chunk.

    Chunks are the mask video's bytes in 1, 4, 4, ... frames (``core.scene.iter_video_chunks``);
    channel 0 is thresholded at 127.5. The concatenation equals :func:`pack_mask_latents`.
    """
    for index, chunk in enumerate(mask_chunks):
        expected = 1 if index == 0 else FRAMES_PER_LATENT
        if chunk.ndim != 4 or chunk.shape[0] != expected:
            raise SplatInputError(
                f"mask chunk {index} has shape {tuple(chunk.shape)}: expected [{expected}, 3, H, W] "
                "(chunks of 1, then 4 frames, as core.scene.iter_video_chunks yields)"
            )
        signed = (chunk[:, 0] > MASK_THRESHOLD).to(torch.float32) * 2 - 1
        small = _downsample_mask(signed)
        yield repeat(small, "t h w -> 1 1 (t k) h w", k=FRAMES_PER_LATENT // chunk.shape[0])


# v1's alternative "ply" backend (``render_batch`` in v1 ``scripts/render_point_cloud.py``): one
# point cloud drawn as small squares at 2x resolution with a hard z-buffer, then downsampled.
PLY_SUPERSAMPLING = 2  # the official ss_ratio; the 2x2 area average below assumes it
PLY_POINT_SIZE = 2  # official --point_size; at 2x it becomes an odd square (4 -> 5 px)
PLY_NEAR_PLANE = 0.1  # points with z <= 0.1 are dropped
PLY_DEPTH_EPSILON = 1e-4  # points within this of the nearest z at a pixel all count as visible


def render_points_v1(
    points: Annotated[Tensor, "P 3 world points"],
    colours: Annotated[Tensor, "P 3 float in [0, 1]"],
    world_to_camera: WorldToCamera,
    intrinsics: Intrinsics,
    height: int,
    width: int,
    point_size: int = PLY_POINT_SIZE,
) -> tuple[Bytes, Annotated[Tensor, "T H W uint8 {0, 255}"]]:
    """RGB and mask bytes of a point cloud seen from each of T poses (the v1 "ply" backend).

    Per pose: points with z > 0.1 are projected with fx, cx, fy, cy of the 2x-scaled K, each
    drawn as a ``point_size·2`` (made odd) square of rounded pixels; at every pixel the points
    within 1e-4 of the nearest z are visible and, among them, the last point in input order
    wins (what a serial scatter gives; upstream's parallel CPU scatter leaves it to chance).
    Colours are truncated to bytes, area-averaged 2x2 (rounding half up, as OpenCV INTER_AREA)
    and the mask takes the top-left pixel of each 2x2 block (INTER_NEAREST).
    """
    if points.ndim != 2 or points.shape[1] != 3 or colours.shape != points.shape:
        raise SplatInputError(
            f"points {tuple(points.shape)} and colours {tuple(colours.shape)}: expected [P, 3] each"
        )
    high_height, high_width = height * PLY_SUPERSAMPLING, width * PLY_SUPERSAMPLING
    high_k = intrinsics.to(torch.float32).clone()
    high_k[:2] *= PLY_SUPERSAMPLING
    square = point_size * PLY_SUPERSAMPLING + (1 - point_size * PLY_SUPERSAMPLING % 2)
    offsets = torch.arange(square, device=points.device) - square // 2
    row_offsets, col_offsets = (
        grid.flatten() for grid in torch.meshgrid(offsets, offsets, indexing="ij")
    )
    homogeneous = torch.cat([points.to(torch.float32), torch.ones_like(points[:, :1])], dim=1)
    rgb_frames, mask_frames = [], []
    for pose in world_to_camera.to(torch.float32):
        camera = (homogeneous @ pose.T)[:, :3]
        in_front = camera[:, 2] > PLY_NEAR_PLANE
        camera, colour = camera[in_front], colours[in_front].to(torch.float32)
        z = camera[:, 2]
        cols = high_k[0, 0] * camera[:, 0] / z + high_k[0, 2]
        rows = high_k[1, 1] * camera[:, 1] / z + high_k[1, 2]
        cols = torch.round(cols[:, None] + col_offsets).long().flatten()
        rows = torch.round(rows[:, None] + row_offsets).long().flatten()
        z = repeat(z, "p -> (p s)", s=offsets.numel() ** 2)
        colour = repeat(colour, "p c -> (p s) c", s=offsets.numel() ** 2)
        inside = (cols >= 0) & (cols < high_width) & (rows >= 0) & (rows < high_height)
        pixel = (rows * high_width + cols)[inside]
        z, colour = z[inside], colour[inside]
        nearest = torch.full((high_height * high_width,), torch.inf, device=points.device)
        nearest.scatter_reduce_(0, pixel, z, reduce="amin")
        visible = z <= nearest[pixel] + PLY_DEPTH_EPSILON
        order = torch.arange(pixel.numel(), device=points.device)
        last = torch.full_like(nearest, -1, dtype=torch.long)
        last.scatter_reduce_(0, pixel[visible], order[visible], reduce="amax")
        drawn = visible & (last[pixel] == order)
        canvas = torch.zeros(high_height * high_width, 3, device=points.device)
        canvas[pixel[drawn]] = colour[drawn]
        mask = torch.zeros(high_height * high_width, dtype=torch.uint8, device=points.device)
        mask[pixel[drawn]] = BYTE_MAX
        high_bytes = (canvas * BYTE_MAX).to(torch.uint8).to(torch.int32)
        block_sums = reduce(
            high_bytes,
            "(h a w b) c -> h w c",
            "sum",
            a=PLY_SUPERSAMPLING,
            b=PLY_SUPERSAMPLING,
            w=width,
        )
        area = PLY_SUPERSAMPLING**2
        rgb_frames.append(((block_sums + area // 2) // area).to(torch.uint8))
        mask_frames.append(
            rearrange(mask, "(h w) -> h w", w=high_width)[::PLY_SUPERSAMPLING, ::PLY_SUPERSAMPLING]
        )
    return torch.stack(rgb_frames), torch.stack(mask_frames)


# --- hard z-buffer point renderer (InSpatio-WorldFM) ---------------------------------------
# Follows ``modules/point_renderer.py`` (``TorchPointCloudRenderer``, mode "fast") of
# inspatio/worldfm bit for bit on the CPU: a float16 point cache, a float16 camera transform, a
# float32 projection, a per-pixel minimum-z buffer and "last point in order wins" among the
# points tied at that minimum. It uses the module's imports above (torch, einops, dataclass,
# Annotated, Tensor, Intrinsics, WorldToCamera); Points is the only name it adds.

from .types import Points

PointColoursU8 = Annotated[Tensor, "P 3 uint8 RGB"]
RenderedImageU8 = Annotated[Tensor, "T H W 3 uint8 RGB, black where no point landed"]
RenderedDepth = Annotated[Tensor, "T H W float32 z-depth (float16 values), 0 where empty"]

NEAR_PLANE = 1e-3  # points at z <= this (float16 comparison) are dropped; there is no far plane
TIE_TOLERANCE = 1e-4  # a point is drawn when its z is within this of the pixel's minimum z
U8_MAX = 255.0


class PointRenderError(ValueError):
    """Input the hard z-buffer renderer cannot use, with what to change."""


@dataclass(frozen=True)
class HalfPointCloud:
    """The renderer's point cache: float16 positions and float16 colours in [0, 1].

    Upstream keeps the cache in float16 (``use_fp16_cache=True``); the rounding of positions and
    colours is visible in the output (131 of 256 colour values come back one lower), so the
    cache is float16 here too rather than an implementation detail.
    """

    xyz: Annotated[Tensor, "P 3 float16 world position"]
    rgb: Annotated[Tensor, "P 3 float16 colour in [0, 1]"]

    @property
    def num_points(self) -> int:
        return int(self.xyz.shape[0])

    def to(self, device: torch.device | str) -> HalfPointCloud:
        return HalfPointCloud(xyz=self.xyz.to(device), rgb=self.rgb.to(device))


def half_point_cloud(points: Points, colours_u8: PointColoursU8) -> HalfPointCloud:
    """The float16 cache of a coloured point cloud (positions in OpenCV world coordinates)."""
    if points.ndim != 2 or points.shape[-1] != 3:
        raise PointRenderError(f"points must be [P, 3], got {tuple(points.shape)}")
    if colours_u8.shape != points.shape:
        raise PointRenderError(
            f"point colours {tuple(colours_u8.shape)} must match the points {tuple(points.shape)}: "
            "one RGB triple per point"
        )
    # Upstream is handed rgb/255 in float64, casts it to float32, clips, then caches float16.
    unit_rgb = (colours_u8.to(torch.float64) / U8_MAX).to(torch.float32).clamp(0.0, 1.0)
    xyz16 = points.to(torch.float32).to(torch.float16)
    return HalfPointCloud(xyz=xyz16, rgb=unit_rgb.to(torch.float16))


def render_points_hard(
    cloud: HalfPointCloud,
    intrinsics: Intrinsics,
    world_to_camera: WorldToCamera,
    height: int,
    width: int,
) -> tuple[RenderedImageU8, RenderedDepth]:
    """Render the point cloud into T cameras with a hard z-buffer (no splat radius, no filling).

    intrinsics: [3, 3] or [T, 3, 3] pixel K for the height×width canvas, used as given.
    world_to_camera: [4, 4] or [T, 4, 4] OpenCV Tcw.
    Returns RGB uint8 [T, H, W, 3] and z-depth [T, H, W]; empty pixels are black with depth 0.
    """
    poses = world_to_camera.reshape(-1, 4, 4)
    cameras = intrinsics.reshape(-1, 3, 3).expand(poses.shape[0], 3, 3)
    frames = [_render_one(cloud, k, pose, height, width) for k, pose in zip(cameras, poses)]
    images, depths = zip(*frames)
    return torch.stack(images), torch.stack(depths)


def _upstream_world_to_camera(world_to_camera: Tensor) -> tuple[Tensor, Tensor]:
    """float16 rotation and translation exactly as upstream forms them from a camera-to-world.

    Upstream receives c2w and inverts it in float32; the canonical input here is Tcw, so it is
    inverted back in float64 (exact to far below a float32 ulp) and then inverted in float32 the
    way upstream does, which keeps the float16 rotation identical bit for bit.
    """
    camera_to_world = torch.linalg.inv(world_to_camera.to(torch.float64)).to(torch.float32)
    upstream = torch.linalg.inv(camera_to_world)
    return upstream[:3, :3].to(torch.float16), upstream[:3, 3].to(torch.float16)


def _render_one(
    cloud: HalfPointCloud, intrinsics: Tensor, world_to_camera: Tensor, height: int, width: int
) -> tuple[Tensor, Tensor]:
    device = cloud.xyz.device
    rotation, translation = _upstream_world_to_camera(world_to_camera.cpu())
    rotation, translation = rotation.to(device), translation.to(device)
    # Half matmul on the CPU: each 3-term dot product of float16 values is accumulated in
    # float32 (the products are exact) and rounded to float16 once; the translation is then
    # added in float16. Written out so every device gives the CPU result.
    xyz32, rotation32 = cloud.xyz.to(torch.float32), rotation.to(torch.float32)
    x_terms, y_terms, z_terms = (xyz32[:, axis, None] * rotation32[:, axis] for axis in range(3))
    rotated = (x_terms + y_terms) + z_terms
    camera_points = rotated.to(torch.float16) + translation
    z16 = camera_points[:, 2]
    # float16 comparison against the near plane, as upstream; far=1e6 is +inf in float16, so
    # only the finiteness test remains of the far plane.
    in_front = (z16 > NEAR_PLANE) & torch.isfinite(z16)
    if not bool(in_front.any()):
        raise PointRenderError(
            "every point of the point cloud is behind the camera (or at z <= "
            f"{NEAR_PLANE}): check that the target pose is a world-to-camera matrix in OpenCV "
            "axes (z forward) and that it looks into the scene"
        )

    k = intrinsics.to(device=device, dtype=torch.float32)
    x, y, z = camera_points[in_front].to(torch.float32).unbind(-1)
    inverse_z = 1.0 / z
    u = torch.round(k[0, 0] * (x * inverse_z) + k[0, 2])  # torch.round: half to even
    v = torch.round(k[1, 1] * (y * inverse_z) + k[1, 2])
    on_canvas = (u >= 0) & (u < width) & (v >= 0) & (v < height)
    pixel = (v[on_canvas] * width + u[on_canvas]).to(torch.int64)
    depth = z[on_canvas]
    point_index = torch.nonzero(in_front).squeeze(-1)[on_canvas]

    num_pixels = height * width
    nearest = torch.full((num_pixels,), float("inf"), device=device)
    nearest = nearest.scatter_reduce(0, pixel, depth, reduce="amin")
    drawn = depth <= nearest[pixel] + TIE_TOLERANCE
    # Among the points tied at the minimum, upstream's CPU scatter leaves the last one in point
    # order: keep the largest point index per pixel.
    winner = torch.full((num_pixels,), -1, dtype=torch.int64, device=device)
    winner = winner.scatter_reduce(0, pixel[drawn], point_index[drawn], reduce="amax")
    covered = winner >= 0
    # Colours are truncated, not rounded, from the float16 cache.
    colour_u8 = (cloud.rgb[winner[covered]].to(torch.float32) * U8_MAX).to(torch.uint8)
    image = torch.zeros(num_pixels, 3, dtype=torch.uint8, device=device)
    image[covered] = colour_u8
    depth_map = torch.where(covered, nearest, torch.zeros_like(nearest))
    return (
        rearrange(image, "(h w) c -> h w c", h=height, w=width),
        rearrange(depth_map, "(h w) -> h w", h=height, w=width),
    )
