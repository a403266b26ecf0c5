"""Camera paths: SE(3) interpolation, keyframes, operations, frame policy, presets, anchoring."""

from __future__ import annotations

import math

import pytest
import torch
from inspatio_nodes.core.camera import (
    CameraError,
    camera_centres,
    invert_rigid,
    look_at,
    pose_from_rotation_translation,
)
from inspatio_nodes.core.keyframes import Keyframe, path_from_keyframes
from inspatio_nodes.core.path_presets import PRESETS, PresetError, preset_motion, preset_path
from inspatio_nodes.core.paths import (
    CameraPath,
    PathError,
    anchored_at,
    concatenate,
    fit_to_frames,
    follow_source,
    hold,
    loop,
    path_from_relative_motion,
    ping_pong,
    resample,
    retime,
    reverse,
)
from inspatio_nodes.core.se3 import interpolate_poses, interpolate_rotations
from inspatio_nodes.core.trajectory_v1 import KeyframeLines

TOLERANCE = 1e-9


def yaw_rotation(degrees: float) -> torch.Tensor:
    angle = math.radians(degrees)
    return torch.tensor(
        [[math.cos(angle), 0, math.sin(angle)], [0, 1, 0], [-math.sin(angle), 0, math.cos(angle)]],
        dtype=torch.float64,
    )


def camera_path(centres: list[list[float]], yaws: list[float]) -> CameraPath:
    """A path of cameras at ``centres`` turned by ``yaws`` degrees about the vertical axis."""
    rotations = torch.stack([yaw_rotation(yaw) for yaw in yaws])
    camera_to_world = pose_from_rotation_translation(
        rotations, torch.tensor(centres, dtype=torch.float64)
    )
    return CameraPath(invert_rigid(camera_to_world))


def optical_axes(path: CameraPath) -> torch.Tensor:
    return invert_rigid(path.world_to_camera)[:, :3, 2]


