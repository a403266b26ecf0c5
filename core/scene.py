"""Scenes: the source side of the explicit spatial constraint.

A :class:`Scene` is what every source (a reference video, 1 or 4 images, a prepared scene file)
is converted into once: frames, per-frame depth, pixel intrinsics and OpenCV world-to-camera poses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .types import DepthMaps, Intrinsics, VideoFrames, WorldToCamera

SceneKind = Literal["video", "images"]


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
