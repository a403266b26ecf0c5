"""WorldFM scene points: an equirectangular panorama (or one image with depth) -> a point cloud.

Place in the data flow: the user's panorama and its distance map (or an image, its z-depth and
camera) become one coloured point per pixel, which the hard z-buffer (``core/point_render.py``)
renders per target pose and the reference bank (``bank.py``) renders per view.

Follows ``modules/pano_postprocess.py`` of inspatio/worldfm at 8881a7b (``prepare_depth``,
``resize_panorama``, ``compute_ply_arrays``), in float32 where upstream uses it.
"""

from __future__ import annotations

import math
from typing import Annotated

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from ..point_render import U8_MAX, PointColoursU8
from ..types import Intrinsics, Points, WorldToCamera

PanoramaU8 = Annotated[Tensor, "H W 3 uint8 RGB equirectangular, W = 2H"]
DistanceMap = Annotated[Tensor, "H W float ray distance from the panorama centre"]

#: Upstream's cap on the panorama size before the point cloud and the bank are built.
PANORAMA_MAX_WIDTH = 8192
PANORAMA_MAX_HEIGHT = 4096
#: Mask weight below which the masked upsample of the depth leaves a pixel empty.
MASK_WEIGHT_FLOOR = 1e-6


class PanoramaInputError(ValueError):
    """A panorama, distance map or image the bank cannot use, saying which and how to fix it."""


def prepare_depth(depth_raw: Tensor, scale: float, width: int, height: int) -> DistanceMap:
    """Upstream ``prepare_depth``: scale, drop invalid values, masked upsample, fill with the max.

    The upsample is ``resize(d·m) / resize(m)`` with bilinear half-pixel centres (cv2
    INTER_LINEAR == ``F.interpolate(align_corners=False)`` when enlarging), so invalid pixels do
    not bleed into valid ones.
    """
    depth = depth_raw.to(torch.float32) * scale
    valid = torch.isfinite(depth) & (depth > 0)
    depth = torch.where(valid, depth, torch.zeros_like(depth))
    if tuple(depth.shape) != (height, width):
        stacked = torch.stack([depth * valid, valid.to(torch.float32)])[None]
        weighted, weight = F.interpolate(
            stacked, size=(height, width), mode="bilinear", align_corners=False
        )[0]
        has_weight = weight > MASK_WEIGHT_FLOOR
        depth = torch.where(
            has_weight, weighted / torch.where(has_weight, weight, torch.ones_like(weight)), 0.0
        )
    filled = depth > 0
    if not bool(filled.any()):
        raise PanoramaInputError("the distance map has no valid (finite, positive) value")
    return torch.where(filled, depth, depth[filled].max())


def fit_panorama(panorama: PanoramaU8) -> PanoramaU8:
    """The panorama shrunk to fit within 8192×4096 (upstream ``resize_panorama``); never enlarged.

    Upstream uses cv2 INTER_AREA, which box-averages like ``F.interpolate(mode="area")`` for
    integer factors (16384×8192 -> 8192×4096); other factors weight partial pixels slightly
    differently.
    """
    height, width = check_panorama(panorama)
    factor = min(1.0, PANORAMA_MAX_WIDTH / width, PANORAMA_MAX_HEIGHT / height)
    if factor == 1.0:
        return panorama
    size = (max(1, round(height * factor)), max(1, round(width * factor)))
    pixels = rearrange(panorama, "h w c -> 1 c h w").to(torch.float32)
    shrunk = torch.round(F.interpolate(pixels, size=size, mode="area")).clamp(0, U8_MAX)
    return rearrange(shrunk.to(torch.uint8), "1 c h w -> h w c")


def panorama_points(panorama: PanoramaU8, distance: DistanceMap) -> tuple[Points, PointColoursU8]:
    """One point per panorama pixel, row-major, in OpenCV world coordinates (y down).

    θ = j/W·2π − π and φ = i/H·π with no half-pixel offset (row 0 is the zenith, column 0
    is θ = −π); X = r·sinφ·cosθ, Y = −r·cosφ, Z = −r·sinφ·sinθ, all float32. The panorama
    centre column faces +x and column W/4 faces +z.
    """
    height, width = check_panorama(panorama)
    if tuple(distance.shape) != (height, width):
        raise PanoramaInputError(
            f"the distance map is {tuple(distance.shape)} but the panorama is {(height, width)}: "
            "resample the distance map to the panorama size (prepare_depth does it)"
        )
    theta = torch.arange(width, dtype=torch.float32) / width * (2 * math.pi) - math.pi
    phi = torch.arange(height, dtype=torch.float32) / height * math.pi
    theta, phi = theta[None, :], phi[:, None]
    radius = distance.to(torch.float32)
    sin_phi = torch.sin(phi)
    xyz = torch.stack(
        [
            radius * sin_phi * torch.cos(theta),
            -radius * torch.cos(phi),
            -radius * sin_phi * torch.sin(theta),
        ],
        dim=-1,
    )
    return rearrange(xyz, "h w c -> (h w) c"), rearrange(panorama, "h w c -> (h w) c")


def check_panorama(panorama: PanoramaU8) -> tuple[int, int]:
    """(H, W) of an RGB uint8 2:1 panorama, or a PanoramaInputError that says what to pass."""
    if panorama.ndim != 3 or panorama.shape[-1] != 3 or panorama.dtype != torch.uint8:
        raise PanoramaInputError(
            "the panorama must be an RGB uint8 image [H, W, 3], got "
            f"{tuple(panorama.shape)} {panorama.dtype}"
        )
    height, width = panorama.shape[:2]
    if width != 2 * height:
        raise PanoramaInputError(
            f"the panorama is {width}×{height}, not 2:1: pass a full equirectangular panorama "
            "(360°×180°), e.g. 4096×2048"
        )
    return height, width


def image_points(
    image: Annotated[Tensor, "H W 3 uint8 RGB"],
    depth: Annotated[Tensor, "H W z-depth, <= 0 or non-finite: no point"],
    intrinsics: Intrinsics,
    world_to_camera: WorldToCamera,
) -> tuple[Points, PointColoursU8]:
    """The points of a single image with its own z-depth (integer pixel centres, as upstream)."""
    height, width = image.shape[:2]
    if tuple(depth.shape) != (height, width):
        raise PanoramaInputError(
            f"the depth map is {tuple(depth.shape)} but the image is {(height, width)}: "
            "resize the depth to the image"
        )
    valid = torch.isfinite(depth) & (depth > 0)
    if not bool(valid.any()):
        raise PanoramaInputError("the depth map has no valid (finite, positive) value")
    rows, columns = torch.nonzero(valid, as_tuple=True)
    pixels = torch.stack([columns, rows, torch.ones_like(rows)], dim=-1).to(torch.float64)
    camera_points = (pixels @ torch.linalg.inv(intrinsics.to(torch.float64)).T) * depth[valid].to(
        torch.float64
    )[:, None]
    camera_to_world = torch.linalg.inv(world_to_camera.to(torch.float64).reshape(4, 4))
    world_points = camera_points @ camera_to_world[:3, :3].T + camera_to_world[:3, 3]
    return world_points.to(torch.float32), image[valid]
