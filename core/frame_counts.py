"""Frame-count policies: how many frames a run has and which source frame each one shows.

Place in the data flow: between the source video (``core/scene.py``), the camera path and the
sampler. Pure index arithmetic on frame counts, no tensors of pixels:

- v1.5 pads to whole blocks of 3 latent frames (``pipeline/scene_schema.py``:
  ``padded_frame_count``, ``latent_frame_groups``; ``datasets/utils.py``: ``iter_video_chunks``)
  and the sampler takes the padded frames block by block (:func:`block_frame_indices`, the
  grouping of ``pipeline/causal_inference.py``);
- v1 truncates to whole blocks, and optionally adapts the count to the trajectory's angle
  (bounce / subsample) and freezes time (v1 ``datasets/test_dataset.py``,
  ``scripts/render_point_cloud.py``);
- a camera path whose length differs from the video's is resolved by :func:`align_frame_counts`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Literal

import numpy as np
import torch
from torch import Tensor

FrameCountPolicy = Literal["exact", "shortest", "hold_last", "bounce"]

FRAMES_PER_BLOCK = 3  # latent frames generated per DiT block
FRAMES_PER_LATENT = 4  # pixel frames per latent frame after the first (Wan2.1 temporal stride)
# v1 adaptive frame count (datasets/test_dataset.py)
V1_MAX_SOURCE_FRAMES = 1000  # longer videos are cut first
V1_MIN_OUTPUT_FRAMES = 121
V1_MAX_DEGREES_PER_FRAME = 0.8  # faster than this: more frames (bounce)
V1_MIN_DEGREES_PER_FRAME = 0.3  # slower than this: fewer frames (subsample)
V1_PURE_ZOOM_DEGREES = 1e-3  # below this total angle the count is left alone
V1_MIN_ADAPTIVE_FRAMES = 2


class FrameCountError(ValueError):
    """A frame count, index or policy the frame-count rules cannot use, with what to pass."""


# --- frame counts (v1.5 padding) --------------------------------------------------------------


def latent_frame_count(frames: int) -> int:
    """Latent frames the Wan2.1 VAE makes of ``frames`` pixel frames: 1 + ceil((F - 1)/4)."""
    return 1 + math.ceil((frames - 1) / FRAMES_PER_LATENT)


def padded_frame_count(valid_frames: int) -> int:
    """v1.5: the smallest 4k+1 >= ``valid_frames`` whose latent count is a multiple of 3.

    1..9 -> 9, 10..21 -> 21, 139 -> 141. The output video is cut back to ``valid_frames``.
    """
    if valid_frames < 1:
        raise FrameCountError("A scene must contain at least one valid frame")
    latents = FRAMES_PER_BLOCK * math.ceil(latent_frame_count(valid_frames) / FRAMES_PER_BLOCK)
    return (latents - 1) * FRAMES_PER_LATENT + 1


def latent_frame_groups(frames: int) -> list[range]:
    """Pixel frames of each latent frame: [0], [1..4], [5..8], ..., the last one possibly short."""
    return [range(1)] + [
        range(start, min(start + FRAMES_PER_LATENT, frames))
        for start in range(1, frames, FRAMES_PER_LATENT)
    ]


def chunk_frame_indices(
    valid_frames: int, padded_frames: int, repeat_first: bool = False
) -> list[list[int]]:
    """Source frame of every padded frame, in VAE chunks of 1, 4, 4, ... (``iter_video_chunks``).

    Padding repeats the last valid frame; ``repeat_first`` (the source video of a single-image
    scene) shows frame 0 throughout.
    """
    if valid_frames < 1 or padded_frames < valid_frames or (padded_frames - 1) % FRAMES_PER_LATENT:
        raise FrameCountError(
            f"valid={valid_frames}, padded={padded_frames}: need 1 <= valid <= padded and "
            "padded = 4k + 1 (use padded_frame_count)"
        )
    source = [0 if repeat_first else min(index, valid_frames - 1) for index in range(padded_frames)]
    return [source[0:1]] + [
        source[start : start + FRAMES_PER_LATENT]
        for start in range(1, padded_frames, FRAMES_PER_LATENT)
    ]


def padded_frame_indices(valid_frames: int) -> list[int]:
    """v1.5: the source frame of every padded frame, in order (the last valid frame repeats).

    Per-frame conditions that are not encoded (the pixel mask) are padded with these indices.
    """
    return [
        index
        for chunk in chunk_frame_indices(valid_frames, padded_frame_count(valid_frames))
        for index in chunk
    ]


def block_frame_indices(valid_frames: int) -> list[list[int]]:
    """v1.5: the source frame of every padded frame, one list per DiT block.

    A block holds FRAMES_PER_BLOCK latent frames, so it gathers that many VAE chunks (1, 4, 4,
    ...): block 0 starts with the single first frame and covers 1 + FRAMES_PER_LATENT ·
    (FRAMES_PER_BLOCK − 1) frames, every later block FRAMES_PER_LATENT · FRAMES_PER_BLOCK. As
    released: 0 | 1–4 | 5–8 (9 frames), then 12 frames a block. Each block is also a valid input
    of one streaming-encoder call (1 + 4k frames first, multiples of 4 afterwards).
    """
    chunks = chunk_frame_indices(valid_frames, padded_frame_count(valid_frames))
    return [
        [index for chunk in chunks[start : start + FRAMES_PER_BLOCK] for index in chunk]
        for start in range(0, len(chunks), FRAMES_PER_BLOCK)
    ]


def iter_video_chunks(
    frames: Tensor, padded_frames: int, repeat_first: bool = False
) -> Iterator[Tensor]:
    """``frames[T, ...]`` (all valid) streamed as the padded video, in chunks of 1, 4, 4, ... frames."""
    for indices in chunk_frame_indices(frames.shape[0], padded_frames, repeat_first):
        yield frames[torch.tensor(indices, device=frames.device)]


def truncated_frame_count(frames: int) -> int:
    """v1: the frames of the largest whole number of blocks (121 -> 117, 81 -> 81)."""
    latents = (1 + (frames - 1) // FRAMES_PER_LATENT) // FRAMES_PER_BLOCK * FRAMES_PER_BLOCK
    if latents < FRAMES_PER_BLOCK:
        raise FrameCountError(
            f"{frames} frames are fewer than one block: v1 truncation needs at least "
            f"{(FRAMES_PER_BLOCK - 1) * FRAMES_PER_LATENT + 1}; use padded_frame_count (v1.5) instead"
        )
    return (latents - 1) * FRAMES_PER_LATENT + 1


# --- v1 adaptive frame count, bounce and freeze -----------------------------------------------


def bounce_indices(num_source: int, num_target: int) -> list[int]:
    """Play forward then backward (cycle 2(n-1)) up to ``num_target`` frames; a shorter target
    subsamples with linspace, as v1 does."""
    if num_source < 1 or num_target < 1:
        raise FrameCountError(
            f"bounce needs at least one frame (source {num_source}, target {num_target})"
        )
    if num_target <= num_source:
        return np.linspace(0, num_source - 1, num_target).astype(int).tolist()
    if num_source == 1:  # v1 divides by a zero cycle here; a single frame simply holds
        return [0] * num_target
    cycle = 2 * (num_source - 1)
    return [min(step % cycle, cycle - step % cycle) for step in range(num_target)]


def trajectory_total_angle(
    pitch_keyframes: Sequence[float], yaw_keyframes: Sequence[float]
) -> float:
    """v1: ``max(Σ|Δpitch|, Σ|Δyaw|)`` in degrees over the keyframes (not the interpolated path)."""
    return float(max(np.abs(np.diff(pitch_keyframes)).sum(), np.abs(np.diff(yaw_keyframes)).sum()))


def adaptive_frame_indices(num_source: int, total_angle: float) -> list[int]:
    """v1's adaptive count: the source frame of each output frame.

    Videos over 1000 frames are cut first. Needed frames are [ceil(a/0.8)+1, floor(a/0.3)+1];
    fewer than max(needed min, 121) bounce up to it, more than the needed max are subsampled by
    linspace. A pure zoom (a ≈ 0) keeps the count but is still bounced up to 121.
    """
    num_source = min(num_source, V1_MAX_SOURCE_FRAMES)
    if total_angle > V1_PURE_ZOOM_DEGREES:
        fewest = max(V1_MIN_ADAPTIVE_FRAMES, math.ceil(total_angle / V1_MAX_DEGREES_PER_FRAME) + 1)
        most = max(V1_MIN_ADAPTIVE_FRAMES, math.floor(total_angle / V1_MIN_DEGREES_PER_FRAME) + 1)
    else:
        fewest = most = num_source
    expand_to = max(fewest, V1_MIN_OUTPUT_FRAMES)
    if num_source < expand_to:
        return bounce_indices(num_source, expand_to)
    if num_source > most:
        return np.linspace(0, num_source - 1, most).astype(int).tolist()
    return list(range(num_source))


def freeze_indices(
    num_frames: int, freeze_repeat: int, freeze_frame: int | None = None
) -> list[int]:
    """v1 bullet time: ``freeze_repeat`` extra copies of ``freeze_frame`` (default n//2) right after
    it. Apply with :meth:`Scene.select_frames` so depth and poses freeze too."""
    if freeze_repeat < 0:
        raise FrameCountError(f"freeze_repeat={freeze_repeat}: must be >= 0")
    frozen = num_frames // 2 if freeze_frame is None else max(0, min(freeze_frame, num_frames - 1))
    return list(range(frozen + 1)) + [frozen] * freeze_repeat + list(range(frozen + 1, num_frames))


def align_frame_counts(num_source: int, num_targets: int, policy: FrameCountPolicy) -> list[int]:
    """Source frame of each output frame when a camera path and a video differ in length.

    "exact":     equal lengths or an error;
    "shortest":  both are cut to the shorter (the path is cut by the caller to the result's length);
    "hold_last": one output per target pose; a short video holds its last frame (v1.5 padding);
    "bounce":    one output per target pose; a short video plays back and forth (v1 bounce).
    """
    if num_source < 1 or num_targets < 1:
        raise FrameCountError(
            f"need at least one frame and one pose (got {num_source}, {num_targets})"
        )
    if policy == "exact":
        if num_source != num_targets:
            raise FrameCountError(
                f"the camera path has {num_targets} poses but the video has {num_source} frames: "
                "retime the path, or choose the frame-count policy 'shortest', 'hold_last' or 'bounce'"
            )
        return list(range(num_source))
    if policy == "shortest":
        return list(range(min(num_source, num_targets)))
    if policy == "hold_last":
        return [min(index, num_source - 1) for index in range(num_targets)]
    if policy == "bounce":
        if num_targets <= num_source:
            return list(range(num_targets))
        return bounce_indices(num_source, num_targets)
    raise FrameCountError(
        f"frame-count policy {policy!r}: use 'exact', 'shortest', 'hold_last' or 'bounce'"
    )
