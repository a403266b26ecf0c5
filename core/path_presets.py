"""Camera-path presets: the named moves an artist reaches for, as data.

Where it sits: the camera-path node picks a preset by name; :func:`preset_path` turns it into a
:class:`~core.paths.CameraPath` anchored to the scene's source cameras (``core/paths.py``).

Every preset is a :class:`Preset` in :data:`PRESETS`: a motion function of eased progress
``e ∈ [0, 1]`` and an amplitude, with a default amplitude and its unit. A motion is a set of
per-frame :class:`Motion` channels, and one builder turns any channel mix into poses:

    relative c2w = orbit(pitch, yaw about the pivot) @ [local rotation (pan, tilt, roll) | offset]

- *orbit* is v1 ``sphere2pose`` (``core/trajectory_v1.py``): the camera circles the pivot
  ``(0, 0, radius_ratio · scene_depth)`` in front of the first source camera and keeps facing it;
  positive pitch orbits up, positive yaw orbits left (the official "radius × foreground depth");
- *pan* turns right for positive angles, *tilt* turns down, *roll* turns clockwise as seen from
  behind the camera (OpenCV axes: x right, y down, z forward);
- *truck* moves right, *pedestal* moves up, *dolly* moves forward, in multiples of ``scene_depth``.

Amplitudes are in degrees (unit ``"degrees"``) or multiples of the scene's depth (``"depth"``).
The official v1 moves ``x_y_circle_cycle`` and ``zoom_out_in`` (v1 ``traj/*.txt``) run through the
exact v1 keyframe semantics; their amplitude scales the keyed radius line. ``rotation_only``
zeroes the translation, as v1 ``--rotation_only`` does.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Literal

import numpy as np
import torch
from kornia.geometry.conversions import axis_angle_to_rotation_matrix
from torch import Tensor

from .camera import pose_from_rotation_translation
from .paths import CameraPath, PathError, ease, path_from_relative_motion
from .trajectory_v1 import (
    KeyframeLines,
    keyframe_camera_to_world,
    scaled_radii,
    sphere_camera_to_world,
)
from .types import CameraToWorld, Intrinsics, WorldToCamera

AmplitudeUnit = Literal["degrees", "depth"]
Progress = Tensor  # [T] eased progress in [0, 1]

#: Official v1 keyframe files (v1 ``traj/x_y_circle_cycle.txt``, ``traj/zoom_out_in.txt``):
#: pitch line, yaw line, radius line.
X_Y_CIRCLE_CYCLE = KeyframeLines(
    pitch_degrees=(0, 10, 20, 10, 0, -10, -20, -10, 0, 0, 0, 0, 0, 0)
    + (0, 10, 20, 10, 0, -10, -20, -10, 0, 0, 0, 0, 0, 0)
    + (0, 10, 20, 10, 0, -10, -20, -10, 0),
    yaw_degrees=(0, 0, 0, 0, 0, 0, 10, 20, 10, 0, -10, -20, -10, 0)
    + (0, 10, 20, 10, 0, -10, -20, -10, 0, 0, 10, 20, 10, 0, -10, -20, -10, 0)
    + (0, 0, 0, 0, 0),
    radius=(1,) * 45,
)
ZOOM_OUT_IN = KeyframeLines(
    pitch_degrees=(0, 0, 0, 0),
    yaw_degrees=(0, 0, 0, 0),
    radius=(0, -0.25, -0.5, -0.75, -1, -0.75, -0.5, -0.25, 0)
    + (0, 0.25, 0.5, 0.75, 1, 0.75, 0.5, 0.25, 0),
)

#: ``spiral`` dollies in by this many scene depths while it circles.
SPIRAL_DOLLY_FRACTION = 0.5
#: ``arc`` rises by this fraction of its sweep at mid-move and settles back.
ARC_RISE_FRACTION = 0.5


class PresetError(PathError):
    """An unknown preset or a bad preset parameter."""


def _zeros(progress: Progress) -> Tensor:
    return torch.zeros_like(progress)


@dataclass(frozen=True)
class Motion:
    """Per-frame motion channels ``[T]``: angles in degrees, offsets in scene-depth multiples."""

    orbit_pitch: Tensor
    orbit_yaw: Tensor
    pan: Tensor
    tilt: Tensor
    roll: Tensor
    truck: Tensor
    pedestal: Tensor
    dolly: Tensor

    @classmethod
    def of(cls, progress: Progress, **channels: Tensor) -> Motion:
        """A motion with the named channels set and every other channel still."""
        names = [channel.name for channel in fields(cls)]
        return cls(**{name: channels.get(name, _zeros(progress)) for name in names})


MotionFunction = Callable[[Progress, float], Motion]


@dataclass(frozen=True)
class Preset:
    """A named move: its motion, default amplitude and the amplitude's unit."""

    motion: MotionFunction | None
    default_amplitude: float
    unit: AmplitudeUnit
    description: str
    official_keyframes: KeyframeLines | None = field(default=None)


