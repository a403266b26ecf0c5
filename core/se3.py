"""SE(3) interpolation of rigid camera poses: smooth or linear curves through keyed poses.

Where it sits: ``core/paths.py`` evaluates keyframes, resamples and retimes camera paths with
these functions; they know nothing about paths, only about keyed poses and sample times.

Camera *centres* follow a cubic Hermite spline with Catmull-Rom tangents on the keys' times
(``"smooth"``) or straight lines (``"linear"``); camera *orientations* follow Shoemake's squad on
SO(3) (``"smooth"``, K. Shoemake, "Animating rotation with quaternion curves", SIGGRAPH 1985 /
"Quaternion calculus for animation", 1987), or slerp (``"linear"``). Interpolating centres and
rotations, never raw matrix entries, keeps every interpolated pose rigid. Rotations are handled
as matrices with kornia's rotation-vector maps (``Exp``/``Log`` on SO(3)).
"""

from __future__ import annotations

from typing import Literal

import torch
from kornia.geometry.conversions import (
    axis_angle_to_rotation_matrix,
    rotation_matrix_to_axis_angle,
)
from torch import Tensor

from .camera import camera_centres, check_rigid, invert_rigid, pose_from_rotation_translation
from .types import WorldToCamera

Interpolation = Literal["linear", "smooth"]
INTERPOLATIONS = ("linear", "smooth")
RotationVectors = Tensor  # [..., 3] axis × angle (radians)
Rotations = Tensor  # [..., 3, 3] rotation matrices
KeyTimes = Tensor  # [K] strictly increasing key times (frame indices)
SampleTimes = Tensor  # [T] times at which to evaluate a curve


class InterpolationError(ValueError):
    """Keys or options that cannot be interpolated; the message says which and how to fix it."""


def _check_interpolation(interpolation: str) -> None:
    if interpolation not in INTERPOLATIONS:
        raise InterpolationError(
            f"unknown interpolation {interpolation!r}: use one of {', '.join(INTERPOLATIONS)}"
        )


def _segments(key_times: KeyTimes, sample_times: SampleTimes) -> tuple[Tensor, Tensor]:
    """Segment index ``i`` (keys i, i+1) and local parameter ``u`` in [0, 1] of every sample.

    Samples before the first key or after the last hold the end key (``u`` clamps).
    """
    clamped = sample_times.clamp(key_times[0], key_times[-1])
    last_segment = len(key_times) - 2
    segment = (torch.searchsorted(key_times, clamped, right=True) - 1).clamp(0, last_segment)
    span = key_times[segment + 1] - key_times[segment]
    return segment, ((clamped - key_times[segment]) / span).clamp(0.0, 1.0)


def _check_keys(key_times: KeyTimes, key_count: int) -> None:
    if key_times.ndim != 1 or len(key_times) != key_count or key_count < 1:
        raise InterpolationError(
            f"need one key time per key: {list(key_times.shape)} times for {key_count} keys"
        )
    if not bool((key_times[1:] > key_times[:-1]).all()):
        raise InterpolationError(
            f"key times must be strictly increasing, got {key_times.tolist()} "
            "(two keys on the same frame?)"
        )


