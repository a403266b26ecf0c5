"""DA3 input preparation: frames → the network's ``[1, F, 3, h, w]`` ImageNet-normalised batch.

Data flow: IMAGE frames → **here** → the DA3 network (``core/da3.py``). This reproduces the
``depth_anything_3`` package's ``InputProcessor`` with ``process_res_method="upper_bound_resize"``
(what ``DepthAnything3.inference`` uses): the frame, as 8-bit RGB, is resized so its longest side is
``process_res``, then each side is resized to the nearest multiple of the 14-pixel patch, both with
cv2 (``INTER_AREA`` when shrinking, ``INTER_CUBIC`` when growing), then ImageNet-normalised.

cv2 is not a dependency of the pack, so its two 8-bit resizes are written here from OpenCV's
``imgproc/src/resize.cpp`` (generic, non-IPP code paths):

- ``INTER_AREA`` shrinking by a non-integer factor: each destination pixel averages the source
  pixels its footprint covers, weighted by the covered fraction (fractions under 1e-3 dropped),
  accumulated in float32 row by row, rounded half to even. Integer factors take cv2's fast path: the
  exact block mean, rounded half up for 2×2 and half to even otherwise.
- ``INTER_CUBIC``: Keys' cubic with a = −0.75 at source coordinate ``(x + 0.5)·scale − 0.5``, border
  pixels repeated, coefficients in 11-bit fixed point, the two passes combined in integers and
  rounded once.
"""

from __future__ import annotations

import math
from typing import Annotated

import numpy as np
import torch
from einops import rearrange
from torch import Tensor

from .types import ImageBatch

ProcessedFrames = Annotated[Tensor, "1 F 3 h w ImageNet-normalised frames, h and w multiples of 14"]
Pixels = Annotated[np.ndarray, "H W 3 uint8"]

PATCH_SIZE = 14  # DINOv2 patch: DA3's processing size is a multiple of it
PROCESS_RESOLUTION = 504  # v1.5 passes process_res=504 (also the package default)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
UINT8_MAX = 255
# cv2 INTER_AREA
AREA_MIN_FRACTION = 1e-3  # computeResizeAreaTab ignores partial pixels below this
HALF_UP_FAST_AREA = 2  # the 2x2 fast path adds 2 and shifts by 2 (round half up)
# cv2 INTER_CUBIC on 8-bit images
CUBIC_A = -0.75
CUBIC_TAPS = 4
COEFFICIENT_BITS = 11  # INTER_RESIZE_COEF_BITS
COEFFICIENT_SCALE = 1 << COEFFICIENT_BITS


def processing_size(
    width: int, height: int, process_res: int = PROCESS_RESOLUTION
) -> tuple[int, int]:
    """DA3's ``upper_bound_resize``: (width, height) after scaling the longest side to
    ``process_res`` and rounding each side to the nearest multiple of the patch (ties round up)."""
    bounded = _bounded_size(width, height, process_res)
    return _nearest_patch_multiple(bounded[0]), _nearest_patch_multiple(bounded[1])


def _bounded_size(width: int, height: int, process_res: int) -> tuple[int, int]:
    longest = max(width, height)
    if longest == process_res:
        return width, height
    scale = process_res / float(longest)
    # Python's round (half to even), as the package computes it.
    return max(1, round(width * scale)), max(1, round(height * scale))


def _nearest_patch_multiple(side: int) -> int:
    lower = side // PATCH_SIZE * PATCH_SIZE
    upper = lower + PATCH_SIZE
    return max(1, upper if upper - side <= side - lower else lower)


