"""The official v1 camera trajectory: three keyframe lines (pitch, yaw, r) → target poses.

Where it sits: a v1 trajectory file (``core/path_files.py`` reads it) or one of the official
presets (``core/path_presets.py``) becomes relative camera-to-world motions here; ``core/paths.py``
anchors them to the scene's source cameras as canonical world-to-camera poses.

Follows, exactly (SPEC-inspatio-world.md §5, fixtures/README.md §2), v1 ``datasets/utils.py``
(``txt_interpolation``, ``sphere2pose``, ``generate_traj_txt``) and the trajectory part of v1
``datasets/test_dataset.py`` (radius scaling, the adaptive rule's total angle). The
upstream quirks are kept on purpose and marked where they happen:

- more than 3 keys → a *smoothing* ``UnivariateSpline(k=3)`` with the default ``s``: it does not
  pass through the keys; the endpoint pinning of the angles is a no-op (``a[0] = a[0]``), only
  the radii get their endpoints reset;
- angles and radii are rounded to float32 before the trigonometry, and the trigonometry itself
  runs in float32; the matrices are float64;
- when every yaw is 0 the ``r_zoom`` radii are used, and when every angle is 0 the motion is a
  dolly ``T = (0, 0, r)``.

Axes: OpenCV (x right, y down, z forward). Positive pitch orbits up, positive yaw orbits left,
around the point ``(0, 0, r)`` in front of the first camera.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from scipy.interpolate import UnivariateSpline

from .frame_counts import trajectory_total_angle
from .paths import CameraPath, path_from_relative_motion
from .types import CameraToWorld, Intrinsics, WorldToCamera

#: More keys than this → smoothing spline; this many or fewer → piecewise linear (v1 rule).
MAX_LINEAR_KEYFRAMES = 3
#: Linear interpolation (``interp1d``) needs two keys; upstream fails on a one-value line.
MIN_KEYS_PER_LINE = 2
SPLINE_DEGREE = 3
#: ``txt_interpolation`` modes: upstream's smoothing spline and ``interp1d``.
SMOOTH_MODE, LINEAR_MODE = "smooth", "linear"


TrajectoryStyle = Literal["test_dataset", "render_point_cloud"]


class TrajectoryError(ValueError):
    """A v1 trajectory input that cannot be used; the message names the input and the fix."""


@dataclass(frozen=True)
class KeyframeLines:
    """The three lines of a v1 trajectory file; the lines may have different lengths.

    pitch_degrees: line 1, ``x_up_angle`` (positive orbits up)
    yaw_degrees:   line 2, ``y_left_angle`` (positive orbits left)
    radius:        line 3, ``r`` in units of the orbit radius (see :func:`scaled_radii`)
    """

    pitch_degrees: tuple[float, ...]
    yaw_degrees: tuple[float, ...]
    radius: tuple[float, ...]

    def __post_init__(self) -> None:
        for name in ("pitch_degrees", "yaw_degrees", "radius"):
            values = getattr(self, name)
            if len(values) < MIN_KEYS_PER_LINE:
                raise TrajectoryError(
                    f"keyframe line {name} has {len(values)} value(s); a v1 trajectory line "
                    "needs at least 2 (repeat the value for a constant line)"
                )
            if not all(math.isfinite(value) for value in values):
                raise TrajectoryError(f"keyframe line {name} contains NaN or infinite values")


# --- interpolation ---------------------------------------------------------------------------


KeyValues = tuple[float, ...] | list[float]
InterpolationMode = Literal["smooth", "linear"]


def interpolation_mode_for(values: KeyValues) -> InterpolationMode:
    """The mode ``generate_traj_txt`` passes to ``txt_interpolation``: it goes by the key count."""
    return SMOOTH_MODE if len(values) > MAX_LINEAR_KEYFRAMES else LINEAR_MODE


def interpolate_line(
    values: KeyValues, sample_positions: np.ndarray, mode: InterpolationMode | None = None
) -> np.ndarray:
    """v1 ``txt_interpolation`` evaluated at ``sample_positions`` in [0, 1] (float64).

    ``sample_positions`` run from 0 to 1 (the first and last samples are the path's ends).

    The keys sit at ``linspace(0, 1, len(values))``. ``"smooth"``: ``UnivariateSpline(k=3)``
    with scipy's default smoothing factor ``s = len(values)``, a smoothing spline that misses
    the keys on purpose (upstream behaviour). ``"linear"``: as ``interp1d``. ``None`` picks the
    mode as ``generate_traj_txt`` does (:func:`interpolation_mode_for`).
    """
    mode = interpolation_mode_for(values) if mode is None else mode
    key_positions = np.linspace(0.0, 1.0, len(values))
    key_values = np.asarray(values, dtype=np.float64)
    if mode == SMOOTH_MODE:
        if len(values) <= SPLINE_DEGREE:
            raise TrajectoryError(
                f"smooth interpolation of {len(values)} keys: a cubic spline needs at least "
                f"{SPLINE_DEGREE + 1}; use mode {LINEAR_MODE!r} or add keys"
            )
        return UnivariateSpline(key_positions, key_values, k=SPLINE_DEGREE)(sample_positions)
    if mode == LINEAR_MODE:
        return np.interp(sample_positions, key_positions, key_values)
    raise TrajectoryError(
        f"interpolation mode {mode!r} is unknown; use {SMOOTH_MODE!r}, {LINEAR_MODE!r} or None "
        "(by key count)"
    )


def interpolate_line_uniform(
    values: KeyValues, frames: int, mode: InterpolationMode | None = None
) -> np.ndarray:
    """``txt_interpolation(values, frames, mode)``: the line sampled at ``linspace(0, 1, frames)``.

    ``mode=None`` picks it by key count, as ``generate_traj_txt`` does.
    """
    return interpolate_line(values, np.linspace(0.0, 1.0, frames), mode)


# --- poses -----------------------------------------------------------------------------------


def sphere_camera_to_world(
    pitch_degrees: np.ndarray,
    yaw_degrees: np.ndarray,
    radius: np.ndarray,
    *,
    zoom: bool = False,
    rotation_only: bool = False,
) -> CameraToWorld:
    """v1 ``sphere2pose`` for every sample: ``[T, 4, 4]`` float64 camera-to-world.

    ``R = Ry(yaw) @ Rx(pitch)`` and ``T = (−r·cos p·sin y, −r·sin p, r − r·cos p·cos y)``: the
    camera orbits the point ``(0, 0, r)`` and keeps looking at it. ``zoom`` gives ``T = (0, 0, r)``
    (a dolly); ``rotation_only`` gives ``T = 0`` (upstream checks ``rotation_only`` first, then
    ``zoom``, so a zoom wins).
    """
    # Upstream casts each value with np.float32 and does the trigonometry in float32.
    pitch = torch.deg2rad(torch.as_tensor(np.asarray(pitch_degrees, dtype=np.float32)))
    yaw = torch.deg2rad(torch.as_tensor(np.asarray(yaw_degrees, dtype=np.float32)))
    r = torch.as_tensor(np.asarray(radius, dtype=np.float32))
    sin_pitch, cos_pitch = torch.sin(pitch), torch.cos(pitch)
    sin_yaw, cos_yaw = torch.sin(yaw), torch.cos(yaw)
    zeros, ones = torch.zeros_like(pitch), torch.ones_like(pitch)
    # The rotation matrices are built from the float32 values but multiplied in float64.
    rotation_yaw = torch.stack(
        [
            torch.stack([cos_yaw, zeros, sin_yaw], dim=-1),
            torch.stack([zeros, ones, zeros], dim=-1),
            torch.stack([-sin_yaw, zeros, cos_yaw], dim=-1),
        ],
        dim=-2,
    ).double()
    rotation_pitch = torch.stack(
        [
            torch.stack([ones, zeros, zeros], dim=-1),
            torch.stack([zeros, cos_pitch, sin_pitch], dim=-1),
            torch.stack([zeros, -sin_pitch, cos_pitch], dim=-1),
        ],
        dim=-2,
    ).double()
    if zoom:
        translation = torch.stack([zeros, zeros, r], dim=-1)
    elif rotation_only:
        translation = torch.zeros(len(r), 3)
    else:
        # float32 arithmetic, as upstream (np.float32 scalars times np.float32 scalars).
        translation = torch.stack(
            [-r * cos_pitch * sin_yaw, -r * sin_pitch, r - r * cos_pitch * cos_yaw], dim=-1
        )
    camera_to_world = torch.eye(4, dtype=torch.float64).repeat(len(r), 1, 1)
    camera_to_world[:, :3, :3] = rotation_yaw @ rotation_pitch
    camera_to_world[:, :3, 3] = translation.double()
    return camera_to_world


def keyframe_camera_to_world(
    pitch_degrees: KeyValues,
    yaw_degrees: KeyValues,
    radius: KeyValues,
    radius_zoom: KeyValues,
    sample_positions: np.ndarray,
    *,
    rotation_only: bool = False,
) -> CameraToWorld:
    """v1 ``generate_traj_txt`` at arbitrary ``sample_positions`` in [0, 1]: ``[T, 4, 4]`` c2w.

    With ``linspace(0, 1, n)`` this is ``generate_traj_txt(pitch, yaw, r, r_zoom, n,
    is_translation=rotation_only)`` exactly (see :func:`official_camera_to_world`); other
    positions re-time the same curve (eased presets).
    """
    pitch = interpolate_line(pitch_degrees, sample_positions)
    yaw = interpolate_line(yaw_degrees, sample_positions)
    radii = interpolate_line(radius, sample_positions)
    radii_zoom = interpolate_line(radius_zoom, sample_positions)
    # Upstream resets the first and last radius samples to the end keys (the smoothing spline
    # misses them), but its angle reset is `a[0] = a[0]`, a no-op: the angles are left alone.
    for interpolated, keys in ((radii, radius), (radii_zoom, radius_zoom)):
        if interpolation_mode_for(keys) == SMOOTH_MODE:
            interpolated[0] = keys[0]
            interpolated[-1] = keys[-1]
    zoom = bool(np.all(pitch == 0) and np.all(yaw == 0))
    no_yaw = bool(np.all(yaw == 0))
    return sphere_camera_to_world(
        pitch, yaw, radii_zoom if no_yaw else radii, zoom=zoom, rotation_only=rotation_only
    )


def official_camera_to_world(
    pitch_degrees: KeyValues,
    yaw_degrees: KeyValues,
    radius: KeyValues,
    radius_zoom: KeyValues,
    frames: int,
    *,
    rotation_only: bool = False,
) -> CameraToWorld:
    """``generate_traj_txt(pitch, yaw, r, r_zoom, frames, is_translation=rotation_only)`` (Twc)."""
    if frames < 1:
        raise TrajectoryError(f"frames must be at least 1, got {frames}")
    positions = np.linspace(0.0, 1.0, frames)
    return keyframe_camera_to_world(
        pitch_degrees, yaw_degrees, radius, radius_zoom, positions, rotation_only=rotation_only
    )


def scaled_radii(
    keys: KeyframeLines,
    style: TrajectoryStyle,
    foreground_depth: float = 1.0,
    radius_ratio: float = 1.0,
) -> tuple[list[float], list[float]]:
    """The ``(r, r_zoom)`` lines the official caller passes to ``generate_traj_txt``.

    ``"test_dataset"`` (v1 ``datasets/test_dataset.py``): ``r = r_raw·(depth·ratio)`` and
    ``r_zoom = r_raw·depth``, with ``depth`` the first frame's minimum depth. The README's "radius
    × foreground depth". ``"render_point_cloud"`` (v1 ``scripts/render_point_cloud.py``, what the
    official renders actually use): the raw ``r`` for both (SPEC §5, "Discrepancy in v1").
    """
    if style == "render_point_cloud":
        return list(keys.radius), list(keys.radius)
    if style != "test_dataset":
        raise TrajectoryError(
            f"unknown trajectory style {style!r}: use 'test_dataset' or 'render_point_cloud'"
        )
    if not (math.isfinite(foreground_depth) and foreground_depth > 0):
        raise TrajectoryError(f"foreground_depth must be a positive depth, got {foreground_depth}")
    # Same operation order as upstream (radius first, then each value times it) for equal rounding.
    orbit_radius = foreground_depth * radius_ratio
    return [value * orbit_radius for value in keys.radius], [
        value * foreground_depth for value in keys.radius
    ]


def trajectory_camera_to_world(
    keys: KeyframeLines,
    frames: int,
    style: TrajectoryStyle = "render_point_cloud",
    *,
    foreground_depth: float = 1.0,
    radius_ratio: float = 1.0,
    rotation_only: bool = False,
) -> CameraToWorld:
    """Relative camera-to-world motions ``[frames, 4, 4]`` of a v1 file, radii scaled by style."""
    radius, radius_zoom = scaled_radii(keys, style, foreground_depth, radius_ratio)
    return official_camera_to_world(
        keys.pitch_degrees,
        keys.yaw_degrees,
        radius,
        radius_zoom,
        frames,
        rotation_only=rotation_only,
    )


def trajectory_path(
    keys: KeyframeLines,
    frames: int,
    source_world_to_camera: WorldToCamera | None = None,
    style: TrajectoryStyle = "render_point_cloud",
    *,
    foreground_depth: float = 1.0,
    radius_ratio: float = 1.0,
    rotation_only: bool = False,
    relative_to_source: bool = False,
    intrinsics: Intrinsics | None = None,
    fps: float | None = None,
) -> CameraPath:
    """Target path of a v1 trajectory file: ``Tcw = inv(inv(c2w_src0) @ rel)`` per frame.

    Without source poses this is v1 ``TestDataset``'s ``target_extrinsics`` (``inv(rel)``); with
    them, v1 ``generate_target_c2ws`` (and ``relative_to_source`` as there).
    """
    relative = trajectory_camera_to_world(
        keys,
        frames,
        style,
        foreground_depth=foreground_depth,
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


# --- adaptive frame count (v1 TestDataset) ---------------------------------------------------


def total_keyframe_angle(keys: KeyframeLines) -> float:
    """The v1 adaptive rule's input, ``max(Σ|Δpitch|, Σ|Δyaw|)`` over the *keys* (degrees).

    The rule itself (bounce / subsample indices) is ``core.frame_counts.adaptive_frame_indices``.
    """
    return trajectory_total_angle(keys.pitch_degrees, keys.yaw_degrees)
