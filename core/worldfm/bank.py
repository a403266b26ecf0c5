"""WorldFM scene geometry: panorama -> point cloud, the reference bank, and reference selection.

Place in the data flow: a user-supplied equirectangular panorama and its distance map become one
coloured point per pixel (rendered per target pose by the hard z-buffer of ``core/point_render.py``)
and a fixed bank of 42 perspective crops. For each target pose the bank view whose depth agrees best
with the target's anchor render is chosen; its latent (encoded once per view and cached) is the
frame model's reference condition ``cond2``. A single image with its own depth is the degraded case:
its pixels are the points and the image is the only reference.

Follows inspatio/worldfm at 8881a7b: ``modules/pano_postprocess.py`` (``prepare_depth``,
``compute_ply_arrays``, ``generate_conditions``) and ``modules/depth_selector.py``
(``build_condition_db_in_memory``, ``select_best_condition_index``). Float32 is kept wherever
upstream uses it, because the selection counts and the bank pixels are compared exactly.
This module is longer than 300 lines because the bank, its condition database and the selector
share one set of conventions that is easier to check in one place.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from PIL import Image as PILImage
from torch import Tensor

from ..point_render import HalfPointCloud, half_point_cloud, render_points_hard
from ..types import CameraToWorld, Intrinsics, Points, WorldToCamera

PanoramaU8 = Annotated[Tensor, "H W 3 uint8 RGB equirectangular, W = 2H"]
DistanceMap = Annotated[Tensor, "H W float ray distance from the panorama centre"]
PointColoursU8 = Annotated[Tensor, "P 3 uint8 RGB"]
BankImagesU8 = Annotated[Tensor, "V h w 3 uint8 RGB"]
ViewProjections = Annotated[Tensor, "V 3 4 float32 K·[R|t] for the S×S canvas"]
ViewDepths = Annotated[Tensor, "V S S float32 z-depth, 0 where empty"]

#: Bank layout: pitch-major, pitches then yaws in this order, then straight up and down.
BANK_PITCHES = (0.0, math.pi / 4, -math.pi / 4, math.pi / 6, -math.pi / 6)
BANK_YAWS = (
    0.0,
    math.pi / 4,
    math.pi / 2,
    3 * math.pi / 4,
    math.pi,
    -3 * math.pi / 4,
    -math.pi / 2,
    -math.pi / 4,
)
BANK_POLES = ((0.0, math.pi / 2), (0.0, -math.pi / 2))
#: Upstream's cap on the panorama size before the point cloud and the bank are built.
PANORAMA_MAX_WIDTH = 8192
PANORAMA_MAX_HEIGHT = 4096
RELEASED_CROP_SIZE = 504
RELEASED_CROP_FOCAL = 320.0
#: Right vector used when forward is parallel to the up axis (the two pole views).
DEGENERATE_RIGHT_NORM = 1e-8
#: Keeps y = φ/π·H strictly inside the last row.
LAST_ROW_MARGIN = 1e-6
#: Mask weight below which the masked upsample of the depth leaves a pixel empty.
MASK_WEIGHT_FLOOR = 1e-6
#: Added to z before dividing, as upstream does, in the projection into bank views.
PROJECTION_EPS = 1e-8
#: Angles at or above this disable the view-angle test.
ANGLE_TEST_OFF_DEGREES = 179.999
U8_MAX = 255.0
#: Bank pixels are rounded half up (uint8(value + 0.5)), unlike torch.round.
ROUND_HALF_UP = 0.5


class PanoramaInputError(ValueError):
    """A panorama, distance map or image the bank cannot use, saying which and how to fix it."""


# --- panorama -> points ---------------------------------------------------------------------


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
    height, width = _check_panorama(panorama)
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
    height, width = _check_panorama(panorama)
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


def _check_panorama(panorama: PanoramaU8) -> tuple[int, int]:
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


# --- reference bank ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ReferenceBank:
    """Reference views: images, their shared pixel K and OpenCV camera-to-world poses.

    camera_to_world holds float32 values (upstream writes them to its transforms as float32);
    world_to_camera is the canonical form of the same poses.
    """

    images: BankImagesU8
    intrinsics: Intrinsics
    camera_to_world: CameraToWorld

    @property
    def num_views(self) -> int:
        return int(self.images.shape[0])

    @property
    def world_to_camera(self) -> WorldToCamera:
        return torch.linalg.inv(self.camera_to_world.to(torch.float64))


def bank_yaw_pitch() -> Annotated[Tensor, "42 2 float64 (yaw, pitch) radians"]:
    grid = [(yaw, pitch) for pitch in BANK_PITCHES for yaw in BANK_YAWS]
    return torch.tensor(grid + list(BANK_POLES), dtype=torch.float64)


def bank_camera_to_world(yaw_pitch: Tensor) -> CameraToWorld:
    """OpenCV camera-to-world of look-from-origin views, built in a y-up frame in float32.

    f = (cos y·cos p, sin p, sin y·cos p), r = f × (0, 1, 0) (or (0, 0, 1) at the poles),
    u = r × f; c2w = A·[r u −f]·A with A = diag(1, −1, −1): camera forward in the world is
    (cos y·cos p, −sin p, −sin y·cos p).
    """
    yaw, pitch = yaw_pitch.to(torch.float64).unbind(-1)
    forward = torch.stack([yaw.cos() * pitch.cos(), pitch.sin(), yaw.sin() * pitch.cos()], -1).to(
        torch.float32
    )
    forward = F.normalize(forward, dim=-1)
    up_axis = torch.tensor([0.0, 1.0, 0.0]).expand_as(forward)
    right = torch.linalg.cross(forward, up_axis)
    degenerate = torch.linalg.vector_norm(right, dim=-1, keepdim=True) <= DEGENERATE_RIGHT_NORM
    right = torch.where(degenerate, torch.tensor([0.0, 0.0, 1.0]), right)
    right = F.normalize(right, dim=-1)
    up = F.normalize(torch.linalg.cross(right, forward), dim=-1)
    opengl_rotation = torch.stack([right, up, -forward], dim=-1)
    flip = torch.diag(torch.tensor([1.0, -1.0, -1.0]))
    camera_to_world = torch.eye(4).repeat(yaw_pitch.shape[0], 1, 1)
    camera_to_world[:, :3, :3] = flip @ opengl_rotation @ flip
    return camera_to_world


def panorama_bank(
    panorama: PanoramaU8, crop_size: int = RELEASED_CROP_SIZE, focal: float = RELEASED_CROP_FOCAL
) -> ReferenceBank:
    """The 42-view bank: crop_size² crops with fx = fy = focal and cx = cy = crop_size / 2."""
    _check_panorama(panorama)
    centre = crop_size / 2
    intrinsics = torch.tensor(
        [[focal, 0.0, centre], [0.0, focal, centre], [0.0, 0.0, 1.0]], dtype=torch.float64
    )
    camera_to_world = bank_camera_to_world(bank_yaw_pitch())
    images = _sample_crops(panorama, camera_to_world[:, :3, :3], crop_size, focal, centre)
    return ReferenceBank(images=images, intrinsics=intrinsics, camera_to_world=camera_to_world)


def _sample_crops(
    panorama: PanoramaU8, rotation: Tensor, crop_size: int, focal: float, centre: float
) -> BankImagesU8:
    """Perspective crops sampled from the panorama at integer pixel positions (no half pixel)."""
    height, width = panorama.shape[:2]
    pixel = torch.arange(crop_size, dtype=torch.float32)
    rays = torch.stack(
        [
            ((pixel[None, :] - centre) / focal).expand(crop_size, crop_size),
            (-(pixel[:, None] - centre) / focal).expand(crop_size, crop_size),
            torch.ones(crop_size, crop_size),
        ],
        dim=-1,
    )
    rays = F.normalize(rays, dim=-1)
    # Back in the y-up frame: the y-up basis [r u f] is A·R_cv·A with the forward column negated.
    flip = torch.diag(torch.tensor([1.0, -1.0, -1.0]))
    bases = flip @ rotation @ flip * torch.tensor([1.0, 1.0, -1.0])
    source = panorama.to(torch.float32)
    crops = []
    for basis in bases:  # one view at a time: a released bank view is 504² rays
        directions = torch.einsum("ij,hwj->hwi", basis, rays)
        theta = torch.atan2(directions[..., 2], directions[..., 0])
        phi = torch.arccos(directions[..., 1].clamp(-1.0, 1.0))
        x = torch.remainder((theta + math.pi) / (2 * math.pi) * width, width)
        y = (phi / math.pi * height).clamp(0.0, height - LAST_ROW_MARGIN)
        values = _bilinear_wrap_x(source, x, y)
        crops.append((values + ROUND_HALF_UP).clamp(0.0, U8_MAX).to(torch.uint8))
    return torch.stack(crops)


def _bilinear_wrap_x(image: Tensor, x: Tensor, y: Tensor) -> Tensor:
    """Bilinear samples of an [H, W, C] image; x wraps around (360°), y is clamped."""
    height, width = image.shape[:2]
    x0, y0 = torch.floor(x), torch.floor(y)
    wx, wy = (x - x0)[..., None], (y - y0)[..., None]
    x0 = x0.to(torch.int64) % width
    x1 = (x0 + 1) % width
    y0 = y0.to(torch.int64).clamp(0, height - 1)
    y1 = (y0 + 1).clamp(0, height - 1)
    top = image[y0, x0] * (1 - wx) + image[y0, x1] * wx
    bottom = image[y1, x0] * (1 - wx) + image[y1, x1] * wx
    return top * (1 - wy) + bottom * wy


def single_image_bank(
    image: Annotated[Tensor, "H W 3 uint8 RGB"],
    intrinsics: Intrinsics,
    world_to_camera: WorldToCamera,
) -> ReferenceBank:
    """The degraded bank of a single perspective image: the image is the only reference view."""
    if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != torch.uint8:
        raise PanoramaInputError(
            f"the image must be RGB uint8 [H, W, 3], got {tuple(image.shape)} {image.dtype}"
        )
    camera_to_world = torch.linalg.inv(world_to_camera.to(torch.float64).reshape(4, 4)).to(
        torch.float32
    )
    return ReferenceBank(
        images=image[None],
        intrinsics=intrinsics.to(torch.float64),
        camera_to_world=camera_to_world[None],
    )


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


def reference_image(
    bank: ReferenceBank, view: int, size: int
) -> Annotated[Tensor, "S S 3 uint8 RGB"]:
    """A bank view resized to size² with PIL bilinear, as upstream prepares ``cond2``."""
    picture = PILImage.fromarray(bank.images[view].cpu().numpy())
    return torch.from_numpy(np.asarray(picture.resize((size, size), PILImage.BILINEAR)).copy())


class ReferenceLatentCache:
    """Bank views encoded once, on first use, and reused for every frame that selects them.

    Upstream re-encodes the selected reference every frame; the bank is fixed, so its latents
    are keyed by view index only. ``encode`` maps a size² uint8 image to a model-space latent.
    """

    def __init__(self, bank: ReferenceBank, size: int, encode: Callable[[Tensor], Tensor]) -> None:
        self.bank = bank
        self.size = size
        self.encode = encode
        self._latents: dict[int, Tensor] = {}

    def __getitem__(self, view: int) -> Tensor:
        if view not in self._latents:
            self._latents[view] = self.encode(reference_image(self.bank, view, self.size))
        return self._latents[view]


# --- condition database and selection ------------------------------------------------------


@dataclass(frozen=True)
class ConditionDatabase:
    """Per bank view: the projection into the S×S canvas, its depth render and camera centre.

    Quirk kept from upstream: ``projections`` use the bank K scaled from the crop size to S,
    while ``depths`` are rendered with the *unscaled* K into the S×S canvas (about 4 px apart
    in the release). Rendering them consistently changes the selected view for some poses.
    """

    projections: ViewProjections
    depths: ViewDepths
    centres: Annotated[Tensor, "V 3 float32 camera centres"]

    def to(self, device: torch.device | str) -> ConditionDatabase:
        return ConditionDatabase(
            self.projections.to(device), self.depths.to(device), self.centres.to(device)
        )


def condition_database(
    bank: ReferenceBank, cloud: HalfPointCloud, render_size: int
) -> ConditionDatabase:
    crop_height, crop_width = bank.images.shape[1:3]
    scaled = bank.intrinsics.clone()
    scaled[0] *= render_size / crop_width
    scaled[1] *= render_size / crop_height
    camera_to_world = bank.camera_to_world.to(torch.float32)
    world_to_camera = torch.linalg.inv(camera_to_world.to(torch.float64)).to(torch.float32)
    projections = scaled.to(torch.float32) @ world_to_camera[:, :3, :4]
    device = cloud.xyz.device
    _, depths = render_points_hard(
        cloud,
        bank.intrinsics,
        torch.linalg.inv(camera_to_world.to(torch.float64)),
        render_size,
        render_size,
    )
    return ConditionDatabase(
        projections=projections.to(device),
        depths=depths,
        centres=camera_to_world[:, :3, 3].to(device),
    )


@dataclass(frozen=True)
class SelectionParams:
    """``select_best_condition_index`` settings; defaults are the release's ``default.yaml``."""

    sample_grid: int = 10
    center_grid: int = 15
    center_frac: float = 0.5
    eps_rel: float = 0.02
    eps_abs: float = 0.0
    px_radius: int = 0
    max_view_angle_deg: float = 180.0
    use_distance_weight: bool = True
    dist_min_m: float = 1.0
    dist_max_m: float = 20.0
    weight_near: float = 1.0
    weight_far: float = 0.0


