"""Parity of the v1 trajectory (three keyframe lines → poses) with the official fixtures.

Every case of every ``traj_*.json`` fixture runs: ``txt_interpolation`` samples,
``generate_traj_txt`` camera-to-world and world-to-camera poses, and ``TestDataset.get_data``
frame counts, source re-indexing and target extrinsics. Everything is read from the file.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import fixture_cases, fixture_cases_holding, load_json, require_fixture
from inspatio_nodes.core.camera import world_to_camera_from_camera_to_world
from inspatio_nodes.core.frame_counts import adaptive_frame_indices
from inspatio_nodes.core.trajectory_v1 import (
    KeyframeLines,
    TrajectoryError,
    interpolate_line_uniform,
    official_camera_to_world,
    total_keyframe_angle,
    trajectory_path,
)
from safetensors import safe_open

POSE_TOLERANCE = 1e-6
INTERPOLATION_TOLERANCE = 1e-6
TRAJECTORY_FIXTURES = fixture_cases("*traj_*.json")
# The v1 renderer's case among the render-warp fixtures: it holds the warp_in.* inputs.
RENDER_WARP_FIXTURES = fixture_cases_holding("*render_warp*_io*.safetensors", "warp_in.")


def _cases(path, kind: str) -> list[dict]:
    cases = [case for case in load_json(require_fixture(path))["cases"] if case["kind"] == kind]
    if not cases:
        pytest.skip(f"{path.name} has no case of kind {kind!r}")
    return cases


def _file_keyframes(path) -> KeyframeLines:
    keyframes = load_json(path)["keyframes"]
    return KeyframeLines(
        tuple(keyframes["x_up_angle"]), tuple(keyframes["y_left_angle"]), tuple(keyframes["r"])
    )


@pytest.mark.parametrize("case_path", TRAJECTORY_FIXTURES)
def test_keyframe_line_interpolation_matches_txt_interpolation(case_path):
    for case in _cases(case_path, "txt_interpolation"):
        interpolated = interpolate_line_uniform(case["input"], case["n"], case["mode"])
        expected = np.asarray(case["output"])
        assert interpolated.shape == expected.shape, case["name"]
        np.testing.assert_allclose(interpolated, expected, atol=INTERPOLATION_TOLERANCE, rtol=0)


@pytest.mark.parametrize("case_path", TRAJECTORY_FIXTURES)
def test_generated_poses_match_generate_traj_txt(case_path):
    for case in _cases(case_path, "generate_traj_txt"):
        arguments = case["call_args"]
        camera_to_world = official_camera_to_world(
            arguments["x_up_angles"],
            arguments["y_left_angles"],
            arguments["r"],
            arguments["r_zoom"],
            arguments["frame"],
            rotation_only=arguments["is_translation"],
        )
        expected_camera_to_world = torch.tensor(case["Twc"], dtype=torch.float64)
        expected_world_to_camera = torch.tensor(case["Tcw"], dtype=torch.float64)
        torch.testing.assert_close(
            camera_to_world, expected_camera_to_world, atol=POSE_TOLERANCE, rtol=0, msg=case["name"]
        )
        torch.testing.assert_close(
            world_to_camera_from_camera_to_world(camera_to_world),
            expected_world_to_camera,
            atol=POSE_TOLERANCE,
            rtol=0,
            msg=case["name"],
        )


@pytest.mark.parametrize("case_path", TRAJECTORY_FIXTURES)
def test_total_keyframe_angle_drives_the_official_adaptive_frame_count(case_path):
    keys = _file_keyframes(case_path)
    for case in _cases(case_path, "TestDataset.get_data"):
        if not case["params"]["adaptive_frame"]:
            continue
        indices = adaptive_frame_indices(
            case["params"]["n_source_frames"], total_keyframe_angle(keys)
        )
        assert len(indices) == case["n_frames"], case["name"]
        assert indices == case["source_frame_indices"], case["name"]


@pytest.mark.parametrize("case_path", TRAJECTORY_FIXTURES)
def test_dataset_target_extrinsics_match_test_dataset(case_path):
    keys = _file_keyframes(case_path)
    for case in _cases(case_path, "TestDataset.get_data"):
        params = case["params"]
        path = trajectory_path(
            keys,
            case["n_frames"],
            style="test_dataset",
            foreground_depth=params["first_depth_min"],
            radius_ratio=params["radius_ratio"],
            rotation_only=params["rotation_only"],
        )
        torch.testing.assert_close(
            path.world_to_camera,
            torch.tensor(case["Tcw"], dtype=torch.float64),
            atol=POSE_TOLERANCE,
            rtol=0,
            msg=case["name"],
        )


@pytest.mark.parametrize("warp_path", RENDER_WARP_FIXTURES)
def test_renderer_target_poses_match_generate_target_c2ws(warp_path):
    # The v1 renderer fixture names its trajectory file; its keys are in the *traj_*.json whose
    # keyframes come from that file (raw r, composed with the first source pose).
    with safe_open(str(require_fixture(warp_path)), "pt") as tensors:
        case = json.loads(json.loads(tensors.metadata()["info"])["case"])
        source_world_to_camera = tensors.get_tensor("warp_in.source_tcw").double()
        expected = tensors.get_tensor("warp_in.target_tcw").double()
    trajectories = [
        path
        for path in warp_path.parent.glob("*traj_*.json")
        if load_json(path)["keyframes"]["file"] == case["traj"]
    ]
    if not trajectories:
        pytest.skip(f"no *traj_*.json holds the keyframes of {case['traj']}")
    path = trajectory_path(
        _file_keyframes(trajectories[0]),
        len(expected),
        source_world_to_camera,
        style="render_point_cloud",
        rotation_only=case["rotation_only"],
        relative_to_source=case["relative_to_source"],
    )
    torch.testing.assert_close(path.world_to_camera, expected, atol=POSE_TOLERANCE, rtol=0)


def test_total_keyframe_angle_is_the_larger_travel_over_the_keys():
    keys = KeyframeLines((0.0, 10.0, -5.0, 0.0), (0.0, 20.0, 0.0), (1.0, 1.0))
    assert total_keyframe_angle(keys) == 40.0


def test_zoom_keys_move_the_camera_along_its_axis():
    zeros = [0.0, 0.0, 0.0, 0.0]
    camera_to_world = official_camera_to_world(zeros, zeros, [0, -1, 0], [0, -1, 0], 5)
    identity = torch.eye(3, dtype=torch.float64).expand(5, 3, 3)
    torch.testing.assert_close(camera_to_world[:, :3, :3], identity)
    torch.testing.assert_close(camera_to_world[:, :2, 3], torch.zeros(5, 2, dtype=torch.float64))
    assert camera_to_world[2, 2, 3] == pytest.approx(-1.0)


def test_a_line_with_one_value_is_rejected():
    with pytest.raises(TrajectoryError, match="at least 2"):
        KeyframeLines((0.0,), (0.0, 1.0), (1.0, 1.0))


def test_an_explicit_interpolation_mode_overrides_the_key_count_rule():
    keys = [0.0, 3.0, 1.0, 4.0, 2.0]
    linear = interpolate_line_uniform(keys, len(keys), "linear")
    np.testing.assert_allclose(linear, keys, atol=INTERPOLATION_TOLERANCE, rtol=0)
    by_count = interpolate_line_uniform(keys, len(keys))
    np.testing.assert_allclose(
        by_count, interpolate_line_uniform(keys, len(keys), "smooth"), atol=0, rtol=0
    )
    assert np.abs(by_count - linear).max() > INTERPOLATION_TOLERANCE  # the spline misses keys


def test_an_unusable_interpolation_mode_is_refused_with_the_fix():
    with pytest.raises(TrajectoryError, match="'linear'"):
        interpolate_line_uniform([0.0, 1.0], 5, "cubic")
    with pytest.raises(TrajectoryError, match="at least 4"):
        interpolate_line_uniform([0.0, 1.0, 2.0], 5, "smooth")