def _channel(name: str, sign: float) -> MotionFunction:
    return lambda progress, amplitude: Motion.of(progress, **{name: sign * amplitude * progress})


def _arc(sign: float) -> MotionFunction:
    def motion(progress: Progress, amplitude: float) -> Motion:
        rise = ARC_RISE_FRACTION * amplitude * torch.sin(math.pi * progress)
        return Motion.of(progress, orbit_yaw=sign * amplitude * progress, orbit_pitch=rise)

    return motion


def _spiral(progress: Progress, amplitude: float) -> Motion:
    # One turn of a circle of angular diameter `amplitude` through the source view.
    turn = 2.0 * math.pi * progress
    return Motion.of(
        progress,
        orbit_yaw=0.5 * amplitude * torch.sin(turn),
        orbit_pitch=0.5 * amplitude * (1.0 - torch.cos(turn)),
        dolly=SPIRAL_DOLLY_FRACTION * progress,
    )


PRESETS: dict[str, Preset] = {
    "static": Preset(lambda progress, amplitude: Motion.of(progress), 0.0, "degrees", "no motion"),
    "orbit_left": Preset(_channel("orbit_yaw", 1.0), 20.0, "degrees", "circle left around it"),
    "orbit_right": Preset(_channel("orbit_yaw", -1.0), 20.0, "degrees", "circle right around it"),
    "orbit_up": Preset(_channel("orbit_pitch", 1.0), 15.0, "degrees", "rise over the subject"),
    "orbit_down": Preset(_channel("orbit_pitch", -1.0), 15.0, "degrees", "sink under the subject"),
    "arc_left": Preset(_arc(1.0), 30.0, "degrees", "orbit left, rising mid-move"),
    "arc_right": Preset(_arc(-1.0), 30.0, "degrees", "orbit right, rising mid-move"),
    "spiral": Preset(_spiral, 20.0, "degrees", "one circle around the subject while moving in"),
    "dolly_in": Preset(_channel("dolly", 1.0), 0.5, "depth", "move forward"),
    "dolly_out": Preset(_channel("dolly", -1.0), 0.5, "depth", "move backward"),
    "truck_left": Preset(_channel("truck", -1.0), 0.3, "depth", "slide left"),
    "truck_right": Preset(_channel("truck", 1.0), 0.3, "depth", "slide right"),
    "pedestal_up": Preset(_channel("pedestal", 1.0), 0.3, "depth", "rise straight up"),
    "pedestal_down": Preset(_channel("pedestal", -1.0), 0.3, "depth", "sink straight down"),
    "pan_left": Preset(_channel("pan", -1.0), 30.0, "degrees", "turn left in place"),
    "pan_right": Preset(_channel("pan", 1.0), 30.0, "degrees", "turn right in place"),
    "tilt_up": Preset(_channel("tilt", -1.0), 20.0, "degrees", "look up in place"),
    "tilt_down": Preset(_channel("tilt", 1.0), 20.0, "degrees", "look down in place"),
    "roll_clockwise": Preset(_channel("roll", 1.0), 15.0, "degrees", "roll clockwise"),
    "roll_counterclockwise": Preset(_channel("roll", -1.0), 15.0, "degrees", "roll anticlockwise"),
    "x_y_circle_cycle": Preset(
        None, 1.0, "depth", "official v1 up/down, left/right circling", X_Y_CIRCLE_CYCLE
    ),
    "zoom_out_in": Preset(None, 1.0, "depth", "official v1 zoom out then in", ZOOM_OUT_IN),
}