def interpolate_points(
    key_times: KeyTimes,
    key_points: Tensor,
    sample_times: SampleTimes,
    interpolation: Interpolation = "smooth",
) -> Tensor:
    """``[K, 3]`` points at increasing ``key_times`` → ``[T, 3]`` at ``sample_times``.

    ``"smooth"``: cubic Hermite with Catmull-Rom tangents ``(p[i+1] − p[i−1])/(t[i+1] − t[i−1])``
    (one-sided at the ends), which accounts for uneven key spacing and passes through every key.
    Two keys give a straight line either way.
    """
    _check_interpolation(interpolation)
    _check_keys(key_times, len(key_points))
    if len(key_times) == 1:
        return key_points.expand(len(sample_times), -1).clone()
    segment, u = _segments(key_times, sample_times)
    start, end = key_points[segment], key_points[segment + 1]
    u = u[:, None]
    if interpolation == "linear":
        return start + u * (end - start)
    after = torch.cat([key_points[1:], key_points[-1:]])
    before = torch.cat([key_points[:1], key_points[:-1]])
    times_after = torch.cat([key_times[1:], key_times[-1:]])
    times_before = torch.cat([key_times[:1], key_times[:-1]])
    tangents = (after - before) / (times_after - times_before)[:, None]
    span = (key_times[segment + 1] - key_times[segment])[:, None]
    # Cubic Hermite basis functions of the local parameter u.
    start_weight = 2 * u**3 - 3 * u**2 + 1
    start_tangent_weight = u**3 - 2 * u**2 + u
    end_weight = -2 * u**3 + 3 * u**2
    end_tangent_weight = u**3 - u**2
    return (
        start_weight * start
        + start_tangent_weight * span * tangents[segment]
        + end_weight * end
        + end_tangent_weight * span * tangents[segment + 1]
    )


def slerp(start: Rotations, end: Rotations, weight: Tensor) -> Rotations:
    """Geodesic between rotations ``[N, 3, 3]``: ``start · Exp(w · Log(startᵀ · end))``."""
    step: RotationVectors = rotation_matrix_to_axis_angle(start.transpose(-1, -2) @ end)
    return start @ axis_angle_to_rotation_matrix(step * weight[:, None])


def interpolate_rotations(
    key_times: KeyTimes,
    key_rotations: Rotations,
    sample_times: SampleTimes,
    interpolation: Interpolation = "smooth",
) -> Rotations:
    """``[K, 3, 3]`` rotations at ``key_times`` → ``[T, 3, 3]`` by slerp or squad.

    Squad blends the key geodesic with one between inner controls
    ``s_i = R_i · Exp(−(ω_i − ω_{i−1})/4)``, ``ω_i = Log(R_iᵀ R_{i+1})`` (Shoemake's
    ``q_i·exp(−(log(q_i⁻¹q_{i+1}) + log(q_i⁻¹q_{i−1}))/4)`` in rotation vectors, which are twice
    the quaternion logarithm); this makes the curve C¹ through the keys. At the ends ``s = R``.
    """
    _check_interpolation(interpolation)
    _check_keys(key_times, len(key_rotations))
    if len(key_times) == 1:
        return key_rotations.expand(len(sample_times), -1, -1).clone()
    segment, u = _segments(key_times, sample_times)
    along_keys = slerp(key_rotations[segment], key_rotations[segment + 1], u)
    if interpolation == "linear":
        return along_keys
    steps: RotationVectors = rotation_matrix_to_axis_angle(
        key_rotations[:-1].transpose(-1, -2) @ key_rotations[1:]
    )
    no_bend = torch.zeros_like(steps[:1])
    bend = torch.cat([no_bend, steps[1:] - steps[:-1], no_bend])
    controls = key_rotations @ axis_angle_to_rotation_matrix(-bend / 4.0)
    along_controls = slerp(controls[segment], controls[segment + 1], u)
    return slerp(along_keys, along_controls, 2.0 * u * (1.0 - u))


def interpolate_poses(
    key_times: KeyTimes,
    key_world_to_camera: WorldToCamera,
    sample_times: SampleTimes,
    interpolation: Interpolation = "smooth",
) -> WorldToCamera:
    """Rigid poses ``[K, 4, 4]`` keyed at increasing times → ``[T, 4, 4]`` (float64).

    Centres and camera-to-world rotations are interpolated separately, then recombined.
    """
    key_world_to_camera = check_rigid(key_world_to_camera, "key poses").double()
    key_times, sample_times = key_times.double(), sample_times.double()
    centres = interpolate_points(
        key_times, camera_centres(key_world_to_camera), sample_times, interpolation
    )
    orientations = key_world_to_camera[:, :3, :3].transpose(-1, -2)
    rotations = interpolate_rotations(key_times, orientations, sample_times, interpolation)
    return invert_rigid(pose_from_rotation_translation(rotations, centres))
