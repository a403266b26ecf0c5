"""Rendering source pixels into target cameras: the explicit spatial constraint.

Two renderers live here:

- forward splatting with the official soft z-buffer (InSpatio-World v1 / v1.5 ``DepthWarper``);
- the hard z-buffer point renderer of InSpatio-WorldFM (``modules/point_renderer.py``).
"""

from __future__ import annotations

# --- soft z-buffer forward splatting (InSpatio-World) --------------------------------------


# --- hard z-buffer point renderer (InSpatio-WorldFM) ---------------------------------------
# Follows ``modules/point_renderer.py`` (``TorchPointCloudRenderer``, mode "fast") of
# inspatio/worldfm bit for bit on the CPU: a float16 point cache, a float16 camera transform, a
# float32 projection, a per-pixel minimum-z buffer and "last point in order wins" among the
# points tied at that minimum. This section is self-contained (its own imports) because the
# soft z-buffer above it is maintained separately.

from dataclasses import dataclass  # noqa: E402

import torch  # noqa: E402
from einops import rearrange  # noqa: E402
from torch import Tensor  # noqa: E402
from typing import Annotated  # noqa: E402

from .types import Intrinsics, Points, WorldToCamera  # noqa: E402

PointColoursU8 = Annotated[Tensor, "P 3 uint8 RGB"]
RenderedImageU8 = Annotated[Tensor, "T H W 3 uint8 RGB, black where no point landed"]
RenderedDepth = Annotated[Tensor, "T H W float32 z-depth (float16 values), 0 where no point landed"]

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
    return HalfPointCloud(xyz=points.to(torch.float32).to(torch.float16), rgb=unit_rgb.to(torch.float16))


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
    frames = [_render_one(cloud, cameras[i], poses[i], height, width) for i in range(poses.shape[0])]
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
    rotated = (xyz32[:, 0:1] * rotation32[:, 0] + xyz32[:, 1:2] * rotation32[:, 1]) + xyz32[
        :, 2:3
    ] * rotation32[:, 2]
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
