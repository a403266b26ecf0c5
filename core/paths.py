"""Camera paths: what an artist edits. Presets, keyframes, interpolation, retiming, file formats.

Canonical form (ARCHITECTURE.md, Contracts): OpenCV axes, world-to-camera 4×4 per output frame.
"""

from __future__ import annotations

from dataclasses import dataclass

from .types import Intrinsics, WorldToCamera


@dataclass(frozen=True)
class CameraPath:
    """One world-to-camera pose per output frame.

    world_to_camera: [T, 4, 4] OpenCV Tcw (float64)
    intrinsics:      [3, 3] target K, or None to use the scene's first K (the official default)
    fps:             playback rate, or None to follow the scene
    """

    world_to_camera: WorldToCamera
    intrinsics: Intrinsics | None = None
    fps: float | None = None

    @property
    def num_frames(self) -> int:
        return int(self.world_to_camera.shape[0])