def prepare_frames(images: ImageBatch, process_res: int = PROCESS_RESOLUTION) -> ProcessedFrames:
    """Frames ``[F, H, W, 3]`` in [0, 1] → DA3 input ``[1, F, 3, h, w]`` (on the CPU).

    Frames are first quantised to 8 bits, as the official pipeline reads them from a video file.
    """
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"DA3 frames must be [F, H, W, 3], got shape {tuple(images.shape)}")
    _, height, width, _ = images.shape
    bounded = _bounded_size(width, height, process_res)
    final = processing_size(width, height, process_res)
    pixels = (images.detach().float().cpu().clamp(0, 1) * UINT8_MAX).round().to(torch.uint8).numpy()
    resized = np.stack(
        [resize_like_cv2(resize_like_cv2(frame, bounded), final) for frame in pixels]
    )
    scaled = torch.from_numpy(resized).float() / UINT8_MAX
    normalised = (scaled - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    return rearrange(normalised, "f h w c -> 1 f c h w")


def resize_like_cv2(frame: Pixels, size: tuple[int, int]) -> Pixels:
    """``cv2.resize(frame, size, INTER_AREA if shrinking else INTER_CUBIC)`` as DA3's processor
    calls it (cubic as soon as either side grows); ``size`` is (width, height)."""
    height, width = frame.shape[:2]
    new_width, new_height = size
    if (new_width, new_height) == (width, height):
        return frame
    if new_width > width or new_height > height:
        return _cubic(frame, new_width, new_height)
    return _area(frame, new_width, new_height)


# --- INTER_AREA ------------------------------------------------------------------------------


def _area(frame: Pixels, new_width: int, new_height: int) -> Pixels:
    height, width = frame.shape[:2]
    scale_x, scale_y = _cv2_scale(width, new_width), _cv2_scale(height, new_height)
    if _is_integer(scale_x) and _is_integer(scale_y):
        return _area_integer(frame, round(scale_x), round(scale_y))
    columns, column_weights = _area_taps(width, new_width, scale_x)
    rows, row_weights = _area_taps(height, new_height, scale_y)
    values = frame.astype(np.float32)
    # Horizontal sums in float32, taps in source order (cv2's ``buf``); padding taps add exactly 0.
    horizontal = np.zeros((height, new_width, frame.shape[2]), np.float32)
    for tap in range(columns.shape[1]):
        horizontal += values[:, columns[:, tap]] * column_weights[:, tap, None]
    total = np.zeros((new_height, new_width, frame.shape[2]), np.float32)
    for tap in range(rows.shape[1]):
        total += horizontal[rows[:, tap]] * row_weights[:, tap, None, None]
    return np.clip(np.rint(total), 0, UINT8_MAX).astype(np.uint8)


def _cv2_scale(size: int, new_size: int) -> float:
    """Source pixels per destination pixel as cv2 forms it: the inverse of ``new_size / size``."""
    return 1.0 / (new_size / size)


def _is_integer(scale: float) -> bool:
    return abs(scale - round(scale)) < np.finfo(np.float64).eps


def _area_taps(size: int, new_size: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Per destination pixel: the covered source pixels and their float32 weights (zero-padded)."""
    taps = []
    for index in range(new_size):
        start = index * scale
        end = start + scale
        cell = min(scale, size - start)
        first, last = math.ceil(start), min(math.floor(end), size - 1)
        first = min(first, last)
        pixel_taps = []
        if first - start > AREA_MIN_FRACTION:
            pixel_taps.append((first - 1, (first - start) / cell))
        pixel_taps += [(source, 1.0 / cell) for source in range(first, last)]
        if end - last > AREA_MIN_FRACTION:
            pixel_taps.append((last, min(end - last, 1.0, cell) / cell))
        taps.append(pixel_taps)
    width = max(len(pixel_taps) for pixel_taps in taps)
    sources = np.zeros((new_size, width), np.int64)
    weights = np.zeros((new_size, width), np.float32)
    for index, pixel_taps in enumerate(taps):
        for tap, (source, weight) in enumerate(pixel_taps):
            sources[index, tap], weights[index, tap] = source, weight
    return sources, weights


def _area_integer(frame: Pixels, scale_x: int, scale_y: int) -> Pixels:
    blocks = rearrange(
        frame.astype(np.int64), "(h sy) (w sx) c -> h w c (sy sx)", sy=scale_y, sx=scale_x
    )
    total = blocks.sum(axis=-1)
    area = scale_x * scale_y
    if scale_x == scale_y == HALF_UP_FAST_AREA:
        return ((total + area // 2) // area).astype(np.uint8)
    mean = total.astype(np.float32) * np.float32(1.0 / area)
    return np.clip(np.rint(mean), 0, UINT8_MAX).astype(np.uint8)


# --- INTER_CUBIC -----------------------------------------------------------------------------


def _cubic(frame: Pixels, new_width: int, new_height: int) -> Pixels:
    height, width = frame.shape[:2]
    columns, column_weights = _cubic_taps(width, new_width)
    rows, row_weights = _cubic_taps(height, new_height)
    values = frame.astype(np.int64)
    horizontal = np.einsum("hwtc,wt->hwc", values[:, columns], column_weights)
    total = np.einsum("htwc,ht->hwc", horizontal[rows], row_weights)
    half = 1 << (2 * COEFFICIENT_BITS - 1)
    return np.clip((total + half) >> (2 * COEFFICIENT_BITS), 0, UINT8_MAX).astype(np.uint8)


def _cubic_taps(size: int, new_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Per destination pixel: the 4 source pixels (border repeated) and fixed-point weights."""
    scale = _cv2_scale(size, new_size)
    position = ((np.arange(new_size) + 0.5) * scale - 0.5).astype(np.float32)
    start = np.floor(position)
    fraction = position - start
    sources = np.clip(start.astype(np.int64)[:, None] + np.arange(-1, CUBIC_TAPS - 1), 0, size - 1)
    weights = np.rint(_cubic_coefficients(fraction) * np.float32(COEFFICIENT_SCALE))
    return sources, weights.astype(np.int64)


def _cubic_coefficients(x: np.ndarray) -> np.ndarray:
    """cv2 ``interpolateCubic`` in float32; the last weight makes the four sum to one."""
    a = np.float32(CUBIC_A)
    one = np.float32(1.0)
    left = ((a * (x + one) - 5 * a) * (x + one) + 8 * a) * (x + one) - 4 * a
    centre = ((a + 2) * x - (a + 3)) * x * x + one
    right = ((a + 2) * (one - x) - (a + 3)) * (one - x) * (one - x) + one
    return np.stack([left, centre, right, one - left - centre - right], axis=-1)
