"""Forward splatting with the official soft z-buffer (InSpatio-World v1 / v1.5 ``DepthWarper``).

Place in the data flow: ``core/splat.py`` hands this module (source frame, target camera) pairs;
every source pixel is unprojected with its depth, projected into the target camera
(:func:`project_pixels`) and splatted bilinearly with a depth weight (:func:`splat_soft`).

Follows v1.5 ``pipeline/depth_warper.py`` (``bilinear_splatting``) and ``pipeline/render_scene.py``
(``project_source``), with v1's whole-batch depth normalisation (``scripts/render_point_cloud.py``)
as a config value. Conventions: integer pixel centres (no +0.5) and a one-pixel canvas border
that catches off-image points.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

import torch
from einops import rearrange
from torch import Tensor

from .types import Intrinsics, WorldToCamera

PairDepth = Annotated[Tensor, "N H W float, one (source, target) pair per row"]
PairCoords = Annotated[Tensor, "N 2 H W float, target pixel (x, y) of each source pixel"]
PairValues = Annotated[Tensor, "N C H W float"]
PairMask = Annotated[Tensor, "N H W bool"]

# Points are splatted at +1 on an (H+2)x(W+2) canvas; off-image ones land on the border.
CANVAS_BORDER = 1
# Depth weight 1/exp(50·log(1+z)/max log(1+z)): near points win by up to e^50.
DEPTH_WEIGHT_SHARPNESS = 50.0
DEPTH_SATURATION = 1000.0  # z is clamped to [0, 1000] before the log
# Keeps the normalisation finite when no pixel is in front of the camera.
LOG_DEPTH_PEAK_FLOOR = 1e-6
PROJECTION_DEPTH_FLOOR = 1e-6  # v1.5 divides by z.clamp_min(1e-6)

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


def _log_depth(z: PairDepth, config: SoftSplatConfig) -> PairDepth:
    """``log(1 + clamp(z, 0, sat))``: the depth weight's exponent before normalisation."""
    return torch.log(1 + z.clamp(0, config.depth_saturation))


def log_depth_peak(z: PairDepth, config: SoftSplatConfig) -> Tensor:
    """``max log(1 + clamp(z, 0, sat))`` over the config's scope: [N, 1, 1] or a 0-dim tensor."""
    return _scope_max(_log_depth(z, config), config)


def _scope_max(log_depths: PairDepth, config: SoftSplatConfig) -> Tensor:
    # Upstream takes the maximum over every pixel of the call, invalid ones included.
    if config.depth_weight_scope == "frame":
        return log_depths.amax(dim=(-2, -1), keepdim=True)
    return log_depths.max()


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
    corner_factors = (
        (y_to_low, x_to_low),
        (y_to_high, x_to_low),
        (y_to_low, x_to_high),
        (y_to_high, x_to_high),
    )
    (x_low, y_low), (x_high, y_high) = low.long().unbind(1), high.long().unbind(1)
    # Flat canvas index of each corner: pair offset + row start (computed once per row) + column.
    pair_offset = torch.arange(n, device=values.device)[:, None, None] * (
        canvas_height * canvas_width
    )
    row_low, row_high = (pair_offset + rows * canvas_width for rows in (y_low, y_high))
    corner_rows_cols = ((row_low, x_low), (row_high, x_low), (row_low, x_high), (row_high, x_high))

    log_depths = _log_depth(projection.z.to(torch.float32), config)
    if peak is None:
        peak = _scope_max(log_depths, config)
    depth_weight = torch.exp(log_depths / peak.clamp_min(LOG_DEPTH_PEAK_FLOOR) * config.sharpness)

    # Each corner's terms are written straight into one [4, N, H, W] buffer (no stacked copies).
    weights = values.new_empty((len(corner_factors), n, height, width), dtype=torch.float32)
    targets = torch.empty(weights.shape, dtype=torch.long, device=values.device)
    for corner, ((y_factor, x_factor), (row_start, column)) in enumerate(
        zip(corner_factors, corner_rows_cols)
    ):
        torch.mul(y_factor, x_factor, out=weights[corner])
        torch.add(row_start, column, out=targets[corner])
    # Upstream multiplies by the 0/1 validity before dividing: the same numbers as this fill.
    weights.div_(depth_weight).masked_fill_(~projection.valid, 0.0)

    # One row of C + 1 numbers per contribution: the channels times the weight, then the weight
    # itself (a ones channel: 1·w == w exactly), so one accumulation covers every channel.
    values_and_one = values.new_ones((n, height, width, channels + 1), dtype=torch.float32)
    values_and_one[..., :channels] = rearrange(values, "n c h w -> n h w c")
    contributions = values_and_one * weights[..., None]
    canvas = values.new_zeros((n * canvas_height * canvas_width, channels + 1), dtype=torch.float32)
    # Contributions are corner-major (k n h w), so every canvas cell sums its terms in upstream's
    # order. The sum must not depend on scheduling: two views with bit-identical inputs must get
    # bit-identical sums, or the strict `<` of the view fusion could pick the later one. CPU
    # index_add_ of [M, C+1] rows along dim 0 either loops over the rows serially or (its
    # scatter_add fast path) radix-sorts the targets stably and sums each cell's rows in index
    # order, threads splitting cells, never a cell; CUDA index_put_(accumulate=True) likewise
    # sorts stably and sums in order. (CUDA index_add_ and CPU index_put_ use unordered atomics.)
    targets, contributions = targets.flatten(), contributions.flatten(end_dim=-2)
    if canvas.is_cuda:
        canvas.index_put_((targets,), contributions, accumulate=True)
    else:
        canvas.index_add_(0, targets, contributions)
    canvas = rearrange(canvas, "(n h w) c -> n c h w", n=n, h=canvas_height, w=canvas_width)
    canvas = canvas[:, :, CANVAS_BORDER:-CANVAS_BORDER, CANVAS_BORDER:-CANVAS_BORDER]
    weight_sum = canvas[:, channels]
    known = weight_sum > 0
    mean = torch.where(known[:, None], canvas[:, :channels] / weight_sum[:, None], 0.0)
    return SplatResult(values=mean, known=known)
