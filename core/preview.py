"""A picture of a camera path over the scene: what the artist checks before rendering anything.

Data flow: ``Scene`` + ``CameraPath`` → **here** → one RGB image, two orthographic panels side by
side: the scene's point cloud seen from above (x right, z up the page) and from the side (z right,
y down the page, as OpenCV's y points down). The path is drawn as a line through the camera
centres, a frustum every few frames, a green disc at the start and a red disc at the end.

The point cloud is shown as a density map: every panel pixel gets the mean colour of the points
that fall into it, brightened where many points pile up. A z-buffer would be wrong for a room seen
from above (the ceiling would hide everything); the density map shows floor, walls and objects at
once, which is what one needs to judge where the camera goes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from einops import rearrange
from PIL import Image as PILImage
from PIL import ImageDraw
from torch import Tensor

from .camera import invert_rigid
from .paths import CameraPath
from .scene import Scene
from .types import Image, Points

# Panel axes: which world coordinates go right and down on the page (sign −1 flips an axis).
TOP_VIEW = ((0, 1.0), (2, -1.0))  # x right, z up the page
SIDE_VIEW = ((2, 1.0), (1, 1.0))  # z right, y down the page (OpenCV y points down)
TOP_LABEL = "top: x right, z up"
SIDE_LABEL = "side: z right, y down"

BACKGROUND = (24, 24, 28)
PATH_COLOUR = (255, 214, 64)
START_COLOUR, END_COLOUR = (64, 220, 96), (235, 64, 64)
LABEL_COLOUR = (220, 220, 220)
UINT8_MAX = 255

# Robust extent of the cloud: ignore the farthest percent of points (sky, depth outliers).
EXTENT_QUANTILES = (0.01, 0.99)
PANEL_MARGIN = 0.06  # fraction of the panel left empty around the content
FRUSTUM_FRACTION = 0.07  # frustum length as a fraction of the panel's world extent
DENSITY_FLOOR = 0.35  # brightness of a pixel hit by a single point; full brightness at the 90th
DENSITY_QUANTILE = 0.9  # percentile of the per-pixel point count
SUBSAMPLE_SEED = 0
CLOUD_FRAMES = 8  # frames of a video whose pixels make up the point cloud
GAP_FILL_KERNEL = 3  # empty panel pixels take the mean of their neighbours (sparse far points)
MARKER_RADIUS_FRACTION = 0.012
LINE_WIDTH_FRACTION = 0.004


@dataclass(frozen=True)
class PathPreviewStyle:
    """Size and density of the preview.

    panel_size:     height and width in pixels of each of the two panels
    frustum_every:  draw a frustum every this many frames (0 = about eight along the path)
    max_points:     the point cloud is subsampled evenly to at most this many points
    """

    panel_size: int = 512
    frustum_every: int = 0
    max_points: int = 400_000

    def __post_init__(self) -> None:
        if self.panel_size < 64:
            raise ValueError(f"panel_size must be at least 64 pixels, got {self.panel_size}")
        if self.frustum_every < 0:
            raise ValueError(
                f"frustum_every must be 0 (automatic) or positive, got {self.frustum_every}"
            )
        if self.max_points < 1:
            raise ValueError(f"max_points must be positive, got {self.max_points}")


FRUSTUMS_WHEN_AUTOMATIC = 8


def scene_point_cloud(scene: Scene, max_points: int) -> tuple[Points, Tensor]:
    """World points ``[P, 3]`` and their colours ``[P, 3]`` in [0, 1] of pixels with depth.

    Up to ``CLOUD_FRAMES`` evenly spaced frames are used and at most ``max_points`` of their pixels
    are unprojected, so a long video costs no more than a short one. Pixels are unprojected at
    integer centres (``K⁻¹·[x, y, 1]·z``), the official convention.
    """
    frame_count = scene.depth.shape[0]
    frames = (
        torch.linspace(0, frame_count - 1, min(frame_count, CLOUD_FRAMES)).round().long().unique()
    )
    depth = scene.depth[frames.to(scene.depth.device)].double().cpu()
    frame, row, column = torch.nonzero(torch.isfinite(depth) & (depth > 0), as_tuple=True)
    if frame.shape[0] > max_points:
        # A regular stride would alias with the pixel grid (moiré stripes); a fixed-seed shuffle
        # keeps the preview identical between runs.
        generator = torch.Generator().manual_seed(SUBSAMPLE_SEED)
        keep = torch.randperm(frame.shape[0], generator=generator)[:max_points]
        frame, row, column = frame[keep], row[keep], column[keep]
    source = frames[frame]
    pixels = torch.stack([column, row, torch.ones_like(row)], dim=-1).double()
    intrinsics = scene.intrinsics.double().cpu()[source]
    rays = torch.einsum("pij,pj->pi", torch.linalg.inv(intrinsics), pixels)
    camera_points = rays * depth[frame, row, column][:, None]
    camera_to_world = invert_rigid(scene.world_to_camera.double().cpu())[source]
    points = torch.einsum("pij,pj->pi", camera_to_world[:, :3, :3], camera_points)
    points = points + camera_to_world[:, :3, 3]
    device = scene.frames.device
    picked = scene.frames[source.to(device), :, row.to(device), column.to(device)]
    colours = (picked.double().cpu() + 1.0) / 2.0
    return points, colours.clamp(0.0, 1.0)


def draw_path_preview(
    scene: Scene, path: CameraPath, style: PathPreviewStyle = PathPreviewStyle()
) -> Image:
    """The top and side panels side by side, ``[panel, 2·panel, 3]`` in [0, 1]."""
    points, colours = scene_point_cloud(scene, style.max_points)
    camera_to_world = invert_rigid(path.world_to_camera.double())
    intrinsics = scene.intrinsics[0] if path.intrinsics is None else path.intrinsics
    height, width = scene.depth.shape[1:]
    panels = [
        _draw_panel(
            points,
            colours,
            camera_to_world,
            intrinsics.double(),
            (width, height),
            view,
            label,
            style,
        )
        for view, label in ((TOP_VIEW, TOP_LABEL), (SIDE_VIEW, SIDE_LABEL))
    ]
    return torch.cat(panels, dim=1)


def _draw_panel(
    points: Points,
    colours: Tensor,
    camera_to_world: Tensor,
    intrinsics: Tensor,
    image_size: tuple[int, int],
    view: tuple[tuple[int, float], tuple[int, float]],
    label: str,
    style: PathPreviewStyle,
) -> Image:
    size = style.panel_size
    axes = torch.tensor([axis for axis, _ in view])
    signs = torch.tensor([sign for _, sign in view], dtype=torch.float64)
    centres = camera_to_world[:, :3, 3]

    def to_page(world: Tensor) -> Tensor:
        return world[..., axes] * signs

    page_points, page_centres = to_page(points), to_page(centres)
    low, high = _extent(page_points, page_centres)
    scale = (1.0 - 2 * PANEL_MARGIN) * size / float((high - low).max())
    # Centre the content: the shorter side of the extent gets the extra room.
    offset = (size - scale * (high - low)) / 2 - scale * low

    def to_pixels(world: Tensor) -> Tensor:
        return to_page(world) * scale + offset

    canvas = _density_image(to_pixels(points), colours, size)
    picture = PILImage.fromarray(canvas.numpy())
    draw = ImageDraw.Draw(picture)
    line_width = max(1, round(LINE_WIDTH_FRACTION * size))
    frustum_length = FRUSTUM_FRACTION * float((high - low).max())

    path_pixels = to_pixels(centres).tolist()
    if len(path_pixels) > 1:
        draw.line([tuple(p) for p in path_pixels], fill=PATH_COLOUR, width=line_width)
    frame_count = camera_to_world.shape[0]
    every = style.frustum_every or max(1, frame_count // FRUSTUMS_WHEN_AUTOMATIC)
    for index in sorted(set(range(0, frame_count, every)) | {frame_count - 1}):
        corners = _frustum_corners(camera_to_world[index], intrinsics, image_size, frustum_length)
        corner_pixels = [tuple(p) for p in to_pixels(corners).tolist()]
        colour = _along_path_colour(index / max(frame_count - 1, 1))
        for corner in corner_pixels:
            draw.line([tuple(path_pixels[index]), corner], fill=colour, width=line_width)
        draw.line(corner_pixels + corner_pixels[:1], fill=colour, width=line_width)

    radius = max(2, round(MARKER_RADIUS_FRACTION * size))
    for position, colour in ((path_pixels[0], START_COLOUR), (path_pixels[-1], END_COLOUR)):
        x, y = position
        draw.ellipse(
            [x - radius, y - radius, x + radius, y + radius], fill=colour, outline=LABEL_COLOUR
        )
    draw.text((radius, radius), label, fill=LABEL_COLOUR)
    return torch.from_numpy(np.asarray(picture, dtype=np.uint8).copy()).float() / UINT8_MAX


def _extent(page_points: Tensor, page_centres: Tensor) -> tuple[Tensor, Tensor]:
    """Page-space bounds covering the bulk of the cloud and every camera centre."""
    low, high = page_centres.amin(0), page_centres.amax(0)
    if page_points.shape[0]:
        quantiles = torch.tensor(EXTENT_QUANTILES, dtype=page_points.dtype)
        cloud = torch.quantile(
            page_points[:: max(1, page_points.shape[0] // 100_000)], quantiles, dim=0
        )
        low, high = torch.minimum(low, cloud[0]), torch.maximum(high, cloud[1])
    # A path without extent and no cloud (a static camera over an empty scene) still needs a scale.
    span = (high - low).max().clamp_min(1e-6)
    return low - 0.5 * (span - (high - low)), high + 0.5 * (span - (high - low))


def _density_image(pixels: Tensor, colours: Tensor, size: int) -> Tensor:
    """uint8 ``[size, size, 3]``: mean point colour per pixel, brightened with the point count."""
    columns, rows = pixels[:, 0].floor().long(), pixels[:, 1].floor().long()
    inside = (columns >= 0) & (columns < size) & (rows >= 0) & (rows < size)
    flat_index = rows[inside] * size + columns[inside]
    colour_sum = torch.zeros(size * size, 3, dtype=torch.float64).index_add_(
        0, flat_index, colours[inside]
    )
    counts = torch.zeros(size * size, dtype=torch.float64).index_add_(
        0, flat_index, torch.ones_like(flat_index, dtype=torch.float64)
    )
    colour_sum, counts = _fill_gaps(colour_sum, counts, size)
    hit = counts > 0
    mean_colour = colour_sum / counts.clamp_min(1e-9)[:, None]
    full_count = torch.quantile(counts[hit], DENSITY_QUANTILE) if hit.any() else torch.tensor(1.0)
    density = (counts.log1p() / full_count.log1p().clamp_min(1e-6)).clamp(0, 1)
    brightness = DENSITY_FLOOR + (1 - DENSITY_FLOOR) * density
    background = torch.tensor(BACKGROUND, dtype=torch.float64) / UINT8_MAX
    image = torch.where(hit[:, None], mean_colour * brightness[:, None], background)
    return (image.reshape(size, size, 3) * UINT8_MAX).round().to(torch.uint8)


def _fill_gaps(colour_sum: Tensor, counts: Tensor, size: int) -> tuple[Tensor, Tensor]:
    """Give empty pixels the pooled sums of their neighbourhood; occupied pixels keep their own."""
    grid = rearrange(
        torch.cat([colour_sum, counts[:, None]], dim=1), "(h w) c -> 1 c h w", h=size, w=size
    )
    pooled = torch.nn.functional.avg_pool2d(
        grid, GAP_FILL_KERNEL, stride=1, padding=GAP_FILL_KERNEL // 2
    )
    filled = torch.where(grid[:, -1:] > 0, grid, pooled)
    filled = rearrange(filled, "1 c h w -> (h w) c")
    return filled[:, :-1], filled[:, -1]


def _frustum_corners(
    camera_to_world: Tensor, intrinsics: Tensor, image_size: tuple[int, int], length: float
) -> Tensor:
    """World positions ``[4, 3]`` of the image corners pushed ``length`` along the optical axis."""
    width, height = image_size
    corners = torch.tensor(
        [[0, 0, 1], [width, 0, 1], [width, height, 1], [0, height, 1]], dtype=torch.float64
    )
    rays = corners @ torch.linalg.inv(intrinsics).T
    return (rays * length) @ camera_to_world[:3, :3].T + camera_to_world[:3, 3]


def _along_path_colour(progress: float) -> tuple[int, int, int]:
    """From the start colour to the end colour as the frame index goes from first to last."""
    return tuple(round(s + (e - s) * progress) for s, e in zip(START_COLOUR, END_COLOUR))
