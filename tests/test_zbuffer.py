"""The hard z-buffer point renderer of InSpatio-WorldFM (``core/point_render.py``)."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import fixture_cases, require_fixture, sibling
from inspatio_nodes.core import point_render
from inspatio_nodes.core.point_render import (
    PointRenderError,
    half_point_cloud,
    render_points_hard,
    render_points_v1,
)
from safetensors.torch import load_file

RENDER_CASES = fixture_cases("*worldfm_geometry*render*.safetensors")


def _pinhole(focal: float, centre: float) -> torch.Tensor:
    return torch.tensor(
        [[focal, 0.0, centre], [0.0, focal, centre], [0.0, 0.0, 1.0]], dtype=torch.float64
    )


def _points_at_pixels(
    us: list[float], vs: list[float], zs: list[float], focal: float, centre: float
):
    """World points (identity camera) that project exactly to the given sub-pixel positions."""
    rows = [[(u - centre) * z / focal, (v - centre) * z / focal, z] for u, v, z in zip(us, vs, zs)]
    return torch.tensor(rows, dtype=torch.float32)


def _load_render_case(case_path):
    render = load_file(str(require_fixture(case_path)))
    pano = load_file(str(require_fixture(sibling(case_path, "render", "pano"))))
    return render, pano


@pytest.mark.parametrize("case_path", RENDER_CASES)
def test_renders_match_the_official_renderer_exactly_including_ties(case_path):
    render, pano = _load_render_case(case_path)
    cloud = half_point_cloud(pano["ply_xyz"], pano["ply_rgb_u8"])
    _, height, width = render["render.depth"].shape
    world_to_camera = torch.linalg.inv(render["target.c2w"])
    images, depths = render_points_hard(cloud, render["target.K"], world_to_camera, height, width)

    assert torch.equal(depths, render["render.depth"])
    outside_ties = render["render.tie_mask"] == 0
    assert torch.equal(images[outside_ties], render["render.rgb_u8"][outside_ties])
    # "Last point in order wins" reproduces the CPU winner inside ties as well.
    assert torch.equal(images, render["render.rgb_u8"])


@pytest.mark.parametrize("case_path", RENDER_CASES)
def test_colour_cache_quantisation_matches_the_official_lookup_table(case_path):
    render, _ = _load_render_case(case_path)
    colours_in, colours_out = render["color_lut.in_u8"], render["color_lut.out_u8"]
    side = math.isqrt(colours_in.shape[0] - 1) + 1
    focal, centre = 10.0, (side - 1) / 2
    index = torch.arange(colours_in.shape[0])
    us, vs = (index % side).tolist(), (index // side).tolist()
    points = _points_at_pixels(us, vs, [1.0] * len(us), focal, centre)
    image, _ = render_points_hard(
        half_point_cloud(points, colours_in), _pinhole(focal, centre), torch.eye(4), side, side
    )
    assert torch.equal(image[0, vs, us], colours_out)


def test_pixel_coordinates_round_half_to_even():
    focal, centre = 10.0, 0.0
    points = _points_at_pixels([2.5, 3.5, 0.5], [1.0, 1.0, 0.5], [1.0, 1.0, 1.0], focal, centre)
    colours = torch.tensor([[255, 0, 0], [0, 255, 0], [0, 0, 255]], dtype=torch.uint8)
    image, depth = render_points_hard(
        half_point_cloud(points, colours), _pinhole(focal, centre), torch.eye(4), 6, 6
    )
    assert image[0, 1, 2].tolist() == [255, 0, 0]  # 2.5 -> 2
    assert image[0, 1, 4].tolist() == [0, 255, 0]  # 3.5 -> 4
    assert image[0, 0, 0].tolist() == [0, 0, 255]  # 0.5 -> 0
    assert int((depth[0] > 0).sum()) == 3


def test_nearest_point_wins_and_the_last_of_tied_points_is_drawn():
    focal, centre = 10.0, 2.0
    points = _points_at_pixels(
        [1, 1, 3, 3, 3], [1, 1, 3, 3, 3], [2.0, 1.0, 1.0, 1.0, 3.0], focal, centre
    )
    colours = torch.tensor([[10] * 3, [20] * 3, [30] * 3, [40] * 3, [50] * 3], dtype=torch.uint8)
    image, depth = render_points_hard(
        half_point_cloud(points, colours), _pinhole(focal, centre), torch.eye(4), 5, 5
    )
    # 20 -> 19 and 40 -> 39: float16 colours are truncated, not rounded.
    assert image[0, 1, 1].tolist() == [19] * 3
    assert image[0, 3, 3].tolist() == [39] * 3
    assert depth[0, 1, 1] == 1.0 and depth[0, 3, 3] == 1.0
    assert int((depth[0] > 0).sum()) == 2 and int(image[0].sum(-1).gt(0).sum()) == 2


def test_points_at_or_behind_the_near_plane_are_dropped_and_all_behind_is_an_error():
    colours = torch.full((2, 3), 200, dtype=torch.uint8)
    points = torch.tensor([[0.0, 0.0, 1e-4], [0.0, 0.0, 2.0]])
    _, depth = render_points_hard(
        half_point_cloud(points, colours), _pinhole(4.0, 1.0), torch.eye(4), 3, 3
    )
    assert depth[0, 1, 1] == 2.0

    behind = torch.tensor([[0.0, 0.0, -1.0], [0.5, 0.0, -2.0]])
    with pytest.raises(PointRenderError, match="behind the camera"):
        render_points_hard(
            half_point_cloud(behind, colours), _pinhole(4.0, 1.0), torch.eye(4), 3, 3
        )


def test_point_colours_must_match_the_points():
    with pytest.raises(PointRenderError, match="one RGB triple per point"):
        half_point_cloud(torch.zeros(4, 3), torch.zeros(3, 3, dtype=torch.uint8))


def _orbit_poses(count: int) -> torch.Tensor:
    """World-to-camera poses turning about x and sliding along it, one per frame."""
    poses = torch.eye(4).repeat(count, 1, 1)
    angles = torch.linspace(0.0, 0.2, count)
    poses[:, 1, 1], poses[:, 1, 2] = torch.cos(angles), -torch.sin(angles)
    poses[:, 2, 1], poses[:, 2, 2] = torch.sin(angles), torch.cos(angles)
    poses[:, 0, 3] = torch.linspace(0.0, 0.4, count)
    return poses


def _tied_cloud(count: int = 600) -> tuple[torch.Tensor, torch.Tensor]:
    """Points on a coarse grid in front of the camera: many share a pixel and a depth."""
    generator = torch.Generator().manual_seed(7)
    points = torch.randn(count, 3, generator=generator) * torch.tensor([1.5, 1.0, 0.5])
    points = torch.round((points + torch.tensor([0.0, 0.0, 4.0])) * 8) / 8
    return points, torch.rand(count, 3, generator=generator)


def _render_both(points, colours, poses, intrinsics, height, width):
    cloud = half_point_cloud(points, (colours * 255).to(torch.uint8))
    hard = render_points_hard(cloud, intrinsics.double(), poses.double(), height, width)
    return hard + render_points_v1(points, colours, poses, intrinsics, height, width)


@pytest.mark.parametrize("fragment_budget", [None, 1])
def test_frames_rendered_together_or_in_chunks_equal_frames_rendered_one_by_one(
    fragment_budget, monkeypatch
):
    points, colours = _tied_cloud()
    poses, intrinsics = _orbit_poses(4), _pinhole(20.0, 8.0).float()
    alone = [_render_both(points, colours, pose[None], intrinsics, 16, 16) for pose in poses]
    if fragment_budget is not None:  # the smallest budget: one frame per z-buffer pass
        monkeypatch.setattr(point_render, "MAX_FRAGMENTS_PER_ZBUFFER", fragment_budget)
    together = _render_both(points, colours, poses, intrinsics, 16, 16)
    for output, frames in zip(together, zip(*alone)):
        assert torch.equal(output, torch.cat(frames))
    assert bool((together[1] > 0).any(dim=(1, 2)).all())  # every frame drew points
