"""Hard z-buffer point renderers: v1's "ply" backend and InSpatio-WorldFM's point renderer.

Place in the data flow: a coloured point cloud (v1's fused depth points; WorldFM's panorama or
image points, ``core/worldfm/panorama.py``) and target cameras -> RGB bytes and a coverage mask or
depth. Unlike the soft splat (``core/soft_splat.py``) each pixel shows one point: among the
points within a tolerance of the pixel's nearest z, the last one in point order, which is what
upstream's serial CPU scatter leaves (its parallel scatter leaves it to chance).

Follows ``render_batch`` in v1 ``scripts/render_point_cloud.py`` (points drawn as small squares
at 2x resolution, then downsampled) and ``modules/point_renderer.py``
(``TorchPointCloudRenderer``, mode "fast") of inspatio/worldfm, bit for bit on the CPU: a
float16 point cache, a float16 camera transform, a float32 projection. Frames are rendered
together: each frame's pixels get their own block of one z-buffer (pixel + frame·H·W), in passes
of at most ``MAX_FRAGMENTS_PER_ZBUFFER`` fragments, which changes no pixel.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import torch
from einops import rearrange, reduce
from torch import Tensor

from .types import Intrinsics, Points, WorldToCamera

PointColoursU8 = Annotated[Tensor, "P 3 uint8 RGB"]
Bytes = Annotated[Tensor, "T H W 3 uint8 RGB"]
MaskBytes = Annotated[Tensor, "T H W uint8 {0, 255}"]
RenderedImageU8 = Annotated[Tensor, "T H W 3 uint8 RGB, black where no point landed"]
RenderedDepth = Annotated[Tensor, "T H W float32 z-depth (float16 values), 0 where empty"]
PixelIndex = Annotated[Tensor, "K int64 flat pixel index of each fragment"]
PixelWinner = Annotated[Tensor, "H*W int64 order of the drawn fragment, -1 where empty"]

U8_MAX = 255.0
PLY_SUPERSAMPLING = 2  # the official ss_ratio; the 2x2 area average below assumes it
PLY_POINT_SIZE = 2  # official --point_size; at 2x it becomes an odd square (4 -> 5 px)
PLY_NEAR_PLANE = 0.1  # points with z <= 0.1 are dropped
NEAR_PLANE = 1e-3  # WorldFM: points at z <= this (float16 comparison) are dropped; no far plane
TIE_TOLERANCE = 1e-4  # a point is drawn when its z is within this of the pixel's minimum z
# Frames share one z-buffer pass until their fragments reach this many: it bounds the
# temporaries (~100 bytes a fragment) and, on the CPU, larger passes run slower per frame
# (bench/point_render.py: 2**24 took 1.7x as long as 2**22 for v1 frames of 200k points).
# A frame with more fragments than this still gets a pass of its own.
MAX_FRAGMENTS_PER_ZBUFFER = 2**22


class PointRenderError(ValueError):
    """Input the hard z-buffer renderers cannot use, with what to change."""


def _zbuffer(
    pixel: PixelIndex, depth: Tensor, order: Tensor, num_pixels: int
) -> tuple[Annotated[Tensor, "H*W float nearest z, inf where empty"], PixelWinner]:
    """Per pixel, the nearest z and the last fragment (largest ``order``) tied with it."""
    nearest = torch.full((num_pixels,), torch.inf, device=depth.device)
    nearest = nearest.scatter_reduce(0, pixel, depth, reduce="amin")
    tied = depth <= nearest[pixel] + TIE_TOLERANCE
    winner = torch.full((num_pixels,), -1, dtype=torch.int64, device=depth.device)
    winner = winner.scatter_reduce(0, pixel[tied], order[tied], reduce="amax")
    return nearest, winner


def render_points_v1(
    points: Annotated[Tensor, "P 3 world points"],
    colours: Annotated[Tensor, "P 3 float in [0, 1]"],
    world_to_camera: WorldToCamera,
    intrinsics: Intrinsics,
    height: int,
    width: int,
    point_size: int = PLY_POINT_SIZE,
) -> tuple[Bytes, MaskBytes]:
    """RGB and mask bytes of a point cloud seen from each of T poses (the v1 "ply" backend).

    Per pose: points with z > 0.1 are projected with fx, cx, fy, cy of the 2x-scaled K, each
    drawn as a ``point_size·2`` (made odd) square of rounded pixels; at every pixel the points
    within 1e-4 of the nearest z are visible and, among them, the last point in input order
    wins (what a serial scatter gives; upstream's parallel CPU scatter leaves it to chance).
    Colours are truncated to bytes, area-averaged 2x2 (rounding half up, as OpenCV INTER_AREA)
    and the mask takes the top-left pixel of each 2x2 block (INTER_NEAREST).
    """
    if points.ndim != 2 or points.shape[1] != 3 or colours.shape != points.shape:
        raise PointRenderError(
            f"points {tuple(points.shape)} and colours {tuple(colours.shape)}: expected [P, 3] each"
        )
    square = point_size * PLY_SUPERSAMPLING + (1 - point_size * PLY_SUPERSAMPLING % 2)
    poses = world_to_camera.to(torch.float32)
    step = _frames_per_zbuffer(points.shape[0] * square**2)
    pieces = [
        _render_v1_frames(
            points, colours, poses[start : start + step], intrinsics, height, width, square
        )
        for start in range(0, poses.shape[0], step)
    ]
    rgb, mask = zip(*pieces)
    return torch.cat(rgb), torch.cat(mask)


def _frames_per_zbuffer(fragments_per_frame: int) -> int:
    """How many frames one z-buffer pass takes, so its fragments stay within the budget."""
    return max(1, MAX_FRAGMENTS_PER_ZBUFFER // max(1, fragments_per_frame))


def _render_v1_frames(
    points: Tensor,
    colours: Tensor,
    world_to_camera: Annotated[Tensor, "T 4 4 float32"],
    intrinsics: Intrinsics,
    height: int,
    width: int,
    square: int,
) -> tuple[Bytes, MaskBytes]:
    """:func:`render_points_v1` for a few poses at once: one z-buffer over all their pixels."""
    device, frames = points.device, world_to_camera.shape[0]
    high_height, high_width = height * PLY_SUPERSAMPLING, width * PLY_SUPERSAMPLING
    high_k = intrinsics.to(torch.float32).clone()
    high_k[:2] *= PLY_SUPERSAMPLING
    offsets = torch.arange(square, device=device) - square // 2
    row_offsets, col_offsets = (
        grid.flatten() for grid in torch.meshgrid(offsets, offsets, indexing="ij")
    )
    points = points.to(torch.float32)  # upstream's float32 points, whatever the caller passes
    homogeneous = torch.cat([points, torch.ones_like(points[:, :1])], dim=1)
    camera = (homogeneous @ world_to_camera.mT)[..., :3]  # [T, P, 3]
    frame_of, point_of = torch.nonzero(camera[..., 2] > PLY_NEAR_PLANE, as_tuple=True)
    camera = camera[frame_of, point_of]  # [N, 3]: the points in front, frame by frame
    z = camera[:, 2]
    cols = high_k[0, 0] * camera[:, 0] / z + high_k[0, 2]
    rows = high_k[1, 1] * camera[:, 1] / z + high_k[1, 2]
    cols = torch.round(cols[:, None] + col_offsets)  # [N, S]: one fragment per square pixel
    rows = torch.round(rows[:, None] + row_offsets)
    inside = (cols >= 0) & (cols < high_width) & (rows >= 0) & (rows < high_height)
    # A fragment is named by its flat index into [N, S]: increasing in upstream's per-frame
    # order (point, then square pixel), so the largest tied one is the last drawn.
    fragment = torch.nonzero(inside.flatten()).squeeze(1)
    source = fragment // square**2
    # Each frame owns its own block of pixels, so one z-buffer serves every frame.
    pixel = (frame_of[source] * high_height + rows.flatten()[fragment].long()) * high_width
    pixel = pixel + cols.flatten()[fragment].long()
    _, winner = _zbuffer(pixel, z[source], fragment, frames * high_height * high_width)
    covered = winner >= 0
    canvas = torch.zeros(covered.numel(), 3, device=device)
    canvas[covered] = colours.to(torch.float32)[point_of[winner[covered] // square**2]]
    mask = covered.to(torch.uint8) * int(U8_MAX)
    high_bytes = (canvas * U8_MAX).to(torch.uint8).to(torch.int32)
    block_sums = reduce(
        high_bytes,
        "(t h a w b) c -> t h w c",
        "sum",
        t=frames,
        a=PLY_SUPERSAMPLING,
        b=PLY_SUPERSAMPLING,
        w=width,
    )
    area = PLY_SUPERSAMPLING**2
    rgb = ((block_sums + area // 2) // area).to(torch.uint8)
    mask = rearrange(mask, "(t h w) -> t h w", t=frames, w=high_width)
    return rgb, mask[:, ::PLY_SUPERSAMPLING, ::PLY_SUPERSAMPLING]


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
    # One small transfer for all poses: the float32 inversion must be the CPU's (see below).
    rotations, translations = _upstream_world_to_camera(poses.cpu())
    device = cloud.xyz.device
    rotations, translations = rotations.to(device), translations.to(device)
    step = _frames_per_zbuffer(cloud.num_points)
    pieces = [
        _render_frames(
            cloud,
            cameras[start : start + step],
            rotations[start : start + step],
            translations[start : start + step],
            height,
            width,
        )
        for start in range(0, poses.shape[0], step)
    ]
    images, depths = zip(*pieces)
    return torch.cat(images), torch.cat(depths)


def _upstream_world_to_camera(world_to_camera: Tensor) -> tuple[Tensor, Tensor]:
    """float16 rotations and translations exactly as upstream forms them from camera-to-world.

    Upstream receives c2w and inverts it in float32; the canonical input here is Tcw, so it is
    inverted back in float64 (exact to far below a float32 ulp) and then inverted in float32 the
    way upstream does, which keeps the float16 rotation identical bit for bit. Runs on the CPU,
    whose LAPACK inversion is upstream's.
    """
    camera_to_world = torch.linalg.inv(world_to_camera.to(torch.float64)).to(torch.float32)
    upstream = torch.linalg.inv(camera_to_world)
    return upstream[:, :3, :3].to(torch.float16), upstream[:, :3, 3].to(torch.float16)


def _render_frames(
    cloud: HalfPointCloud,
    intrinsics: Annotated[Tensor, "T 3 3"],
    rotations: Annotated[Tensor, "T 3 3 float16"],
    translations: Annotated[Tensor, "T 3 float16"],
    height: int,
    width: int,
) -> tuple[RenderedImageU8, RenderedDepth]:
    """:func:`render_points_hard` for a few poses at once: one z-buffer over all their pixels."""
    device, frames = cloud.xyz.device, rotations.shape[0]
    # Half matmul on the CPU: each 3-term dot product of float16 values is accumulated in
    # float32 (the products are exact) and rounded to float16 once; the translation is then
    # added in float16. Written out so every device gives the CPU result.
    # Laid out [T, 3, P] (one contiguous row per output axis), which runs faster than [T, P, 3].
    coordinates = rearrange(cloud.xyz.to(torch.float32), "p xyz -> xyz p").contiguous()
    columns = rotations.to(torch.float32)[..., None]  # [T, 3, 3, 1]: R[:, :, axis] per axis
    x_terms, y_terms, z_terms = (columns[:, :, axis] * coordinates[axis] for axis in range(3))
    rotated = (x_terms + y_terms) + z_terms
    camera_points = rotated.to(torch.float16) + translations[..., None]
    z16 = camera_points[:, 2]
    # float16 comparison against the near plane, as upstream; far=1e6 is +inf in float16, so
    # only the finiteness test remains of the far plane.
    in_front = (z16 > NEAR_PLANE) & torch.isfinite(z16)
    if not bool(in_front.any(dim=1).all()):
        raise PointRenderError(
            "every point of the point cloud is behind the camera (or at z <= "
            f"{NEAR_PLANE}): check that the target pose is a world-to-camera matrix in OpenCV "
            "axes (z forward) and that it looks into the scene"
        )

    k = intrinsics.to(device=device, dtype=torch.float32)
    x, y, z = camera_points.to(torch.float32).unbind(1)
    inverse_z = 1.0 / z
    # torch.round: half to even. Points behind the camera get garbage here; `drawn` drops them.
    u = torch.round(k[:, None, 0, 0] * (x * inverse_z) + k[:, None, 0, 2])
    v = torch.round(k[:, None, 1, 1] * (y * inverse_z) + k[:, None, 1, 2])
    drawn = in_front & (u >= 0) & (u < width) & (v >= 0) & (v < height)
    kept = torch.nonzero(drawn.flatten()).squeeze(1)
    frame, point_index = kept // cloud.num_points, kept % cloud.num_points
    # Each frame owns its own block of pixels, so one z-buffer serves every frame; the order
    # is the point index, so the last tied point still wins within each frame.
    pixel = (frame * height + v.flatten()[kept].long()) * width + u.flatten()[kept].long()
    nearest, winner = _zbuffer(pixel, z.flatten()[kept], point_index, frames * height * width)
    covered = winner >= 0
    # Colours are truncated, not rounded, from the float16 cache.
    colour_u8 = (cloud.rgb[winner[covered]].to(torch.float32) * U8_MAX).to(torch.uint8)
    image = torch.zeros(covered.numel(), 3, dtype=torch.uint8, device=device)
    image[covered] = colour_u8
    depth_map = torch.where(covered, nearest, torch.zeros_like(nearest))
    return (
        rearrange(image, "(t h w) c -> t h w c", t=frames, h=height, w=width),
        rearrange(depth_map, "(t h w) -> t h w", t=frames, h=height, w=width),
    )