#: The release's settings (``default.yaml``, which differ from the function's own defaults).
RELEASED_SELECTION = SelectionParams()


@dataclass(frozen=True)
class Selection:
    """The chosen view, its hits, the number of valid samples, every view's counts and scores."""

    best: int
    hits: int
    samples: int
    counts: Annotated[Tensor, "V int64"]
    scores: Annotated[Tensor, "V float32"]


def sample_pixels(
    height: int, width: int, params: SelectionParams, device: torch.device | str | None = None
) -> tuple[Tensor, Tensor]:
    """(u, v) of the sample grid: an outer grid minus the central box, plus a denser centre grid.

    float32 ``torch.linspace`` rounded half to even; the box bounds use Python's ``round``;
    duplicates are removed through the sorted flat index v·W + u.
    """

    def grid(x0: float, x1: float, y0: float, y1: float, count: int) -> tuple[Tensor, Tensor]:
        xs = torch.linspace(x0, x1, count, device=device)
        ys = torch.linspace(y0, y1, count, device=device)
        yy, xx = torch.meshgrid(ys, xs, indexing="ij")
        return torch.round(xx).to(torch.int64).flatten(), torch.round(yy).to(torch.int64).flatten()

    fraction = min(max(params.center_frac, 0.0), 1.0)
    u, v = grid(0, width - 1, 0, height - 1, params.sample_grid)
    if fraction > 0 and params.center_grid > 0:
        x0, x1 = (1 - fraction) * 0.5 * (width - 1), (1 + fraction) * 0.5 * (width - 1)
        y0, y1 = (1 - fraction) * 0.5 * (height - 1), (1 + fraction) * 0.5 * (height - 1)
        inside = (u >= round(x0)) & (u <= round(x1)) & (v >= round(y0)) & (v <= round(y1))
        centre_u, centre_v = grid(x0, x1, y0, y1, params.center_grid)
        flat = torch.unique(
            torch.cat([v[~inside], centre_v]) * width + torch.cat([u[~inside], centre_u])
        )
        u, v = flat % width, flat // width
    return u, v