def _motion_camera_to_world(
    motion: Motion, scene_depth: float, radius_ratio: float
) -> CameraToWorld:
    pivot = np.full(len(motion.orbit_pitch), radius_ratio * scene_depth)
    orbit = sphere_camera_to_world(motion.orbit_pitch.numpy(), motion.orbit_yaw.numpy(), pivot)
    # Pan and tilt use the same axis conventions as the orbit's Ry / Rx (radius 0: no move).
    turn = sphere_camera_to_world(motion.tilt.numpy(), motion.pan.numpy(), np.zeros(len(pivot)))
    no_roll = _zeros(motion.roll)
    roll_vectors = torch.stack([no_roll, no_roll, torch.deg2rad(motion.roll)], dim=-1)
    rotation = turn[:, :3, :3] @ axis_angle_to_rotation_matrix(roll_vectors)
    # Pedestal "up" is −y in OpenCV camera axes.
    offset = torch.stack([motion.truck, -motion.pedestal, motion.dolly], dim=-1) * scene_depth
    return orbit @ pose_from_rotation_translation(rotation, offset)


def preset_motion(
    name: str,
    frames: int,
    *,
    amplitude: float | None = None,
    easing: str = "linear",
    scene_depth: float = 1.0,
    radius_ratio: float = 1.0,
    rotation_only: bool = False,
) -> CameraToWorld:
    """Relative camera-to-world motion ``[frames, 4, 4]`` of a preset (first camera's frame)."""
    if name not in PRESETS:
        raise PresetError(f"unknown camera preset {name!r}; valid presets: {', '.join(PRESETS)}")
    if frames < 1:
        raise PresetError(f"frames must be at least 1, got {frames}")
    if not (math.isfinite(scene_depth) and scene_depth > 0):
        raise PresetError(f"scene_depth must be a positive depth, got {scene_depth}")
    preset = PRESETS[name]
    amplitude = preset.default_amplitude if amplitude is None else float(amplitude)
    if not math.isfinite(amplitude):
        raise PresetError(f"amplitude of {name!r} must be a finite number, got {amplitude}")
    progress = ease(torch.linspace(0.0, 1.0, frames, dtype=torch.float64), easing)
    if preset.official_keyframes is not None:
        keys = preset.official_keyframes
        radius_line = tuple(amplitude * value for value in keys.radius)
        scaled = KeyframeLines(keys.pitch_degrees, keys.yaw_degrees, radius_line)
        radius, radius_zoom = scaled_radii(scaled, "test_dataset", scene_depth, radius_ratio)
        return keyframe_camera_to_world(
            keys.pitch_degrees,
            keys.yaw_degrees,
            radius,
            radius_zoom,
            progress.numpy(),
            rotation_only=rotation_only,
        )
    motion = preset.motion(progress, amplitude)
    relative = _motion_camera_to_world(motion, scene_depth, radius_ratio)
    if rotation_only:
        relative[:, :3, 3] = 0.0
    return relative


def preset_path(
    name: str,
    frames: int,
    source_world_to_camera: WorldToCamera | None = None,
    *,
    amplitude: float | None = None,
    easing: str = "linear",
    scene_depth: float = 1.0,
    radius_ratio: float = 1.0,
    rotation_only: bool = False,
    relative_to_source: bool = False,
    intrinsics: Intrinsics | None = None,
    fps: float | None = None,
) -> CameraPath:
    """A preset as a target path, anchored to the source cameras as the official renderer does.

    ``scene_depth`` is the scene's foreground depth (v1: the first frame's minimum depth; 1 keeps
    raw DA3 units, as v1 ``render_point_cloud.py``); the orbit pivot sits at
    ``radius_ratio · scene_depth``.
    """
    relative = preset_motion(
        name,
        frames,
        amplitude=amplitude,
        easing=easing,
        scene_depth=scene_depth,
        radius_ratio=radius_ratio,
        rotation_only=rotation_only,
    )
    return path_from_relative_motion(
        relative,
        source_world_to_camera,
        relative_to_source=relative_to_source,
        intrinsics=intrinsics,
        fps=fps,
    )
