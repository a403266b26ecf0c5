"""Scenes: the source side of the explicit spatial constraint.

A :class:`Scene` is what every source (a reference video, 1 or 4 images, a prepared scene file)
is converted into once: frames, per-frame depth, pixel intrinsics and OpenCV world-to-camera poses,
validated and fitted to the model resolution. It then feeds the splat renderer (``core/splat.py``)
and the VAE. Which source frame each output frame shows is decided by the frame-count policies of
``core/frame_counts.py``; :func:`align_scene_to_path` applies one to a scene.

Follows v1.5's scene inputs (a video, or 1 or 4 images, each with depth, K and pose; depth files
quantised to 16 bits) and, when fitting to the model resolution, the K convention of the official
DA3 post-processing (``core/camera.py``).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from .camera import check_intrinsics, check_rigid, resize_crop_geometry, resize_crop_intrinsics
from .frame_counts import (
    FRAMES_PER_BLOCK,
    FrameCountPolicy,
    adaptive_frame_indices,
    align_frame_counts,
    chunk_frame_indices,
    freeze_indices,
    padded_frame_count,
    truncated_frame_count,
)
from .types import DepthMaps, Intrinsics, VideoFrames, WorldToCamera

# The frame-count names are re-exported: nodes/ imports them from here.
__all__ = [
    "FRAMES_PER_BLOCK",
    "IMAGE_SCENE_VIEWS",
    "MODEL_RESOLUTION",
    "UINT16_CODES",
    "Scene",
    "SceneInputError",
    "SceneKind",
    "adaptive_frame_indices",
    "align_frame_counts",
    "align_scene_to_path",
    "chunk_frame_indices",
    "decode_depth_u16",
    "fit_to_resolution",
    "freeze_indices",
    "padded_frame_count",
    "scene_from_images",
    "scene_from_video",
    "truncated_frame_count",
]

SceneKind = Literal["video", "images"]

MODEL_RESOLUTION = (480, 832)  # (height, width) of the released checkpoints
RESOLUTION_MULTIPLE = 16  # VAE stride 8 x DiT patch 2
IMAGE_SCENE_VIEWS = (1, 4)  # v1.5 image scenes: one image, or four fused views
UINT16_CODES = 65535  # v1.5 depth files: depth = min + q/65535·(max - min)
FRAME_RANGE_TOLERANCE = 1e-3  # frames may overshoot [-1, 1] by rounding only


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


def align_scene_to_path(scene: Scene, num_poses: int, policy: FrameCountPolicy) -> Scene:
    """The video re-indexed so that frame t drives target pose t (:func:`align_frame_counts`).

    Image scenes are returned unchanged: every view is splatted into every target frame. With
    "shortest" the caller cuts the path to the returned scene's length.
    """
    if scene.kind == "images":
        return scene
    return scene.select_frames(align_frame_counts(scene.num_frames, num_poses, policy))