def select_reference(
    database: ConditionDatabase,
    depth: Annotated[Tensor, "S S float32 z-depth of the target render"],
    intrinsics: Intrinsics,
    world_to_camera: WorldToCamera,
    params: SelectionParams = RELEASED_SELECTION,
) -> Selection:
    """The bank view whose depth render agrees best with the target's (depth-consistency test)."""
    height, width = depth.shape
    num_views = database.projections.shape[0]
    if database.depths.shape[1:] != depth.shape:
        raise PanoramaInputError(
            f"the target depth is {tuple(depth.shape)} but the condition database was built for "
            f"{tuple(database.depths.shape[1:])}: render the target at the database's size"
        )
    device = depth.device
    u, v = sample_pixels(height, width, params, device)
    sampled = depth[v, u]
    valid = sampled > 0
    u, v, sampled = u[valid], v[valid], sampled[valid]
    if u.numel() == 0:
        empty = torch.zeros(num_views, device=device)
        return Selection(best=0, hits=0, samples=0, counts=empty.to(torch.int64), scores=empty)

    # Upstream works from a float32 camera-to-world; recover it exactly from the canonical Tcw.
    camera_to_world = torch.linalg.inv(world_to_camera.to("cpu", torch.float64).reshape(4, 4))
    camera_to_world = camera_to_world.to(device=device, dtype=torch.float32)
    inverse_intrinsics = torch.linalg.inv(intrinsics.to(device=device, dtype=torch.float32))
    pixels = torch.stack(
        [u.to(torch.float32), v.to(torch.float32), torch.ones_like(sampled)], dim=1
    )
    camera_points = (pixels @ inverse_intrinsics.T) * sampled[:, None]
    upstream_world_to_camera = torch.linalg.inv(camera_to_world)
    rotation, translation = upstream_world_to_camera[:3, :3], upstream_world_to_camera[:3, 3]
    world_points = (camera_points - translation[None]) @ rotation
    homogeneous = torch.cat([world_points, torch.ones_like(world_points[:, :1])], dim=1)

    database = database.to(device)
    projected = torch.einsum("vij,mj->vmi", database.projections, homogeneous)
    z = projected[..., 2]
    column = torch.round(projected[..., 0] / (z + PROJECTION_EPS)).to(torch.int64)
    row = torch.round(projected[..., 1] / (z + PROJECTION_EPS)).to(torch.int64)
    view_depths = rearrange(database.depths, "v h w -> v (h w)")
    closest = torch.full_like(z, float("inf"))
    radius = params.px_radius
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            shifted_u, shifted_v = column + dx, row + dy
            on_view = (
                (shifted_u >= 0)
                & (shifted_u < width)
                & (shifted_v >= 0)
                & (shifted_v < height)
                & (z > 0)
            )
            flat = (shifted_v * width + shifted_u).clamp(0, height * width - 1)
            view_depth = torch.gather(view_depths, 1, flat)
            usable = on_view & (view_depth > 0)
            closest = torch.minimum(
                closest, torch.where(usable, (view_depth - z).abs(), float("inf"))
            )
    tolerance = torch.maximum(params.eps_rel * z, torch.full_like(z, params.eps_abs))
    hit = closest < tolerance

    target_centre = camera_to_world[:3, 3]
    if params.max_view_angle_deg < ANGLE_TEST_OFF_DEGREES:
        cos_limit = math.cos(math.radians(params.max_view_angle_deg))
        from_target = F.normalize(world_points - target_centre[None], dim=1, eps=PROJECTION_EPS)
        from_views = F.normalize(
            world_points[None] - database.centres[:, None], dim=2, eps=PROJECTION_EPS
        )
        hit &= (from_views * from_target[None]).sum(dim=2) >= cos_limit

    counts = hit.sum(dim=1)
    scores = counts.to(torch.float32)
    if params.use_distance_weight:
        distance = torch.linalg.vector_norm(database.centres - target_centre[None], dim=1)
        span = max(params.dist_max_m - params.dist_min_m, 1e-6)
        far_fraction = ((distance - params.dist_min_m) / span).clamp(0, 1)
        scores = scores * (
            params.weight_near + (params.weight_far - params.weight_near) * far_fraction
        )
    best = int(torch.argmax(scores))  # first maximum; all zero (target >= dist_max away) -> view 0
    return Selection(
        best=best, hits=int(counts[best]), samples=int(u.numel()), counts=counts, scores=scores
    )


