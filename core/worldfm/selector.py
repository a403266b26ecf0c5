"""WorldFM reference selection: the bank view whose depth agrees best with the target render.

Place in the data flow: the bank's condition database (``bank.py``: each view's projection and
depth render) and the target's anchor depth (``core/point_render.py``) -> :func:`select_reference`
-> the view whose cached latent is the frame model's reference condition ``cond2``.

Follows ``modules/depth_selector.py`` of inspatio/worldfm at 8881a7b
(``select_best_condition_index``): target pixels on a sample grid are unprojected and counted as
hits in each view whose depth render agrees within a relative tolerance. Float32 throughout, as
upstream, because the hit counts are compared exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from ..types import Intrinsics, WorldToCamera
from .panorama import PanoramaInputError

ViewProjections = Annotated[Tensor, "V 3 4 float32 K·[R|t] for the S×S canvas"]
ViewDepths = Annotated[Tensor, "V S S float32 z-depth, 0 where empty"]

#: Added to z before dividing, as upstream does, in the projection into bank views.
PROJECTION_EPS = 1e-8
#: Angles at or above this disable the view-angle test.
ANGLE_TEST_OFF_DEGREES = 179.999


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
