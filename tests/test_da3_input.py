"""DA3 input preparation: the processing size and cv2's 8-bit INTER_AREA / INTER_CUBIC resizes.

Known answers are worked out by hand from cv2's definitions (area weights, Keys' cubic). Where cv2
is installed, the resizes are also compared with it directly: INTER_AREA bit for bit, INTER_CUBIC
within one level (cv2's own IPP and generic builds differ from each other by as much).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from inspatio_nodes.core import da3_input


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        ((1920, 1080), (504, 280)),  # 283.5 rounds (half to even) to 284, nearest multiple 280
        ((832, 480), (504, 294)),  # 290.77 -> 291 -> 294
        ((504, 504), (504, 504)),
        ((100, 50), (504, 252)),  # upscaled: the longest side is always process_res
    ],
)
def test_processing_size_bounds_the_longest_side_and_rounds_to_patches(size, expected):
    assert da3_input.processing_size(*size, da3_input.PROCESS_RESOLUTION) == expected


def test_prepared_frames_are_imagenet_normalised_at_the_processing_size():
    grey = torch.full((2, 40, 70, 3), 0.5)
    prepared = da3_input.prepare_frames(grey, process_res=56)
    assert prepared.shape == (1, 2, 3, 28, 56)
    level = round(0.5 * 255) / 255
    expected = (level - torch.tensor(da3_input.IMAGENET_MEAN)) / torch.tensor(
        da3_input.IMAGENET_STD
    )
    torch.testing.assert_close(prepared[0, 0, :, 5, 5], expected)


def test_area_shrink_weights_pixels_by_the_covered_fraction():
    row = np.array([[[30], [90], [150]]], dtype=np.uint8)  # 3 -> 2: each output covers 1.5 pixels
    shrunk = da3_input.resize_like_cv2(np.repeat(row, 2, axis=0), (2, 2))
    expected = [round((30 + 0.5 * 90) / 1.5), round((0.5 * 90 + 150) / 1.5)]
    assert shrunk[0, :, 0].tolist() == expected


def test_area_halving_rounds_the_block_mean_half_up():
    block = np.array([[[1], [2]], [[1], [2]]], dtype=np.uint8)  # mean 1.5
    assert da3_input.resize_like_cv2(block, (1, 1)).item() == 2


def test_cubic_growth_reproduces_a_linear_ramp_inside_the_frame():
    ramp = np.tile((np.arange(16, dtype=np.uint8) * 10)[None, :, None], (4, 1, 3))
    grown = da3_input.resize_like_cv2(ramp, (32, 4)).astype(float)
    # Destination x sits at source (x + 0.5)/2 - 0.5; Keys' cubic is exact on straight lines.
    positions = (np.arange(32) + 0.5) / 2 - 0.5
    inside = slice(4, 28)
    np.testing.assert_allclose(grown[0, inside, 0], 10 * positions[inside], atol=1.0)


@pytest.mark.parametrize(
    ("source", "target"),
    [
        ((1920, 1080), (504, 284)),
        ((504, 284), (504, 280)),
        ((1008, 560), (504, 280)),
        ((504, 291), (504, 294)),
        ((97, 61), (504, 317)),
    ],
)
def test_resize_matches_cv2_where_installed(source, target):
    cv2 = pytest.importorskip("cv2")
    frame = np.random.default_rng(0).integers(0, 256, (source[1], source[0], 3), dtype=np.uint8)
    grows = target[0] > source[0] or target[1] > source[1]
    expected = cv2.resize(frame, target, interpolation=cv2.INTER_CUBIC if grows else cv2.INTER_AREA)
    difference = np.abs(da3_input.resize_like_cv2(frame, target).astype(int) - expected.astype(int))
    assert difference.max() <= (1 if grows else 0)
