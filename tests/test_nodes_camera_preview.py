"""The camera-path preview: panels, markers where the path starts and ends, the scene's colours."""

from __future__ import annotations

import pytest
import torch
from inspatio_nodes.core.camera import intrinsics_from_fov
from inspatio_nodes.core.paths import CameraPath
from inspatio_nodes.core.preview import (
    END_COLOUR,
    START_COLOUR,
    PathPreviewStyle,
    draw_path_preview,
    scene_point_cloud,
)
from inspatio_nodes.core.scene import Scene

PANEL = 128
PLANE_COLOUR = (-1.0, -1.0, 1.0)  # pure blue in [-1, 1]


def _plane_scene(width: int = 32, height: int = 24, depth: float = 4.0) -> Scene:
    frames = torch.tensor(PLANE_COLOUR).reshape(1, 3, 1, 1).expand(1, 3, height, width).clone()
    return Scene(
        frames=frames,
        depth=torch.full((1, height, width), depth),
        intrinsics=intrinsics_from_fov(60.0, width, height)[None].float(),
        world_to_camera=torch.eye(4)[None],
        fps=16.0,
    )


def _path_through(centres: torch.Tensor) -> CameraPath:
    """Cameras looking down +z (identity rotation) at the given world centres."""
    world_to_camera = torch.eye(4, dtype=torch.float64).repeat(centres.shape[0], 1, 1)
    world_to_camera[:, :3, 3] = -centres
    return CameraPath(world_to_camera)


def _centroid_of(panel: torch.Tensor, colour: tuple[int, int, int]) -> torch.Tensor:
    match = ((panel * 255).round() == torch.tensor(colour, dtype=panel.dtype)).all(-1)
    assert match.any(), f"colour {colour} is not drawn"
    rows, columns = torch.nonzero(match, as_tuple=True)
    return torch.stack([columns.float().mean(), rows.float().mean()])


def _forward_path() -> CameraPath:
    steps = torch.linspace(0, 2, 9, dtype=torch.float64)
    return _path_through(
        torch.stack([torch.zeros_like(steps), torch.zeros_like(steps), steps], dim=-1)
    )


def test_preview_is_two_square_panels_in_unit_range():
    preview = draw_path_preview(_plane_scene(), _forward_path(), PathPreviewStyle(panel_size=PANEL))
    assert preview.shape == (PANEL, 2 * PANEL, 3)
    assert preview.min() >= 0 and preview.max() <= 1


def test_forward_path_goes_up_the_top_view_and_right_in_the_side_view():
    preview = draw_path_preview(_plane_scene(), _forward_path(), PathPreviewStyle(panel_size=PANEL))
    top, side = preview[:, :PANEL], preview[:, PANEL:]
    top_start, top_end = _centroid_of(top, START_COLOUR), _centroid_of(top, END_COLOUR)
    side_start, side_end = _centroid_of(side, START_COLOUR), _centroid_of(side, END_COLOUR)
    assert top_end[1] < top_start[1]  # z grows up the page seen from above
    assert side_end[0] > side_start[0]  # z grows to the right seen from the side


def test_sideways_path_goes_right_in_the_top_view():
    steps = torch.linspace(0, 1, 5, dtype=torch.float64)
    path = _path_through(
        torch.stack([steps, torch.zeros_like(steps), torch.zeros_like(steps)], dim=-1)
    )
    top = draw_path_preview(_plane_scene(), path, PathPreviewStyle(panel_size=PANEL))[:, :PANEL]
    assert _centroid_of(top, END_COLOUR)[0] > _centroid_of(top, START_COLOUR)[0]


def test_scene_points_are_drawn_in_their_own_colour():
    preview = draw_path_preview(_plane_scene(), _forward_path(), PathPreviewStyle(panel_size=PANEL))
    blue = (preview[..., 2] > 0.3) & (preview[..., :2].amax(-1) < 0.05)
    assert blue[:, :PANEL].any() and blue[:, PANEL:].any()


def test_preview_is_deterministic():
    style = PathPreviewStyle(panel_size=PANEL, max_points=100)
    first = draw_path_preview(_plane_scene(), _forward_path(), style)
    second = draw_path_preview(_plane_scene(), _forward_path(), style)
    assert torch.equal(first, second)


def test_a_single_pose_path_still_draws_start_and_end():
    path = _path_through(torch.zeros(1, 3, dtype=torch.float64))
    top = draw_path_preview(_plane_scene(), path, PathPreviewStyle(panel_size=PANEL))[:, :PANEL]
    _centroid_of(top, END_COLOUR)


@pytest.mark.parametrize(
    "arguments", [{"panel_size": 16}, {"frustum_every": -1}, {"max_points": 0}]
)
def test_unusable_preview_styles_are_refused(arguments):
    with pytest.raises(ValueError):
        PathPreviewStyle(**arguments)


def test_point_cloud_of_a_fronto_parallel_plane_lies_on_the_plane_in_the_world():
    scene = _plane_scene(depth=4.0)
    moved = Scene(
        frames=scene.frames,
        depth=scene.depth,
        intrinsics=scene.intrinsics,
        world_to_camera=torch.tensor(
            [[[1.0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, -1.0], [0, 0, 0, 1]]]
        ),  # camera centre at z = 1
        fps=scene.fps,
    )
    points, colours = scene_point_cloud(moved, max_points=10_000)
    assert points.shape == (32 * 24, 3)
    torch.testing.assert_close(points[:, 2], torch.full_like(points[:, 2], 5.0))
    torch.testing.assert_close(colours, torch.tensor([[0.0, 0.0, 1.0]]).expand_as(colours).double())


def test_point_cloud_is_subsampled_to_the_budget_without_missing_depth():
    scene = _plane_scene()
    depth = scene.depth.clone()
    depth[:, :4] = 0.0  # no depth in the top rows
    holed = Scene(scene.frames, depth, scene.intrinsics, scene.world_to_camera, scene.fps)
    points, _ = scene_point_cloud(holed, max_points=100)
    assert points.shape == (100, 3)
    # A pixel without depth would sit at the camera centre (z = 0); every kept point is on the plane.
    torch.testing.assert_close(points[:, 2], torch.full_like(points[:, 2], 4.0))
