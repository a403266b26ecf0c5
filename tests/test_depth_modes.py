"""Depth-image reading: each encoding maps its reference values to the distances it promises."""

from __future__ import annotations

import pytest
import torch
from inspatio_nodes.core.depth import (
    DepthReading,
    DepthReadingError,
    depth_values_from_image,
    foreground_depth,
    match_depth_size,
    read_depth,
)


def _values(*numbers: float) -> torch.Tensor:
    return torch.tensor(numbers, dtype=torch.float32).reshape(1, 1, -1)


def test_metric_depth_is_the_value_times_scale():
    depth = read_depth(_values(0.5, 2.0, 40.0), DepthReading("metric", scale=0.1))
    torch.testing.assert_close(depth, _values(0.05, 0.2, 4.0))


def test_metric_depth_keeps_missing_values_missing():
    depth = read_depth(_values(0.0, -1.0, float("nan")), DepthReading("metric"))
    assert depth[0, 0, 0] <= 0 and depth[0, 0, 1] <= 0 and torch.isnan(depth[0, 0, 2])


def test_inverse_depth_maps_white_to_near_and_black_to_far():
    depth = read_depth(_values(1.0, 0.0), DepthReading("inverse", near=0.5, far=8.0))
    torch.testing.assert_close(depth, _values(0.5, 8.0))


def test_inverse_depth_is_linear_in_one_over_z():
    near, far = 1.0, 4.0
    depth = read_depth(_values(0.5), DepthReading("inverse", near=near, far=far))
    expected = 1.0 / (0.5 / near + 0.5 / far)
    torch.testing.assert_close(depth, _values(expected))


def test_normalized_depth_is_linear_between_near_and_far():
    depth = read_depth(_values(0.0, 0.25, 1.0), DepthReading("normalized", near=2.0, far=6.0))
    torch.testing.assert_close(depth, _values(2.0, 3.0, 6.0))


def test_normalized_values_outside_unit_range_stay_inside_near_far():
    depth = read_depth(_values(-0.01, 1.02), DepthReading("normalized", near=1.0, far=3.0))
    torch.testing.assert_close(depth, _values(1.0, 3.0))


def test_grey_rgb_image_gives_its_brightness():
    grey = torch.rand(2, 4, 5, 1).expand(2, 4, 5, 3)
    torch.testing.assert_close(depth_values_from_image(grey), grey[..., 0])


def test_alpha_channel_is_ignored():
    rgba = torch.cat([torch.full((1, 2, 2, 3), 0.3), torch.zeros(1, 2, 2, 1)], dim=-1)
    torch.testing.assert_close(depth_values_from_image(rgba), torch.full((1, 2, 2), 0.3))


def test_colour_mapped_depth_image_is_refused():
    colour_mapped = torch.zeros(1, 2, 2, 3)
    colour_mapped[..., 0] = 1.0
    with pytest.raises(DepthReadingError, match="grayscale"):
        depth_values_from_image(colour_mapped)


@pytest.mark.parametrize(
    "reading_arguments",
    [
        {"encoding": "disparity"},
        {"encoding": "inverse", "near": 5.0, "far": 1.0},
        {"encoding": "normalized", "near": 0.0, "far": 1.0},
        {"encoding": "metric", "scale": 0.0},
    ],
)
def test_unusable_reading_settings_are_refused(reading_arguments):
    with pytest.raises(DepthReadingError):
        DepthReading(**reading_arguments)


def test_depth_values_of_wrong_rank_are_refused():
    with pytest.raises(DepthReadingError, match="frames, height, width"):
        read_depth(torch.ones(4, 4), DepthReading())


def test_mask_shaped_depth_is_read_as_is():
    mask = torch.rand(2, 3, 4)
    torch.testing.assert_close(depth_values_from_image(mask), mask)


def test_depth_is_resized_to_the_frames_with_nearest_sampling():
    depth = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])
    resized = match_depth_size(depth, 4, 4)
    assert resized.shape == (1, 4, 4)
    assert set(resized.unique().tolist()) == {1.0, 2.0, 3.0, 4.0}
    torch.testing.assert_close(resized[0, :2, :2], torch.ones(2, 2))


def test_depth_of_another_aspect_ratio_is_refused():
    with pytest.raises(DepthReadingError, match="aspect"):
        match_depth_size(torch.ones(1, 10, 10), 10, 20)


def test_foreground_depth_is_the_nearest_valid_depth_of_the_first_frame():
    depth = torch.tensor([[[0.0, 3.0], [float("nan"), 2.5]], [[0.5, 0.5], [0.5, 0.5]]])
    assert foreground_depth(depth) == 2.5


def test_foreground_depth_of_an_empty_first_frame_is_refused():
    with pytest.raises(DepthReadingError, match="first frame"):
        foreground_depth(torch.zeros(1, 2, 2))