# --- a prepared scene ------------------------------------------------------------------------


@dataclass(frozen=True)
class WorldFMScene:
    """Everything a frame needs from the scene: the point cache, the bank and its condition DB."""

    cloud: HalfPointCloud
    bank: ReferenceBank
    database: ConditionDatabase
    render_size: int

    def to(self, device: torch.device | str) -> WorldFMScene:
        """The same scene with its geometry on ``device`` (bank images stay on the CPU for PIL)."""
        return WorldFMScene(
            self.cloud.to(device), self.bank, self.database.to(device), self.render_size
        )


def panorama_scene(
    panorama: PanoramaU8,
    distance: Annotated[Tensor, "h w ray distance at any 2:1 size; <= 0 or non-finite: unknown"],
    render_size: int,
    distance_scale: float = 1.0,
    crop_size: int = RELEASED_CROP_SIZE,
    focal: float = RELEASED_CROP_FOCAL,
) -> WorldFMScene:
    """The scene of an equirectangular panorama and its distance map (upstream step 2).

    As upstream ``postprocess_panorama``: the panorama is fitted within 8192×4096, the distance
    map is scaled by ``distance_scale`` and brought to the panorama size by
    :func:`prepare_depth`, then the points and the bank are built.
    """
    panorama = fit_panorama(panorama)
    if distance.ndim != 2 or distance.shape[1] != 2 * distance.shape[0]:
        raise PanoramaInputError(
            f"the distance map is {tuple(distance.shape)}: it must be a 2:1 equirectangular "
            "[H, W] map of the same panorama (any resolution; it is resampled)"
        )
    height, width = panorama.shape[:2]
    distance = prepare_depth(distance, distance_scale, width, height)
    cloud = half_point_cloud(*panorama_points(panorama, distance))
    bank = panorama_bank(panorama, crop_size, focal)
    return WorldFMScene(cloud, bank, condition_database(bank, cloud, render_size), render_size)


def image_scene(
    image: Annotated[Tensor, "H W 3 uint8 RGB"],
    depth: Annotated[Tensor, "H W z-depth"],
    intrinsics: Intrinsics,
    world_to_camera: WorldToCamera,
    render_size: int,
) -> WorldFMScene:
    """The degraded scene of one perspective image with its own depth: one reference view."""
    cloud = half_point_cloud(*image_points(image, depth, intrinsics, world_to_camera))
    bank = single_image_bank(image, intrinsics, world_to_camera)
    return WorldFMScene(cloud, bank, condition_database(bank, cloud, render_size), render_size)
