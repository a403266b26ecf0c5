"""The demo of ``python -m inspatio_nodes demo``: a procedural room rendered along a camera path.

It exercises the explicit spatial constraint with no download and no model: a textured room with a
bouncing ball is ray-cast analytically (so its depth is exact), turned into a video ``Scene``, and
forward-splatted along a preset camera path (``core/paths.py`` → ``core/splat.py``). The render,
the validity mask, a contact sheet (source | render | mask) and the camera-path preview are
written as PNGs. Given weight files it also runs the full generation through the core world
sampler (the data flow of ARCHITECTURE.md, end to end).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from einops import rearrange
from PIL import Image as PILImage
from PIL import ImageDraw
from torch import Tensor

from .core.types import DepthMaps, Intrinsics, VideoFrames
from .nodes.comfy import compute_device, frames_to_image, image_to_pil, intermediate_device

# --- the procedural room -------------------------------------------------------------------------
# World frame = the source camera's OpenCV frame: x right, y down, z forward, camera at the origin.
# Every primary ray is written with a unit z component, so a ray's hit distance parameter *is* the
# z-depth the renderer expects (no cosine correction anywhere).

NO_HIT = float("inf")


@dataclass(frozen=True)
class RoomLayout:
    """Sizes of the demo room in metres (y grows downwards, as in OpenCV)."""

    half_width: float = 2.2
    floor_y: float = 1.1
    ceiling_y: float = -1.5
    back_wall_z: float = 6.0
    checker_size: float = 0.5
    brick_height: float = 0.22
    brick_length: float = 0.5
    mortar_width: float = 0.02
    stripe_period: float = 0.3
    ball_radius: float = 0.35
    ball_depth: float = 3.2
    ball_sway: float = 0.8
    bounce_height: float = 0.9
    pedestal_min: tuple[float, float, float] = (0.7, 0.3, 3.8)
    pedestal_max: tuple[float, float, float] = (1.6, 1.1, 4.7)
    painting_min: tuple[float, float] = (-1.2, -1.1)
    painting_max: tuple[float, float] = (0.4, -0.1)
    lamp: tuple[float, float, float] = (0.0, -1.3, 4.2)
    ambient: float = 0.45


# Base colours (linear RGB in [0, 1]) of each surface; the textures modulate them.
FLOOR_LIGHT, FLOOR_DARK = (0.78, 0.60, 0.40), (0.50, 0.34, 0.20)
CEILING_COLOUR, LAMP_COLOUR = (0.88, 0.88, 0.85), (1.0, 0.97, 0.85)
LEFT_WALL_LIGHT, LEFT_WALL_DARK = (0.35, 0.62, 0.66), (0.24, 0.47, 0.52)
BRICK_COLOUR, MORTAR_COLOUR = (0.72, 0.36, 0.26), (0.85, 0.82, 0.78)
BACK_WALL_COLOUR, FRAME_COLOUR = (0.93, 0.88, 0.74), (0.30, 0.22, 0.15)
PAINTING_RINGS = ((0.16, 0.28, 0.62), (0.95, 0.78, 0.20), (0.85, 0.25, 0.30), (0.20, 0.60, 0.35))
BALL_COLOURS = ((0.90, 0.15, 0.15), (0.97, 0.97, 0.95))
PEDESTAL_COLOUR = (0.42, 0.46, 0.60)
BALL_SEGMENTS = 8
PAINTING_RING_WIDTH = 0.12
FRAME_WIDTH = 0.06


def _colour(rgb: tuple[float, float, float], like: Tensor) -> Tensor:
    return torch.tensor(rgb, dtype=like.dtype).expand(*like.shape[:-1], 3)


def _blend(mask: Tensor, when_true: Tensor, when_false: Tensor) -> Tensor:
    return torch.where(mask[..., None], when_true, when_false)


def _plane_hit(directions: Tensor, axis: int, position: float) -> Tensor:
    """Ray parameter to the plane ``coordinate[axis] == position`` (rays start at the origin)."""
    component = directions[..., axis]
    distance = position / component.where(component != 0, torch.full_like(component, NO_HIT))
    return distance.where(distance > 0, torch.full_like(distance, NO_HIT))


def _sphere_hit(directions: Tensor, centre: Tensor, radius: float) -> Tensor:
    along = directions @ centre
    squared_length = (directions * directions).sum(-1)
    discriminant = along**2 - squared_length * (centre @ centre - radius**2)
    distance = (along - discriminant.clamp_min(0).sqrt()) / squared_length
    return distance.where((discriminant >= 0) & (distance > 0), torch.full_like(distance, NO_HIT))


def _box_hit(directions: Tensor, box_min: Tensor, box_max: Tensor) -> Tensor:
    """Slab test of an axis-aligned box; IEEE infinities handle rays parallel to a slab."""
    to_min, to_max = box_min / directions, box_max / directions
    entry = torch.minimum(to_min, to_max).amax(-1)
    exit_ = torch.maximum(to_min, to_max).amin(-1)
    return entry.where((entry <= exit_) & (entry > 0), torch.full_like(entry, NO_HIT))


def _floor_texture(points: Tensor, room: RoomLayout) -> Tensor:
    cells = torch.floor(points[..., 0] / room.checker_size) + torch.floor(
        points[..., 2] / room.checker_size
    )
    light = (cells % 2) == 0
    return _blend(light, _colour(FLOOR_LIGHT, points), _colour(FLOOR_DARK, points))


def _ceiling_texture(points: Tensor, room: RoomLayout) -> Tensor:
    lamp_x, _, lamp_z = room.lamp
    under_lamp = ((points[..., 0] - lamp_x).abs() < room.checker_size) & (
        (points[..., 2] - lamp_z).abs() < room.checker_size
    )
    return _blend(under_lamp, _colour(LAMP_COLOUR, points), _colour(CEILING_COLOUR, points))


def _left_wall_texture(points: Tensor, room: RoomLayout) -> Tensor:
    stripe = torch.floor(points[..., 1] / room.stripe_period) % 2 == 0
    return _blend(stripe, _colour(LEFT_WALL_LIGHT, points), _colour(LEFT_WALL_DARK, points))


def _right_wall_texture(points: Tensor, room: RoomLayout) -> Tensor:
    row = torch.floor(points[..., 1] / room.brick_height)
    # Alternate rows are shifted by half a brick, as a real running bond is.
    along = points[..., 2] / room.brick_length + 0.5 * (row % 2)
    in_mortar = (
        torch.frac(points[..., 1] / room.brick_height) * room.brick_height < room.mortar_width
    ) | (torch.frac(along) * room.brick_length < room.mortar_width)
    return _blend(in_mortar, _colour(MORTAR_COLOUR, points), _colour(BRICK_COLOUR, points))


def _back_wall_texture(points: Tensor, room: RoomLayout) -> Tensor:
    x, y = points[..., 0], points[..., 1]
    (left, top), (right, bottom) = room.painting_min, room.painting_max
    inside_frame = (x > left) & (x < right) & (y > top) & (y < bottom)
    inside_canvas = (
        (x > left + FRAME_WIDTH)
        & (x < right - FRAME_WIDTH)
        & (y > top + FRAME_WIDTH)
        & (y < bottom - FRAME_WIDTH)
    )
    radius = torch.hypot(x - (left + right) / 2, y - (top + bottom) / 2)
    ring = (radius / PAINTING_RING_WIDTH).floor().long() % len(PAINTING_RINGS)
    ring_colours = torch.tensor(PAINTING_RINGS, dtype=points.dtype)[ring]
    wall = _blend(inside_frame, _colour(FRAME_COLOUR, points), _colour(BACK_WALL_COLOUR, points))
    return _blend(inside_canvas, ring_colours, wall)


def _ball_texture(normals: Tensor) -> Tensor:
    longitude = torch.atan2(normals[..., 0], normals[..., 2])
    segment = torch.floor((longitude + math.pi) / (2 * math.pi) * BALL_SEGMENTS) % 2 == 0
    return _blend(segment, _colour(BALL_COLOURS[0], normals), _colour(BALL_COLOURS[1], normals))


def _box_normals(points: Tensor, box_min: Tensor, box_max: Tensor) -> Tensor:
    """Outward normal of the box face each point lies on: the axis where it is farthest out."""
    centre, half_size = (box_min + box_max) / 2, (box_max - box_min) / 2
    offset = (points - centre) / half_size
    axis = offset.abs().argmax(-1)
    normals = torch.nn.functional.one_hot(axis, 3).to(points.dtype)
    return normals * torch.sign(offset.gather(-1, axis[..., None]))


def ball_centre(frame_index: int, frame_count: int, room: RoomLayout) -> Tensor:
    """Where the ball is at a frame: one bounce and one sideways sway over the clip."""
    phase = frame_index / max(frame_count - 1, 1)
    lift = room.bounce_height * abs(math.sin(2 * math.pi * phase))
    sway = room.ball_sway * math.sin(math.pi * phase) - room.ball_sway / 2
    return torch.tensor(
        [sway - 0.4, room.floor_y - room.ball_radius - lift, room.ball_depth], dtype=torch.float64
    )


def render_room(
    intrinsics: Intrinsics,
    width: int,
    height: int,
    frame_count: int,
    room: RoomLayout = RoomLayout(),
) -> tuple[VideoFrames, DepthMaps]:
    """Frames ``[F, 3, H, W]`` in [-1, 1] and their exact z-depth ``[F, H, W]``, seen from the origin."""
    K = intrinsics.double()
    rows, columns = torch.meshgrid(
        torch.arange(height, dtype=torch.float64),
        torch.arange(width, dtype=torch.float64),
        indexing="ij",
    )
    # Integer pixel centres, as in the official unprojection (no +0.5).
    directions = torch.stack(
        [(columns - K[0, 2]) / K[0, 0], (rows - K[1, 2]) / K[1, 1], torch.ones_like(columns)],
        dim=-1,
    )
    box_min, box_max = (
        torch.tensor(room.pedestal_min, dtype=torch.float64),
        torch.tensor(room.pedestal_max, dtype=torch.float64),
    )
    static_hits = torch.stack(
        [
            _plane_hit(directions, 1, room.floor_y),
            _plane_hit(directions, 1, room.ceiling_y),
            _plane_hit(directions, 0, -room.half_width),
            _plane_hit(directions, 0, room.half_width),
            _plane_hit(directions, 2, room.back_wall_z),
            _box_hit(directions, box_min, box_max),
        ]
    )
    # Static surfaces are shaded once; only the ball changes between frames.
    static_depth, static_surface = static_hits.min(0)
    static_points = directions * static_depth[..., None]
    plane_normals = torch.tensor(
        [[0, -1, 0], [0, 1, 0], [1, 0, 0], [-1, 0, 0], [0, 0, -1]], dtype=torch.float64
    )
    normals = torch.where(
        (static_surface == len(plane_normals))[..., None],
        _box_normals(static_points, box_min, box_max),
        plane_normals[static_surface.clamp_max(len(plane_normals) - 1)],
    )
    textures = torch.stack(
        [
            _floor_texture(static_points, room),
            _ceiling_texture(static_points, room),
            _left_wall_texture(static_points, room),
            _right_wall_texture(static_points, room),
            _back_wall_texture(static_points, room),
            _colour(PEDESTAL_COLOUR, static_points),
        ]
    )
    static_colour = textures.gather(0, static_surface[None, ..., None].expand(1, -1, -1, 3))[0]
    static_colour = static_colour * _lighting(static_points, normals, room)

    frames, depths = [], []
    for frame_index in range(frame_count):
        centre = ball_centre(frame_index, frame_count, room)
        ball_depth = _sphere_hit(directions, centre, room.ball_radius)
        on_ball = ball_depth < static_depth
        ball_points = directions * ball_depth[..., None]
        ball_normals = (ball_points - centre) / room.ball_radius
        ball_colour = _ball_texture(ball_normals) * _lighting(ball_points, ball_normals, room)
        frames.append(_blend(on_ball, ball_colour, static_colour))
        depths.append(torch.where(on_ball, ball_depth, static_depth))
    colour = torch.stack(frames).clamp(0, 1).float()
    return rearrange(colour, "f h w c -> f c h w") * 2 - 1, torch.stack(depths).float()


def _lighting(points: Tensor, normals: Tensor, room: RoomLayout) -> Tensor:
    """Ambient plus Lambert from the ceiling lamp: gives each face of the room its own shade."""
    to_lamp = torch.tensor(room.lamp, dtype=points.dtype) - points
    to_lamp = to_lamp / torch.linalg.vector_norm(to_lamp, dim=-1, keepdim=True).clamp_min(1e-9)
    lambert = (normals * to_lamp).sum(-1, keepdim=True).clamp_min(0)
    return room.ambient + (1 - room.ambient) * lambert


# --- the demo run --------------------------------------------------------------------------------

DEFAULT_OUT = Path("out") / "demo"
DEFAULT_PRESET = "orbit_left"
DEFAULT_FRAMES = 33  # 2 s at 16 fps; a 4k + 1 count that is also 3 whole blocks (9 latent frames)
DEFAULT_FPS = 16.0
DEFAULT_FOV_DEGREES = 75.0
DEFAULT_WIDTH, DEFAULT_HEIGHT = 832, 480
CONTACT_COLUMNS = 6
THUMBNAIL_WIDTH = 208
LABEL_WIDTH = 96
SHEET_PADDING = 6
SHEET_BACKGROUND = (18, 18, 22)
SHEET_TEXT = (230, 230, 230)
GENERATION_FILES = ("checkpoint", "vae", "prompt_embeds")


class DemoError(ValueError):
    """A demo option that cannot be used; the message says which and what to do."""


@dataclass(frozen=True)
class DemoOptions:
    """Everything ``python -m inspatio_nodes demo`` can be asked for (see ``__main__.py``)."""

    out: Path = DEFAULT_OUT
    preset: str = DEFAULT_PRESET
    strength: float = 1.0
    frames: int = DEFAULT_FRAMES
    width: int = DEFAULT_WIDTH
    height: int = DEFAULT_HEIGHT
    fov_degrees: float = DEFAULT_FOV_DEGREES
    fps: float = DEFAULT_FPS
    checkpoint: Path | None = None
    vae: Path | None = None
    taehv: Path | None = None
    prompt_embeds: Path | None = None
    seed: int = 0

    def generation_requested(self) -> bool:
        given = {name: getattr(self, name) is not None for name in GENERATION_FILES}
        if any(given.values()) and not all(given.values()):
            missing = ", ".join(
                f"--{name.replace('_', '-')}" for name, present in given.items() if not present
            )
            raise DemoError(
                f"full generation needs --checkpoint, --vae and --prompt-embeds together; missing: {missing}"
            )
        if self.taehv is not None and not all(given.values()):
            raise DemoError(
                "--taehv only chooses the decoder of a full generation: add --checkpoint, --vae "
                "and --prompt-embeds"
            )
        return all(given.values())


class HostVAE:
    """Stands in for ComfyUI's VAE object outside ComfyUI: the codec sits under ``first_stage_model``,
    so the model-side nodes read its weights exactly as they read a VAE loaded by core Load VAE."""

    def __init__(self, codec: torch.nn.Module):
        self.first_stage_model = codec
        self.vae_dtype = next(codec.parameters()).dtype


def run_demo(options: DemoOptions) -> dict[str, Path]:
    """Render the room along the preset path, write the PNGs, and generate when weights are given.

    Returns the written files by role (``contact_sheet``, ``camera_path``, and one folder per
    frame sequence).
    """
    from .core.camera import intrinsics_from_fov
    from .core.depth import foreground_depth
    from .core.path_presets import PRESETS, preset_path
    from .core.preview import draw_path_preview
    from .core.render import render_condition
    from .core.scene import scene_from_video

    generate = options.generation_requested()
    if options.preset not in PRESETS:
        raise DemoError(f"unknown preset {options.preset!r}; valid presets: {', '.join(PRESETS)}")
    intrinsics = intrinsics_from_fov(options.fov_degrees, options.width, options.height)
    frames, depth = render_room(intrinsics, options.width, options.height, options.frames)
    scene = scene_from_video(
        frames, depth, intrinsics, fps=options.fps, resolution=(options.height, options.width)
    )
    amplitude = options.strength * PRESETS[options.preset].default_amplitude
    path = preset_path(
        options.preset,
        options.frames,
        scene.world_to_camera,
        amplitude=amplitude,
        easing="ease_in_out",
        scene_depth=foreground_depth(scene.depth),
    )
    condition = render_condition(scene, path, device=compute_device()).to(intermediate_device())

    options.out.mkdir(parents=True, exist_ok=True)
    sequences = {
        "source": frames_to_image(condition.source_frames),
        "render": frames_to_image(condition.render),  # render holes become black
        "mask": condition.mask[:, 0, ..., None].expand(-1, -1, -1, 3),
    }
    if generate:
        sequences["generated"] = _generate(options, condition)
    written = {
        name: _write_sequence(options.out / name, images) for name, images in sequences.items()
    }
    written["contact_sheet"] = options.out / "contact_sheet.png"
    contact_sheet(sequences).save(written["contact_sheet"])
    written["camera_path"] = options.out / "camera_path.png"
    image_to_pil(draw_path_preview(scene, path)).save(written["camera_path"])
    return written


def _generate(options: DemoOptions, condition) -> Tensor:
    """The full world-model run through the same nodes a ComfyUI graph uses."""
    from .core.codec import load_codec
    from .nodes.loaders import (
        InSpatioPromptEmbeddingsLoader,
        InSpatioTAEHVLoader,
        InSpatioWorldModelLoader,
    )
    from .nodes.sampler import (
        RELEASED_DENOISING_STEPS,
        RELEASED_SHIFT,
        InSpatioWorldCacheInit,
        InSpatioWorldSampler,
    )

    (model,) = InSpatioWorldModelLoader().load(str(options.checkpoint), "auto", "auto")
    (positive,) = InSpatioPromptEmbeddingsLoader().load(str(options.prompt_embeds))
    vae = HostVAE(load_codec(options.vae))
    (state,) = InSpatioWorldCacheInit().initialize(model, vae, positive, condition)
    decoder = None if options.taehv is None else InSpatioTAEHVLoader().load(str(options.taehv))[0]
    _, generated = InSpatioWorldSampler().sample(
        state, options.seed, RELEASED_DENOISING_STEPS, RELEASED_SHIFT, 0, decoder
    )
    return generated


def _write_sequence(folder: Path, images: Tensor) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for index, image in enumerate(images):
        image_to_pil(image).save(folder / f"{index:05d}.png")
    return folder


def contact_sheet(sequences: dict[str, Tensor], columns: int = CONTACT_COLUMNS) -> PILImage.Image:
    """One row per sequence (``[F, H, W, 3]`` in [0, 1]), the same evenly spaced frames in every row."""
    frame_count = min(images.shape[0] for images in sequences.values())
    picked = torch.linspace(0, frame_count - 1, min(columns, frame_count)).round().long().tolist()
    height, width = next(iter(sequences.values())).shape[1:3]
    thumbnail_height = round(THUMBNAIL_WIDTH * height / width)
    header = SHEET_PADDING * 3
    sheet = PILImage.new(
        "RGB",
        (
            LABEL_WIDTH + len(picked) * (THUMBNAIL_WIDTH + SHEET_PADDING) + SHEET_PADDING,
            header + len(sequences) * (thumbnail_height + SHEET_PADDING) + SHEET_PADDING,
        ),
        SHEET_BACKGROUND,
    )
    draw = ImageDraw.Draw(sheet)
    for column, frame in enumerate(picked):
        left = LABEL_WIDTH + column * (THUMBNAIL_WIDTH + SHEET_PADDING)
        draw.text((left, SHEET_PADDING // 2), f"frame {frame}", fill=SHEET_TEXT)
    for row, (name, images) in enumerate(sequences.items()):
        top = header + row * (thumbnail_height + SHEET_PADDING)
        draw.text((SHEET_PADDING, top + thumbnail_height // 2), name, fill=SHEET_TEXT)
        for column, frame in enumerate(picked):
            thumbnail = image_to_pil(images[frame]).resize(
                (THUMBNAIL_WIDTH, thumbnail_height), PILImage.LANCZOS
            )
            sheet.paste(thumbnail, (LABEL_WIDTH + column * (THUMBNAIL_WIDTH + SHEET_PADDING), top))
    return sheet
