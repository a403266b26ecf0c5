"""The demo's procedural room: its depth is exact, so every unprojected pixel lies on a surface."""

from __future__ import annotations

import torch
from inspatio_nodes.core.camera import intrinsics_from_fov
from inspatio_nodes.demo import RoomLayout, ball_centre, render_room

WIDTH, HEIGHT, FRAMES = 96, 64, 3
SURFACE_TOLERANCE = 1e-4


def _room_points(room: RoomLayout) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    intrinsics = intrinsics_from_fov(75.0, WIDTH, HEIGHT)
    frames, depth = render_room(intrinsics, WIDTH, HEIGHT, FRAMES, room)
    rows, columns = torch.meshgrid(
        torch.arange(HEIGHT, dtype=torch.float64),
        torch.arange(WIDTH, dtype=torch.float64),
        indexing="ij",
    )
    rays = torch.stack(
        [
            (columns - intrinsics[0, 2]) / intrinsics[0, 0],
            (rows - intrinsics[1, 2]) / intrinsics[1, 1],
            torch.ones_like(rows),
        ],
        dim=-1,
    )
    return frames, depth, rays * depth.double()[..., None]


def _distance_to_box(
    points: torch.Tensor, box_min: torch.Tensor, box_max: torch.Tensor
) -> torch.Tensor:
    """Distance to the box surface for points on or outside it (0 on a face)."""
    outside = torch.maximum(box_min - points, points - box_max).clamp_min(0)
    return torch.linalg.vector_norm(outside, dim=-1)


def test_every_pixel_of_the_room_lies_on_a_surface_of_the_layout():
    room = RoomLayout()
    _, _, points = _room_points(room)
    x, y, z = points.unbind(-1)
    on_plane = (
        ((x.abs() - room.half_width).abs() < SURFACE_TOLERANCE)
        | ((y - room.floor_y).abs() < SURFACE_TOLERANCE)
        | ((y - room.ceiling_y).abs() < SURFACE_TOLERANCE)
        | ((z - room.back_wall_z).abs() < SURFACE_TOLERANCE)
    )
    box_min = torch.tensor(room.pedestal_min, dtype=torch.float64)
    box_max = torch.tensor(room.pedestal_max, dtype=torch.float64)
    inside_box_bounds = (
        (points >= box_min - SURFACE_TOLERANCE) & (points <= box_max + SURFACE_TOLERANCE)
    ).all(-1)
    on_box = inside_box_bounds & (_distance_to_box(points, box_min, box_max) < SURFACE_TOLERANCE)
    ball_distance = torch.stack(
        [
            (
                torch.linalg.vector_norm(points[f] - ball_centre(f, FRAMES, room), dim=-1)
                - room.ball_radius
            ).abs()
            for f in range(FRAMES)
        ]
    )
    on_ball = ball_distance < SURFACE_TOLERANCE
    assert (on_plane | on_box | on_ball).all()


def test_room_depth_is_positive_and_bounded_by_the_back_wall():
    room = RoomLayout()
    _, depth, _ = _room_points(room)
    assert torch.isfinite(depth).all()
    assert depth.min() > 0
    assert depth.max() <= room.back_wall_z + SURFACE_TOLERANCE


def test_room_frames_are_video_frames_in_minus_one_to_one():
    frames, depth, _ = _room_points(RoomLayout())
    assert frames.shape == (FRAMES, 3, HEIGHT, WIDTH)
    assert depth.shape == (FRAMES, HEIGHT, WIDTH)
    assert frames.min() >= -1 and frames.max() <= 1


def test_the_ball_moves_between_frames_and_the_room_does_not():
    frames, _, _ = _room_points(RoomLayout())
    changed = (frames[0] - frames[1]).abs().amax(0) > 0
    assert 0 < changed.float().mean() < 0.2
