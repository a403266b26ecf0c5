"""WorldFM reference bank and prepared scene: 42 perspective crops, their depth renders, the scene.

Place in the data flow: the panorama's point cloud (``panorama.py``) and a fixed bank of 42
perspective crops of the panorama (or, degraded, the single input image) make a
:class:`WorldFMScene`. Each bank view's depth render forms the condition database that
``selector.py`` compares with every target's anchor render; the chosen view's latent (encoded
once per view and cached) is the frame model's reference condition ``cond2``.

Follows inspatio/worldfm at 8881a7b: ``modules/pano_postprocess.py`` (``generate_conditions``)
and ``modules/depth_selector.py`` (``build_condition_db_in_memory``). Float32 is kept wherever
upstream uses it, because the bank pixels are compared exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image as PILImage
from torch import Tensor

from ..camera import pose_from_rotation_translation, world_to_camera_from_camera_to_world
from ..point_render import U8_MAX, HalfPointCloud, half_point_cloud, render_points_hard
from ..types import CameraToWorld, Intrinsics, WorldToCamera
from .panorama import (
    PanoramaInputError,
    PanoramaU8,
    check_panorama,
    fit_panorama,
    image_points,
    panorama_points,
    prepare_depth,
)
from .selector import ConditionDatabase, select_reference

# fit_panorama and select_reference are re-exported: nodes/ imports them from here.
__all__ = [
    "RELEASED_CROP_FOCAL",
    "RELEASED_CROP_SIZE",
    "ReferenceBank",
    "ReferenceLatentCache",
    "WorldFMScene",
    "bank_camera_to_world",
    "bank_yaw_pitch",
    "condition_database",
    "fit_panorama",
    "image_scene",
    "input_view_world_to_camera",
    "panorama_bank",
    "panorama_scene",
    "reference_image",
    "select_reference",
    "single_image_bank",
]

BankImagesU8 = Annotated[Tensor, "V h w 3 uint8 RGB"]

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
RELEASED_CROP_SIZE = 504
RELEASED_CROP_FOCAL = 320.0
#: Right vector used when forward is parallel to the up axis (the two pole views).
DEGENERATE_RIGHT_NORM = 1e-8
#: Keeps y = φ/π·H strictly inside the last row.
LAST_ROW_MARGIN = 1e-6
#: Bank pixels are rounded half up (uint8(value + 0.5)), unlike torch.round.
ROUND_HALF_UP = 0.5
#: WorldFM's canonical input view (SPEC-worldfm.md §5), camera-to-world: it looks along +x, its
#: right is −z and its up −y, so single-image scenes and panoramas share every camera path.
INPUT_VIEW_CAMERA_TO_WORLD_ROTATION = ((0.0, 0.0, 1.0), (0.0, 1.0, 0.0), (-1.0, 0.0, 0.0))


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
    check_panorama(panorama)
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


def input_view_world_to_camera() -> WorldToCamera:
    """The canonical world-to-camera of WorldFM's input view, at the world origin."""
    camera_to_world = pose_from_rotation_translation(
        torch.tensor(INPUT_VIEW_CAMERA_TO_WORLD_ROTATION, dtype=torch.float64),
        torch.zeros(3, dtype=torch.float64),
    )
    return world_to_camera_from_camera_to_world(camera_to_world)


def image_scene(
    image: Annotated[Tensor, "H W 3 uint8 RGB"],
    depth: Annotated[Tensor, "H W z-depth"],
    intrinsics: Intrinsics,
    world_to_camera: WorldToCamera,
    render_size: int,
) -> WorldFMScene:
    """The degraded scene of one perspective image with its own depth: one reference view.

    The image's camera is usually :func:`input_view_world_to_camera`, where upstream puts the
    input image, so that WorldFM camera paths apply unchanged.
    """
    cloud = half_point_cloud(*image_points(image, depth, intrinsics, world_to_camera))
    bank = single_image_bank(image, intrinsics, world_to_camera)
    return WorldFMScene(cloud, bank, condition_database(bank, cloud, render_size), render_size)
