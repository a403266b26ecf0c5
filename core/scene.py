"""Scenes and frame-count policies: the source side of the explicit spatial constraint.

A :class:`Scene` is what every source (a reference video, 1 or 4 images, a prepared scene file)
is converted into once: frames, per-frame depth, pixel intrinsics and OpenCV world-to-camera poses,
validated and fitted to the model resolution. It then feeds the splat renderer (``core/splat.py``)
and the VAE. The frame-count policies decide how many frames a run has and which source frame
each one shows:

- v1.5 pads to whole blocks (``pipeline/scene_schema.py``: ``padded_frame_count``,
  ``latent_frame_groups``; ``datasets/utils.py``: ``iter_video_chunks``);
- v1 truncates to whole blocks, and optionally adapts the count to the trajectory's angle
  (bounce / subsample) and freezes time (v1 ``datasets/test_dataset.py``,
  ``scripts/render_point_cloud.py``);
- a camera path whose length differs from the video's is resolved by :func:`align_frame_counts`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .camera import check_intrinsics, check_rigid, resize_crop_geometry, resize_crop_intrinsics
from .types import DepthMaps, Intrinsics, VideoFrames, WorldToCamera

SceneKind = Literal["video", "images"]
FrameCountPolicy = Literal["exact", "shortest", "hold_last", "bounce"]

FRAMES_PER_BLOCK = 3  # latent frames generated per DiT block
FRAMES_PER_LATENT = 4  # pixel frames per latent frame after the first (Wan2.1 temporal stride)
MODEL_RESOLUTION = (480, 832)  # (height, width) of the released checkpoints
RESOLUTION_MULTIPLE = 16  # VAE stride 8 x DiT patch 2
IMAGE_SCENE_VIEWS = (1, 4)  # v1.5 image scenes: one image, or four fused views
UINT16_CODES = 65535  # v1.5 depth files: depth = min + q/65535·(max - min)
FRAME_RANGE_TOLERANCE = 1e-3  # frames may overshoot [-1, 1] by rounding only
# v1 adaptive frame count (datasets/test_dataset.py)
V1_MAX_SOURCE_FRAMES = 1000  # longer videos are cut first
V1_MIN_OUTPUT_FRAMES = 121
V1_MAX_DEGREES_PER_FRAME = 0.8  # faster than this: more frames (bounce)
V1_MIN_DEGREES_PER_FRAME = 0.3  # slower than this: fewer frames (subsample)
V1_PURE_ZOOM_DEGREES = 1e-3  # below this total angle the count is left alone
V1_MIN_ADAPTIVE_FRAMES = 2


class SceneInputError(ValueError):
    """A scene input with the wrong shape, range or geometry; the message names it and the fix."""


@dataclass(frozen=True)
class Scene:
    """Source frames with their geometry, in the canonical camera form.

    frames:          [F, 3, H, W] in [-1, 1] (a video's frames, or the V views of an image scene)
    depth:           [F, H, W] z-depth; <= 0 or non-finite marks "no depth"
    intrinsics:      [F, 3, 3] pixel K for the H×W frames
    world_to_camera: [F, 4, 4] OpenCV Tcw of each frame / view
    fps:             playback rate of the source (and of the output)
    kind:            "video" (target frame f is rendered from source frame f) or "images"
                     (every view is splatted into every target frame and fused)
    """

    frames: VideoFrames
    depth: DepthMaps
    intrinsics: Intrinsics
    world_to_camera: WorldToCamera
    fps: float
    kind: SceneKind = "video"

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    def select_frames(self, indices: Sequence[int]) -> Scene:
        """The scene re-indexed in time (bounce, subsample, freeze, hold): frames, depth, K and
        poses move together."""
        index = torch.as_tensor(list(indices), dtype=torch.long, device=self.frames.device)
        if index.numel() == 0 or index.min() < 0 or index.max() >= self.num_frames:
            raise SceneInputError(
                f"frame indices must be non-empty and within 0..{self.num_frames - 1}"
            )
        return Scene(
            frames=self.frames[index],
            depth=self.depth[index],
            intrinsics=self.intrinsics[index],
            world_to_camera=self.world_to_camera[index],
            fps=self.fps,
            kind=self.kind,
        )


# --- construction ---------------------------------------------------------------------------


def decode_depth_u16(codes: Tensor, depth_min: float, depth_max: float) -> DepthMaps:
    """v1.5 depth files: ``float32(min + q/65535·(max - min))``, computed in float64 as upstream."""
    if depth_min > depth_max or not (math.isfinite(depth_min) and math.isfinite(depth_max)):
        raise SceneInputError(
            f"depth range ({depth_min}, {depth_max}) is invalid: metadata.txt must hold finite min <= max"
        )
    if codes.dtype.is_floating_point or codes.min() < 0 or codes.max() > UINT16_CODES:
        raise SceneInputError(
            "depth codes must be integers in 0..65535 (a uint16 depth PNG or depth.mp4)"
        )
    scaled = codes.to(torch.float64) / UINT16_CODES * (depth_max - depth_min)
    return (depth_min + scaled).to(torch.float32)


def scene_from_video(
    frames: VideoFrames,
    depth: DepthMaps,
    intrinsics: Intrinsics,
    world_to_camera: WorldToCamera | None = None,
    fps: float = 16.0,
    resolution: tuple[int, int] | None = MODEL_RESOLUTION,
) -> Scene:
    """A video scene: frame f has depth f, K f (or one shared [3, 3] K) and pose f.

    ``world_to_camera=None`` means a static camera (identity for every frame). Frames and depth are
    resized to cover ``resolution`` (height, width) and centre-cropped, with K adjusted;
    ``resolution=None`` keeps the input size.
    """
    count = _frame_count(frames, "frames")
    if world_to_camera is None:
        world_to_camera = torch.eye(4, device=frames.device).expand(count, 4, 4)
    return _build_scene(frames, depth, intrinsics, world_to_camera, fps, "video", resolution)


def scene_from_images(
    images: VideoFrames,
    depth: DepthMaps,
    intrinsics: Intrinsics,
    world_to_camera: WorldToCamera,
    fps: float = 16.0,
    resolution: tuple[int, int] | None = MODEL_RESOLUTION,
) -> Scene:
    """A v1.5 image scene of 1 or 4 views, each with its own depth, K and pose."""
    views = _frame_count(images, "images")
    if views not in IMAGE_SCENE_VIEWS:
        raise SceneInputError(
            f"{views} images given: an image scene has 1 image or 4 views (v1.5 multi-image)"
        )
    return _build_scene(images, depth, intrinsics, world_to_camera, fps, "images", resolution)


def _frame_count(frames: Tensor, name: str) -> int:
    if frames.ndim != 4 or frames.shape[1] != 3:
        raise SceneInputError(
            f"{name} has shape {tuple(frames.shape)}: expected [F, 3, H, W] in [-1, 1] "
            "(a ComfyUI IMAGE [B, H, W, 3] becomes x.permute(0, 3, 1, 2) * 2 - 1)"
        )
    return int(frames.shape[0])


def _build_scene(
    frames: Tensor,
    depth: Tensor,
    intrinsics: Tensor,
    world_to_camera: Tensor,
    fps: float,
    kind: SceneKind,
    resolution: tuple[int, int] | None,
) -> Scene:
    count = _frame_count(frames, "frames")
    if not torch.isfinite(frames).all() or frames.abs().max() > 1 + FRAME_RANGE_TOLERANCE:
        raise SceneInputError(
            "frames must be finite and in [-1, 1]: map [0, 1] images with x * 2 - 1"
        )
    if depth.shape != (count, *frames.shape[-2:]):
        raise SceneInputError(
            f"depth has shape {tuple(depth.shape)} but frames are {tuple(frames.shape)}: "
            "give one [H, W] depth map per frame, at the frames' size"
        )
    if intrinsics.shape == (3, 3):
        intrinsics = intrinsics.expand(count, 3, 3)
    if intrinsics.shape != (count, 3, 3):
        raise SceneInputError(
            f"intrinsics has shape {tuple(intrinsics.shape)}: expected [3, 3] or [{count}, 3, 3] pixel K"
        )
    check_intrinsics(intrinsics, "intrinsics")
    if world_to_camera.shape != (count, 4, 4):
        raise SceneInputError(
            f"world_to_camera has shape {tuple(world_to_camera.shape)}: expected [{count}, 4, 4] "
            "OpenCV world-to-camera poses, one per frame (pad a 3x4 [R|t] with the row 0 0 0 1)"
        )
    check_rigid(world_to_camera, "world_to_camera")
    if not fps > 0:
        raise SceneInputError(f"fps={fps}: the frame rate must be positive")
    # One device and float32 throughout, as the official renderer computes.
    device = frames.device
    frames = frames.to(torch.float32)
    depth = _clean_depth(depth.to(device))
    intrinsics = intrinsics.to(device=device, dtype=torch.float32)
    if resolution is not None:
        frames, depth, intrinsics = fit_to_resolution(frames, depth, intrinsics, resolution)
    poses = world_to_camera.to(device=device, dtype=torch.float32)
    return Scene(frames, depth, intrinsics, poses, float(fps), kind)


def _clean_depth(depth: Tensor) -> DepthMaps:
    """Non-finite or non-positive depth becomes 0 ("no depth"), with a warning that counts it."""
    depth = depth.to(torch.float32)
    invalid = ~torch.isfinite(depth) | (depth <= 0)
    if invalid.all():
        raise SceneInputError(
            "depth has no finite positive value: check the depth estimator's output (z-depth, not disparity)"
        )
    if invalid.any():
        warnings.warn(
            f"depth: {int(invalid.sum())} of {depth.numel()} pixels are non-finite or <= 0; "
            "they are treated as having no depth and are not splatted",
            stacklevel=4,  # the caller of scene_from_video / scene_from_images
        )
    return torch.where(invalid, 0.0, depth)


def fit_to_resolution(
    frames: VideoFrames, depth: DepthMaps, intrinsics: Intrinsics, resolution: tuple[int, int]
) -> tuple[VideoFrames, DepthMaps, Intrinsics]:
    """Resize to cover ``resolution`` (height, width), then centre-crop; K follows.

    K follows ``core.camera.resize_crop_intrinsics`` (rows scaled, no half-pixel shift, as the
    official DA3 post-processing; the principal point shifted by the crop). Depth is
    resized with nearest so that no depth is blended across an edge or with "no depth".
    """
    height, width = resolution
    if height % RESOLUTION_MULTIPLE or width % RESOLUTION_MULTIPLE or height <= 0 or width <= 0:
        raise SceneInputError(
            f"resolution {height}x{width}: height and width must be positive multiples of "
            f"{RESOLUTION_MULTIPLE} (the released model uses {MODEL_RESOLUTION[0]}x{MODEL_RESOLUTION[1]})"
        )
    source_size, target_size = (frames.shape[-1], frames.shape[-2]), (width, height)
    if source_size == target_size:
        return frames, depth, intrinsics
    (resized_width, resized_height), (left, top) = resize_crop_geometry(source_size, target_size)
    resized = (resized_height, resized_width)
    frames = F.interpolate(
        frames, size=resized, mode="bilinear", align_corners=False, antialias=True
    )
    depth = F.interpolate(depth[:, None], size=resized, mode="nearest")[:, 0]
    intrinsics = resize_crop_intrinsics(intrinsics, source_size, target_size)
    rows, cols = slice(top, top + height), slice(left, left + width)
    return frames[..., rows, cols].clamp(-1, 1), depth[..., rows, cols], intrinsics


# --- frame counts (v1.5 padding) --------------------------------------------------------------


def latent_frame_count(frames: int) -> int:
    """Latent frames the Wan2.1 VAE makes of ``frames`` pixel frames: 1 + ceil((F - 1)/4)."""
    return 1 + math.ceil((frames - 1) / FRAMES_PER_LATENT)


def padded_frame_count(valid_frames: int) -> int:
    """v1.5: the smallest 4k+1 >= ``valid_frames`` whose latent count is a multiple of 3.

    1..9 -> 9, 10..21 -> 21, 139 -> 141. The output video is cut back to ``valid_frames``.
    """
    if valid_frames < 1:
        raise SceneInputError("A scene must contain at least one valid frame")
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
        raise SceneInputError(
            f"valid={valid_frames}, padded={padded_frames}: need 1 <= valid <= padded and "
            "padded = 4k + 1 (use padded_frame_count)"
        )
    source = [0 if repeat_first else min(index, valid_frames - 1) for index in range(padded_frames)]
    return [source[0:1]] + [
        source[start : start + FRAMES_PER_LATENT]
        for start in range(1, padded_frames, FRAMES_PER_LATENT)
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
        raise SceneInputError(
            f"{frames} frames are fewer than one block: v1 truncation needs at least "
            f"{(FRAMES_PER_BLOCK - 1) * FRAMES_PER_LATENT + 1}; use padded_frame_count (v1.5) instead"
        )
    return (latents - 1) * FRAMES_PER_LATENT + 1


# --- v1 adaptive frame count, bounce and freeze -----------------------------------------------


def bounce_indices(num_source: int, num_target: int) -> list[int]:
    """Play forward then backward (cycle 2(n-1)) up to ``num_target`` frames; a shorter target
    subsamples with linspace, as v1 does."""
    if num_source < 1 or num_target < 1:
        raise SceneInputError(
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
        raise SceneInputError(f"freeze_repeat={freeze_repeat}: must be >= 0")
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
        raise SceneInputError(
            f"need at least one frame and one pose (got {num_source}, {num_targets})"
        )
    if policy == "exact":
        if num_source != num_targets:
            raise SceneInputError(
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
    raise SceneInputError(
        f"frame-count policy {policy!r}: use 'exact', 'shortest', 'hold_last' or 'bounce'"
    )


def align_scene_to_path(scene: Scene, num_poses: int, policy: FrameCountPolicy) -> Scene:
    """The video re-indexed so that frame t drives target pose t (:func:`align_frame_counts`).

    Image scenes are returned unchanged: every view is splatted into every target frame. With
    "shortest" the caller cuts the path to the returned scene's length.
    """
    if scene.kind == "images":
        return scene
    return scene.select_frames(align_frame_counts(scene.num_frames, num_poses, policy))
