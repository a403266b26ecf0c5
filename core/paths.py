"""Camera paths: one canonical pose per output frame, and the operations an artist applies.

Where it sits: presets (``core/path_presets.py``), keyframes and their JSON wire format
(``core/keyframes.py``), files (``core/path_files.py``) and the official v1 trajectory
(``core/trajectory_v1.py``) all end up as a :class:`CameraPath`; ``core/scene.py`` and
``core/splat.py`` render the scene from its poses. Canonical form (ARCHITECTURE.md, Contracts):
OpenCV axes, world-to-camera 4×4 per output frame.

Operations: :func:`concatenate`, :func:`reverse`, :func:`ping_pong`, :func:`loop`, :func:`hold`,
:func:`retime` (speed and easing), :func:`resample` (SE(3)-correct, ``core/se3.py``), the
frame-count policy :func:`fit_to_frames`, and anchoring of relative motions to the source cameras
(:func:`path_from_relative_motion`, :func:`follow_source`) exactly as v1
``scripts/render_point_cloud.py generate_target_c2ws`` does, or to any one camera
(:func:`anchored_at`, e.g. WorldFM's input view).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Literal

import torch
from torch import Tensor

from .camera import check_intrinsics, check_rigid, invert_rigid
from .se3 import Interpolation, interpolate_poses
from .types import CameraToWorld, Intrinsics, WorldToCamera

if TYPE_CHECKING:
    # core/trajectory_v1.py builds CameraPaths itself, so the keyframe type is for annotations only.
    from .trajectory_v1 import KeyframeLines

FramePolicy = Literal["error", "hold", "loop", "resample"]
FRAME_POLICIES = ("error", "hold", "loop", "resample")
HoldSide = Literal["start", "end"]


class PathError(ValueError):
    """A camera-path input that cannot be used; the message names the input and the fix."""


@dataclass(frozen=True)
class CameraPath:
    """One world-to-camera pose per output frame.

    world_to_camera: [T, 4, 4] OpenCV Tcw (float64)
    intrinsics:      [3, 3] target K, or None to use the scene's first K (the official default)
    fps:             playback rate, or None to follow the scene
    v1_keyframes:    the v1 pitch / yaw / r keyframe lines the poses were interpolated from (a v1
                     trajectory file, an official v1 preset), so the path can be written back as
                     a v1 file; None for any other path. Changing the poses drops them.
    """

    world_to_camera: WorldToCamera
    intrinsics: Intrinsics | None = None
    fps: float | None = None
    v1_keyframes: KeyframeLines | None = None

    def __post_init__(self) -> None:
        poses = self.world_to_camera
        if not isinstance(poses, Tensor) or poses.ndim != 3 or poses.shape[0] < 1:
            shape = list(poses.shape) if isinstance(poses, Tensor) else type(poses).__name__
            raise PathError(f"CameraPath.world_to_camera must be [T ≥ 1, 4, 4], got {shape}")
        check_rigid(poses, "CameraPath.world_to_camera")
        if self.intrinsics is not None:
            if self.intrinsics.shape != (3, 3):
                raise PathError(
                    f"CameraPath.intrinsics must be [3, 3], got {list(self.intrinsics.shape)}"
                )
            check_intrinsics(self.intrinsics, "CameraPath.intrinsics")
        if self.fps is not None and not (math.isfinite(self.fps) and self.fps > 0):
            raise PathError(f"CameraPath.fps must be a positive number or None, got {self.fps}")

    @property
    def num_frames(self) -> int:
        return int(self.world_to_camera.shape[0])

    def with_poses(self, world_to_camera: WorldToCamera) -> CameraPath:
        """The same settings (K, fps) with other poses; the v1 keyframes no longer describe them."""
        return replace(self, world_to_camera=world_to_camera, v1_keyframes=None)


# --- easing ----------------------------------------------------------------------------------

EASINGS: dict[str, Callable[[Tensor], Tensor]] = {
    "linear": lambda progress: progress,
    "ease_in": lambda progress: progress * progress,
    "ease_out": lambda progress: progress * (2.0 - progress),
    # Cosine ease: zero velocity at both ends, the usual camera-move easing.
    "ease_in_out": lambda progress: 0.5 - 0.5 * torch.cos(math.pi * progress),
}


def ease(progress: Tensor, easing: str) -> Tensor:
    """Map progress in [0, 1] through a named easing curve (see :data:`EASINGS`)."""
    if easing not in EASINGS:
        raise PathError(f"unknown easing {easing!r}: use one of {', '.join(EASINGS)}")
    return EASINGS[easing](progress)


# --- anchoring to the source cameras ---------------------------------------------------------


def path_from_relative_motion(
    relative_camera_to_world: CameraToWorld,
    source_world_to_camera: WorldToCamera | None = None,
    *,
    relative_to_source: bool = False,
    intrinsics: Intrinsics | None = None,
    fps: float | None = None,
) -> CameraPath:
    """Target path from motions ``rel`` ``[T, 4, 4]`` expressed in the first source camera's frame.

    Official composition (v1 ``generate_target_c2ws``): ``Tcw = inv(inv(c2w_src0) @ rel)``; with
    no source poses, ``Tcw = inv(rel)`` (v1 ``TestDataset``). Upstream writes ``inv(c2w_src0)``
    where the geometric anchor would be ``c2w_src0``; both agree because DA3 source poses are
    normalised to frame 0 (identity first pose), and we keep upstream's form for parity.
    ``relative_to_source`` then makes the target follow the source camera (:func:`follow_source`).
    """
    relative = check_rigid(relative_camera_to_world, "relative_camera_to_world").double()
    if source_world_to_camera is None:
        if relative_to_source:
            raise PathError("relative_to_source needs the source cameras (source_world_to_camera)")
        return CameraPath(invert_rigid(relative), intrinsics, fps)
    source = check_rigid(source_world_to_camera, "source_world_to_camera").double()
    first_source_world_to_camera = source[0]
    path = CameraPath(invert_rigid(first_source_world_to_camera @ relative), intrinsics, fps)
    return follow_source(path, source) if relative_to_source else path


def follow_source(path: CameraPath, source_world_to_camera: WorldToCamera) -> CameraPath:
    """v1 ``--relative_to_source``: compose each target pose with its source camera's motion.

    Upstream: ``Tcw = Tcw_target @ inv(inv(c2w_src0) @ c2w_src_i)``, which is
    ``Tcw_target @ Tcw_src_i @ inv(Tcw_src0)``: the camera rides along with the source video's
    camera (frame i of the path with source frame i).
    """
    source = check_rigid(source_world_to_camera, "source_world_to_camera").double()
    if source.ndim != 3 or len(source) != path.num_frames:
        raise PathError(
            f"relative_to_source needs one source pose per target frame: the path has "
            f"{path.num_frames} frames, the source {list(source.shape)[:-2]}; fit the path to the "
            "source length first (fit_to_frames)"
        )
    source_motion = source @ invert_rigid(source[0])
    return path.with_poses(path.world_to_camera.double() @ source_motion)


def anchored_at(path: CameraPath, anchor_world_to_camera: WorldToCamera) -> CameraPath:
    """The path moved into a world where its identity pose is the camera ``anchor`` ``[4, 4]``.

    A path whose poses are relative to a starting camera (presets and keyframes start at the
    identity) becomes ``Tcw[i] = Tcw_rel[i] @ Tcw_anchor``: frame i sees the world as the anchor
    camera moved by the relative motion i, so an identity frame is exactly the anchor camera.
    Unlike :func:`path_from_relative_motion` (which keeps upstream's ``inv(c2w_src0)`` form),
    the anchor is used as the geometric camera it is, whatever its pose.
    """
    anchor = check_rigid(anchor_world_to_camera, "anchor_world_to_camera").double()
    if anchor.shape != (4, 4):
        raise PathError(f"anchor_world_to_camera must be one [4, 4] pose, got {list(anchor.shape)}")
    return path.with_poses(path.world_to_camera.double() @ anchor)


# --- operations ------------------------------------------------------------------------------


def _common_settings(paths: tuple[CameraPath, ...]) -> tuple[Intrinsics | None, float | None]:
    intrinsics = [path.intrinsics for path in paths if path.intrinsics is not None]
    if any(not torch.equal(other, intrinsics[0]) for other in intrinsics[1:]):
        raise PathError("cannot concatenate paths with different intrinsics: set one K for all")
    rates = {path.fps for path in paths if path.fps is not None}
    if len(rates) > 1:
        raise PathError(f"cannot concatenate paths with different fps {sorted(rates)}: set one fps")
    return (intrinsics[0] if intrinsics else None), (rates.pop() if rates else None)


def concatenate(*paths: CameraPath) -> CameraPath:
    """The paths played one after the other (K and fps must agree where set)."""
    if not paths:
        raise PathError("concatenate needs at least one path")
    intrinsics, fps = _common_settings(paths)
    poses = torch.cat([path.world_to_camera.double() for path in paths])
    return CameraPath(poses, intrinsics, fps)


def reverse(path: CameraPath) -> CameraPath:
    """The path played backwards."""
    return path.with_poses(path.world_to_camera.flip(0))


def ping_pong(path: CameraPath) -> CameraPath:
    """Forward then backward, ending where it started; the turning frame is not repeated
    (``0 … n−1, n−2 … 0``, as v1 ``bounce_indices``)."""
    return path.with_poses(torch.cat([path.world_to_camera, path.world_to_camera.flip(0)[1:]]))


def loop(path: CameraPath, times: int) -> CameraPath:
    """The path repeated ``times`` times (jumps back to the start between repeats)."""
    if times < 1:
        raise PathError(f"loop times must be at least 1, got {times}")
    return path.with_poses(path.world_to_camera.repeat(times, 1, 1))


def hold(path: CameraPath, frames: int, at: HoldSide = "end") -> CameraPath:
    """``frames`` extra copies of the first (``at="start"``) or last (``"end"``) pose."""
    if frames < 0:
        raise PathError(f"hold frames must be ≥ 0, got {frames}")
    if at not in ("start", "end"):
        raise PathError(f"hold at must be 'start' or 'end', got {at!r}")
    poses = path.world_to_camera
    if at == "start":
        return path.with_poses(torch.cat([poses[:1].repeat(frames, 1, 1), poses]))
    return path.with_poses(torch.cat([poses, poses[-1:].repeat(frames, 1, 1)]))


def resample(
    path: CameraPath,
    frames: int,
    interpolation: Interpolation = "smooth",
    easing: str = "linear",
) -> CameraPath:
    """The same motion in ``frames`` frames, from the first to the last pose, sampled at eased
    times between the existing poses (SE(3)-correct: centres on a spline, rotations by squad or
    slerp). With ``frames == num_frames`` and linear easing the poses are unchanged."""
    if frames < 1:
        raise PathError(f"resample needs at least 1 frame, got {frames}")
    key_times = torch.arange(path.num_frames, dtype=torch.float64)
    progress = torch.linspace(0.0, 1.0, frames, dtype=torch.float64)
    sample_times = ease(progress, easing) * (path.num_frames - 1)
    poses = interpolate_poses(key_times, path.world_to_camera, sample_times, interpolation)
    return path.with_poses(poses)


def retime(
    path: CameraPath,
    speed: float = 1.0,
    easing: str = "linear",
    interpolation: Interpolation = "smooth",
) -> CameraPath:
    """Play the path ``speed`` times faster (fewer frames) and through an easing curve.

    The frame count becomes ``round((n − 1)/speed) + 1``, so the first and last poses are kept.
    """
    if not (math.isfinite(speed) and speed > 0):
        raise PathError(f"speed must be a positive number, got {speed}")
    frames = round((path.num_frames - 1) / speed) + 1
    return resample(path, frames, interpolation, easing)


def fit_to_frames(path: CameraPath, frames: int, policy: FramePolicy = "error") -> CameraPath:
    """Make the path drive exactly ``frames`` output frames.

    ``"error"`` (default): a length mismatch is an error, so a path never silently stops short
    or gets cut; ``"hold"``: cut, or hold the last pose; ``"loop"``: cut, or repeat from the
    start; ``"resample"``: stretch or squeeze the same motion into ``frames`` frames.
    """
    if policy not in FRAME_POLICIES:
        raise PathError(f"unknown frame policy {policy!r}: use one of {', '.join(FRAME_POLICIES)}")
    if frames < 1:
        raise PathError(f"frames must be at least 1, got {frames}")
    if path.num_frames == frames:
        return path
    if policy == "error":
        raise PathError(
            f"the camera path has {path.num_frames} frames but {frames} are needed: pick a frame "
            "policy ('hold', 'loop' or 'resample') or make a path of the right length"
        )
    if policy == "resample":
        return resample(path, frames)
    if policy == "loop":
        repeats = -(-frames // path.num_frames)
        return path.with_poses(path.world_to_camera.repeat(repeats, 1, 1)[:frames])
    if path.num_frames > frames:
        return path.with_poses(path.world_to_camera[:frames])
    return hold(path, frames - path.num_frames)