def rotation_angle_degrees(rotations: torch.Tensor) -> torch.Tensor:
    cosine = ((rotations.diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2).clamp(-1, 1)
    return torch.rad2deg(torch.arccos(cosine))


# --- interpolation ---------------------------------------------------------------------------


@pytest.mark.parametrize("interpolation", ["linear", "smooth"])
def test_interpolation_passes_through_every_key(interpolation):
    path = camera_path([[0, 0, 0], [1, 0, 0.5], [1.5, -0.2, 2], [0, 0, 3]], [0, 30, 80, 10])
    key_times = torch.tensor([0.0, 3.0, 5.0, 11.0])
    poses = interpolate_poses(key_times, path.world_to_camera, key_times, interpolation)
    torch.testing.assert_close(poses, path.world_to_camera, atol=TOLERANCE, rtol=0)


def test_slerp_turns_at_constant_angular_speed_about_one_axis():
    key_rotations = torch.stack([yaw_rotation(0.0), yaw_rotation(90.0)])
    samples = interpolate_rotations(
        torch.tensor([0.0, 1.0]), key_rotations, torch.linspace(0, 1, 7), "linear"
    )
    torch.testing.assert_close(
        rotation_angle_degrees(samples), torch.linspace(0, 90, 7, dtype=torch.float64)
    )


def test_interpolated_poses_stay_rigid():
    path = camera_path([[0, 0, 0], [1, 0, 0.5], [1.5, -0.2, 2]], [0, 120, -60])
    poses = interpolate_poses(
        torch.tensor([0.0, 4.0, 9.0]), path.world_to_camera, torch.linspace(0, 9, 40)
    )
    rotations = poses[:, :3, :3]
    identity = torch.eye(3, dtype=torch.float64).expand(40, 3, 3)
    torch.testing.assert_close(
        rotations @ rotations.transpose(-1, -2), identity, atol=1e-12, rtol=0
    )


def test_smooth_interpolation_has_no_velocity_jump_at_a_key():
    # Centres along a bent line: the linear path kinks at the middle key, the smooth one does not.
    path = camera_path([[0, 0, 0], [1, 0, 0], [2, 0, 1]], [0, 20, 40])
    key_times = torch.tensor([0.0, 10.0, 20.0])
    step = 1e-3
    around_key = torch.tensor([10.0 - 2 * step, 10.0 - step, 10.0, 10.0 + step, 10.0 + 2 * step])

    def velocity_jump(interpolation: str) -> float:
        centres = camera_centres(
            interpolate_poses(key_times, path.world_to_camera, around_key, interpolation)
        )
        before, after = centres[2] - centres[1], centres[3] - centres[2]
        return float(torch.linalg.vector_norm(after - before) / step)

    assert velocity_jump("smooth") < 1e-2 < velocity_jump("linear")


# --- keyframes -------------------------------------------------------------------------------


def test_look_at_keyframes_keep_facing_their_target():
    target = (0.0, 0.0, 3.0)
    keyframes = [
        Keyframe(0, (0.0, 0.0, 0.0), look_at=target),
        Keyframe(10, (2.0, 0.0, 1.0), look_at=target),
        Keyframe(20, (0.0, -1.0, 1.0), look_at=target),
    ]
    path = path_from_keyframes(keyframes, 21)
    towards_target = torch.tensor(target, dtype=torch.float64) - camera_centres(
        path.world_to_camera
    )
    towards_target = towards_target / towards_target.norm(dim=-1, keepdim=True)
    torch.testing.assert_close(optical_axes(path), towards_target)


def test_frames_outside_the_keys_hold_the_end_poses():
    identity = (1.0, 0.0, 0.0, 0.0)
    keyframes = [
        Keyframe(3, (0.0, 0.0, 0.0), rotation=identity),
        Keyframe(6, (1.0, 0.0, 0.0), rotation=identity),
    ]
    path = path_from_keyframes(keyframes, 10, "linear")
    centres = camera_centres(path.world_to_camera)[:, 0]
    torch.testing.assert_close(
        centres, torch.tensor([0, 0, 0, 0, 1 / 3, 2 / 3, 1, 1, 1, 1], dtype=torch.float64)
    )


def test_keyframes_sharing_a_frame_are_rejected():
    keyframes = [Keyframe(0, (0.0, 0.0, 0.0), look_at=(0.0, 0.0, 1.0))] * 2
    with pytest.raises(PathError, match="share a frame"):
        path_from_keyframes(keyframes, 5)


def test_a_keyframe_needs_exactly_one_orientation():
    with pytest.raises(PathError, match="exactly one"):
        Keyframe(0, (0.0, 0.0, 0.0))
    with pytest.raises(PathError, match="unit quaternion"):
        Keyframe(0, (0.0, 0.0, 0.0), rotation=(2.0, 0.0, 0.0, 0.0))


# --- operations ------------------------------------------------------------------------------


def test_reverse_ping_pong_loop_and_hold_reorder_the_poses():
    path = camera_path([[0, 0, 0], [1, 0, 0], [2, 0, 0]], [0, 0, 0])

    def order(result: CameraPath) -> list[float]:
        return camera_centres(result.world_to_camera)[:, 0].tolist()

    assert order(reverse(path)) == [2, 1, 0]
    assert order(ping_pong(path)) == [0, 1, 2, 1, 0]
    assert order(loop(path, 2)) == [0, 1, 2, 0, 1, 2]
    assert order(hold(path, 2)) == [0, 1, 2, 2, 2]
    assert order(hold(path, 1, at="start")) == [0, 0, 1, 2]
    assert order(concatenate(path, reverse(path))) == [0, 1, 2, 2, 1, 0]


def test_concatenate_refuses_different_frame_rates():
    first = CameraPath(torch.eye(4, dtype=torch.float64)[None], fps=16.0)
    second = CameraPath(torch.eye(4, dtype=torch.float64)[None], fps=24.0)
    with pytest.raises(PathError, match="fps"):
        concatenate(first, second)


def test_resample_keeps_the_ends_and_the_motion():
    path = camera_path([[0, 0, 0], [1, 0, 0], [2, 0, 0], [3, 0, 0]], [0, 10, 20, 30])
    longer = resample(path, 7, "linear")
    assert longer.num_frames == 7
    torch.testing.assert_close(
        camera_centres(longer.world_to_camera)[:, 0], torch.linspace(0, 3, 7, dtype=torch.float64)
    )
    torch.testing.assert_close(
        longer.world_to_camera[::2], path.world_to_camera, atol=TOLERANCE, rtol=0
    )


def test_retime_at_double_speed_halves_the_frames_and_eases():
    path = camera_path([[float(x), 0, 0] for x in range(9)], [0] * 9)
    faster = retime(path, speed=2.0)
    assert faster.num_frames == 5
    eased = camera_centres(retime(path, 1.0, easing="ease_in_out").world_to_camera)[:, 0]
    steps = eased[1:] - eased[:-1]
    assert steps[0] < steps[4] and steps[-1] < steps[4]
    torch.testing.assert_close(eased[[0, -1]], torch.tensor([0.0, 8.0], dtype=torch.float64))


@pytest.mark.parametrize(
    ("policy", "expected"),
    [("hold", [0, 1, 2, 2, 2]), ("loop", [0, 1, 2, 0, 1]), ("resample", [0, 0.5, 1, 1.5, 2])],
)
def test_frame_policies_fit_a_short_path(policy, expected):
    path = camera_path([[0, 0, 0], [1, 0, 0], [2, 0, 0]], [0, 0, 0])
    fitted = fit_to_frames(path, 5, policy)
    torch.testing.assert_close(
        camera_centres(fitted.world_to_camera)[:, 0], torch.tensor(expected, dtype=torch.float64)
    )


def test_a_length_mismatch_is_an_error_by_default():
    path = camera_path([[0, 0, 0], [1, 0, 0]], [0, 0])
    with pytest.raises(PathError, match="2 frames but 5"):
        fit_to_frames(path, 5)
    assert fit_to_frames(path, 2) is path


def test_a_camera_path_rejects_non_rigid_poses():
    with pytest.raises(CameraError, match="non-orthonormal"):
        CameraPath(torch.diag(torch.tensor([1.0, 2.0, 1.0, 1.0]))[None])
    with pytest.raises(PathError, match=r"\[T ≥ 1, 4, 4\]"):
        CameraPath(torch.eye(4))


# --- anchoring to the source cameras ---------------------------------------------------------


def test_relative_motion_is_anchored_to_the_first_source_camera():
    relative = invert_rigid(look_at(torch.tensor([0.5, 0.0, 0.0]), torch.tensor([0.0, 0.0, 2.0])))[
        None
    ]
    path = path_from_relative_motion(relative, torch.eye(4, dtype=torch.float64)[None])
    torch.testing.assert_close(path.world_to_camera, invert_rigid(relative))


def test_relative_to_source_rides_along_with_the_source_camera():
    static = CameraPath(torch.eye(4, dtype=torch.float64).repeat(3, 1, 1))
    source_centres = [[0, 0, 0], [0.1, 0, 0], [0.2, 0, 0]]
    source = camera_path(source_centres, [0, 5, 10]).world_to_camera
    following = follow_source(static, source)
    torch.testing.assert_close(following.world_to_camera, source)


def test_relative_to_source_needs_one_source_pose_per_frame():
    static = CameraPath(torch.eye(4, dtype=torch.float64).repeat(3, 1, 1))
    with pytest.raises(PathError, match="one source pose per target frame"):
        follow_source(static, torch.eye(4, dtype=torch.float64).repeat(2, 1, 1))


def test_anchored_path_starts_at_the_anchor_camera_and_keeps_the_relative_motion():
    relative = camera_path([[0, 0, 0], [0.3, 0, 0.1]], [0, 20])
    anchor = camera_path([[1.0, -0.5, 2.0]], [90]).world_to_camera[0]
    anchored = anchored_at(relative, anchor)
    torch.testing.assert_close(anchored.world_to_camera[0], anchor, atol=TOLERANCE, rtol=0)

    # Camera i relative to camera 0 is the same motion in either world.
    def motion(path):
        return path.world_to_camera[1] @ invert_rigid(path.world_to_camera[0])

    torch.testing.assert_close(motion(anchored), motion(relative), atol=TOLERANCE, rtol=0)


def test_anchoring_needs_one_anchor_pose():
    path = camera_path([[0, 0, 0]], [0])
    with pytest.raises(PathError, match=r"one \[4, 4\] pose"):
        anchored_at(path, torch.eye(4, dtype=torch.float64).repeat(2, 1, 1))


def test_changing_the_poses_drops_the_v1_keyframes_they_came_from():
    keys = KeyframeLines((0.0, 10.0), (0.0, 0.0), (1.0, 1.0))
    path = CameraPath(
        camera_path([[0, 0, 0], [0.1, 0, 0]], [0, 5]).world_to_camera, v1_keyframes=keys
    )
    assert path.v1_keyframes == keys
    changed = [reverse(path), resample(path, 3), anchored_at(path, torch.eye(4).double())]
    assert all(other.v1_keyframes is None for other in changed)


# --- presets ---------------------------------------------------------------------------------


def test_orbit_keeps_its_distance_to_the_pivot_and_faces_it():
    depth, ratio = 2.5, 0.8
    path = preset_path("orbit_left", 11, scene_depth=depth, radius_ratio=ratio, amplitude=40.0)
    pivot = torch.tensor([0.0, 0.0, depth * ratio], dtype=torch.float64)
    offsets = pivot - camera_centres(path.world_to_camera)
    distances = offsets.norm(dim=-1)
    torch.testing.assert_close(
        distances, torch.full((11,), depth * ratio, dtype=torch.float64), atol=1e-6, rtol=0
    )
    torch.testing.assert_close(optical_axes(path), offsets / distances[:, None], atol=1e-6, rtol=0)
    assert camera_centres(path.world_to_camera)[-1, 0] < 0  # orbiting left moves towards −x


def test_dolly_in_moves_along_the_optical_axis_by_the_depth_multiple():
    path = preset_path("dolly_in", 5, scene_depth=3.0, amplitude=0.5)
    expected = torch.zeros(5, 3, dtype=torch.float64)
    expected[:, 2] = torch.linspace(0, 1.5, 5, dtype=torch.float64)
    torch.testing.assert_close(camera_centres(path.world_to_camera), expected)


@pytest.mark.parametrize(
    "name", ["pan_left", "pan_right", "tilt_up", "tilt_down", "roll_clockwise"]
)
def test_pan_tilt_and_roll_are_pure_rotations(name):
    path = preset_path(name, 6, scene_depth=2.0)
    torch.testing.assert_close(
        camera_centres(path.world_to_camera), torch.zeros(6, 3, dtype=torch.float64)
    )
    final_angle = rotation_angle_degrees(path.world_to_camera[-1, :3, :3])
    assert float(final_angle) == pytest.approx(PRESETS[name].default_amplitude, abs=1e-4)


def test_pan_right_looks_right_and_tilt_up_looks_up():
    assert optical_axes(preset_path("pan_right", 3))[-1, 0] > 0
    assert optical_axes(preset_path("tilt_up", 3))[-1, 1] < 0  # OpenCV y points down


@pytest.mark.parametrize(("name", "axis", "sign"), [("truck_right", 0, 1), ("pedestal_up", 1, -1)])
def test_truck_and_pedestal_slide_without_turning(name, axis, sign):
    path = preset_path(name, 4, scene_depth=2.0, amplitude=0.5)
    final_centre = camera_centres(path.world_to_camera)[-1]
    assert float(final_centre[axis]) == pytest.approx(sign * 1.0)
    torch.testing.assert_close(
        path.world_to_camera[:, :3, :3], torch.eye(3, dtype=torch.float64).expand(4, 3, 3)
    )


def test_every_preset_starts_at_the_source_camera_and_stays_rigid():
    for name in PRESETS:
        if name == "x_y_circle_cycle":
            continue  # the official smoothing spline does not start at the identity (v1 quirk)
        path = preset_path(name, 9, easing="ease_in_out", scene_depth=1.5)
        torch.testing.assert_close(
            path.world_to_camera[0], torch.eye(4, dtype=torch.float64), atol=1e-6, rtol=0
        )


def test_rotation_only_removes_every_translation():
    for name in ("orbit_up", "dolly_out", "spiral"):
        relative = preset_motion(name, 5, rotation_only=True)
        torch.testing.assert_close(relative[:, :3, 3], torch.zeros(5, 3, dtype=torch.float64))


def test_unknown_preset_lists_the_valid_names():
    with pytest.raises(PresetError, match="orbit_left.*dolly_in"):
        preset_path("orbit", 9)
    with pytest.raises(PathError, match="ease_in_out"):
        preset_path("orbit_left", 9, easing="bouncy")
