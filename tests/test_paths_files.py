"""Camera-path files: round trips, errors with file name and line, and fuzzed parsers."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from inspatio_nodes.core.camera import invert_rigid, look_at
from inspatio_nodes.core.keyframes import (
    FORMAT,
    CameraPathFormatError,
    path_from_json,
    path_to_json,
)
from inspatio_nodes.core.path_files import (
    PathFileError,
    format_pose_text,
    parse_pose_text,
    parse_v1_trajectory,
    read_path_json,
    read_pose_text,
    read_transforms_json,
    read_v1_trajectory,
    read_worldfm_meta,
    write_path_json,
    write_pose_text,
    write_transforms_json,
    write_v1_trajectory,
    write_worldfm_meta,
)
from inspatio_nodes.core.paths import CameraPath
from inspatio_nodes.core.trajectory_v1 import KeyframeLines

TOLERANCE = 1e-12
FUZZ_SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def orbiting_path(frames: int = 5, with_intrinsics: bool = True) -> CameraPath:
    angles = torch.linspace(0, 1.2, frames, dtype=torch.float64)
    eyes = torch.stack([torch.sin(angles), 0.1 * angles, 2.0 - 2.0 * torch.cos(angles)], dim=-1)
    world_to_camera = look_at(eyes, torch.tensor([0.0, 0.0, 2.0]).expand(frames, 3))
    intrinsics = torch.tensor([[300.0, 0, 208], [0, 310, 120], [0, 0, 1]], dtype=torch.float64)
    return CameraPath(world_to_camera, intrinsics if with_intrinsics else None, fps=16.0)


# --- round trips -----------------------------------------------------------------------------


def _assert_same_poses(restored: CameraPath, path: CameraPath) -> None:
    torch.testing.assert_close(
        restored.world_to_camera, path.world_to_camera, atol=TOLERANCE, rtol=0
    )


def test_v1_trajectory_file_round_trips(tmp_path):
    keys = KeyframeLines((0.0, 10.5, -3.25, 0.0), (0.0, 0.0, 7.0, 1e-3), (1.0, 0.5))
    write_v1_trajectory(tmp_path / "traj.txt", keys)
    assert read_v1_trajectory(tmp_path / "traj.txt") == keys


def test_pose_text_round_trips_to_float32_precision_then_exactly(tmp_path):
    poses = orbiting_path().world_to_camera
    write_pose_text(tmp_path / "target_tcw.txt", poses)
    restored = read_pose_text(tmp_path / "target_tcw.txt")
    torch.testing.assert_close(restored, poses.float().double(), atol=0, rtol=0)
    write_pose_text(tmp_path / "again.txt", restored)
    torch.testing.assert_close(read_pose_text(tmp_path / "again.txt"), restored, atol=0, rtol=0)


def test_camera_to_world_text_holds_the_inverse_poses_and_reads_back(tmp_path):
    poses = orbiting_path().world_to_camera
    file = tmp_path / "c2w.txt"
    write_pose_text(file, poses, "camera_to_world")
    written = parse_pose_text(file.read_text())  # the raw matrices, read as if they were Tcw
    expected_camera_to_world = invert_rigid(poses).float().double()
    torch.testing.assert_close(written, expected_camera_to_world, atol=0, rtol=0)
    restored = read_pose_text(file, "camera_to_world")
    torch.testing.assert_close(restored, poses, atol=1e-6, rtol=0)


def test_pose_text_is_read_as_float32_like_upstream():
    poses = orbiting_path().world_to_camera
    text = format_pose_text(poses) + "# trailing comment\n\n"
    expected = np.asarray(poses.numpy(), dtype=np.float32).astype(np.float64)
    np.testing.assert_array_equal(parse_pose_text(text).numpy(), expected)


def test_camera_to_world_pose_text_is_inverted_once():
    poses = orbiting_path().world_to_camera
    text = format_pose_text(invert_rigid(poses))
    torch.testing.assert_close(
        parse_pose_text(text, kind="camera_to_world"), poses, atol=1e-6, rtol=0
    )


def test_json_wire_format_round_trips(tmp_path):
    path = orbiting_path()
    write_path_json(tmp_path / "path.json", path)
    restored = read_path_json(tmp_path / "path.json")
    _assert_same_poses(restored, path)
    torch.testing.assert_close(restored.intrinsics, path.intrinsics)
    assert restored.fps == path.fps and json.loads(path_to_json(path))["format"] == FORMAT


def test_nerf_transforms_round_trip(tmp_path):
    path = orbiting_path()
    write_transforms_json(tmp_path / "transforms.json", path, width=416, height=240)
    restored = read_transforms_json(tmp_path / "transforms.json")
    _assert_same_poses(restored, path)
    torch.testing.assert_close(restored.intrinsics, path.intrinsics)


def test_nerf_field_of_view_gives_the_focal_length(tmp_path):
    document = {
        "camera_angle_x": np.pi / 2,
        "w": 200,
        "h": 100,
        "frames": [{"transform_matrix": np.eye(4).tolist()}],
    }
    (tmp_path / "transforms.json").write_text(json.dumps(document))
    intrinsics = read_transforms_json(tmp_path / "transforms.json").intrinsics
    assert float(intrinsics[0, 0]) == pytest.approx(100.0) and float(
        intrinsics[0, 2]
    ) == pytest.approx(100.0)


def test_worldfm_transforms_use_opencv_camera_to_world(tmp_path):
    path = orbiting_path()
    camera_to_world = invert_rigid(path.world_to_camera)
    frames = [
        {"id": index, "K": path.intrinsics.tolist(), "c2w": pose.tolist()}
        for index, pose in enumerate(camera_to_world)
    ]
    (tmp_path / "transforms.json").write_text(json.dumps({"frames": frames}))
    restored = read_transforms_json(tmp_path / "transforms.json")
    _assert_same_poses(restored, path)


def test_worldfm_meta_round_trips_and_accepts_a_single_pose(tmp_path):
    path = orbiting_path()
    write_worldfm_meta(tmp_path / "meta.json", path)
    restored = read_worldfm_meta(tmp_path / "meta.json")
    _assert_same_poses(restored, path)
    single = {
        "name": "demo",
        "image": "a.png",
        "K": path.intrinsics.tolist(),
        "c2w": np.eye(4).tolist(),
    }
    (tmp_path / "single.json").write_text(json.dumps(single))
    assert read_worldfm_meta(tmp_path / "single.json").num_frames == 1


# --- malformed files -------------------------------------------------------------------------


def test_malformed_v1_trajectory_names_the_file_and_line(tmp_path):
    (tmp_path / "traj.txt").write_text("0 10 20\n0 x 0\n1 1 1\n")
    with pytest.raises(PathFileError, match=r"traj\.txt, line 2: 'x' is not a number"):
        read_v1_trajectory(tmp_path / "traj.txt")
    with pytest.raises(PathFileError, match="has 3 lines"):
        parse_v1_trajectory("0 1\n0 1\n")
    with pytest.raises(PathFileError, match="line 3: 1 r value"):
        parse_v1_trajectory("0 1\n0 1\n1\n")


def test_pose_text_with_a_short_line_names_the_line(tmp_path):
    lines = format_pose_text(orbiting_path(3).world_to_camera).splitlines()
    lines[1] = " ".join(lines[1].split()[:12])
    (tmp_path / "target_tcw.txt").write_text("\n".join(lines))
    with pytest.raises(PathFileError, match=r"target_tcw\.txt, line 2: 12 numbers, expected 16"):
        read_pose_text(tmp_path / "target_tcw.txt")


def test_pose_text_with_a_scaled_pose_names_the_line():
    text = "# header\n" + " ".join(str(value) for value in np.diag([2.0, 1, 1, 1]).ravel())
    with pytest.raises(PathFileError, match="line 2: .*non-orthonormal"):
        parse_pose_text(text)


def test_invalid_json_reports_line_and_column(tmp_path):
    (tmp_path / "path.json").write_text(
        '{\n  "format": "inspatio.camera_path/1",\n  "frames": ,\n}'
    )
    with pytest.raises(PathFileError, match=r"path\.json: invalid JSON at line 3, column 13"):
        read_path_json(tmp_path / "path.json")


def test_json_with_a_typo_or_a_wrong_version_is_rejected():
    document = {"format": FORMAT, "frames": 3, "keyframes": [], "interpolaton": "linear"}
    with pytest.raises(CameraPathFormatError, match="unknown key.*interpolaton"):
        path_from_json(json.dumps(document))
    with pytest.raises(CameraPathFormatError, match="'format' must be"):
        path_from_json(
            json.dumps({"format": "inspatio.camera_path/9", "frames": 3, "keyframes": []})
        )


def test_json_geometry_errors_are_format_errors_naming_the_source():
    keyframe = {"frame": 0, "position": [0, 0, 1], "look_at": [0, 0, 1]}
    document = {"format": FORMAT, "frames": 3, "keyframes": [keyframe]}
    with pytest.raises(CameraPathFormatError, match="widget: look_at: eye and target coincide"):
        path_from_json(json.dumps(document), source="widget")
    document = {"format": FORMAT, "frames": 10**9, "keyframes": [keyframe]}
    with pytest.raises(CameraPathFormatError, match="frames must be between 1 and"):
        path_from_json(json.dumps(document))


def test_transforms_without_poses_name_the_frame(tmp_path):
    (tmp_path / "transforms.json").write_text(json.dumps({"frames": [{"file_path": "a.png"}]}))
    with pytest.raises(PathFileError, match=r"frames\[0\] has neither 'transform_matrix'"):
        read_transforms_json(tmp_path / "transforms.json")


# --- fuzzing: every parser fails only with its own error type --------------------------------

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-5, 100)
    | st.floats(allow_nan=True)
    | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=12), children, max_size=6)
    ),
    max_leaves=30,
)
# Coordinates from a small set, so coincident eyes and targets, parallel up vectors and unit
# quaternions come up often; plus arbitrary floats.
COORDINATES = st.sampled_from([0.0, 1.0, -1.0]) | st.floats(-5, 5)
VECTORS = st.lists(COORDINATES, min_size=2, max_size=4)
KEYFRAME_DOCUMENTS = st.fixed_dictionaries(
    {"format": st.just(FORMAT), "frames": st.integers(-2, 12) | JSON_VALUES},
    optional={
        "keyframes": st.lists(
            st.fixed_dictionaries(
                {
                    "frame": st.integers(-2, 12),
                    "position": VECTORS,
                },
                optional={
                    "rotation": st.lists(COORDINATES, min_size=3, max_size=5),
                    "look_at": VECTORS,
                },
            ),
            max_size=4,
        ),
        "interpolation": st.sampled_from(["smooth", "linear", "cubic"]),
        "up": VECTORS | JSON_VALUES,
        "intrinsics": st.lists(VECTORS, min_size=3, max_size=3) | JSON_VALUES,
        "fps": JSON_VALUES,
    },
)


@FUZZ_SETTINGS
@given(st.text(max_size=200) | JSON_VALUES.map(json.dumps))
def test_fuzzed_json_text_raises_only_format_errors(text):
    try:
        path_from_json(text)
    except CameraPathFormatError:
        pass


@FUZZ_SETTINGS
@given(KEYFRAME_DOCUMENTS)
def test_fuzzed_keyframe_documents_give_a_path_or_a_format_error(document):
    try:
        path = path_from_json(json.dumps(document))
    except CameraPathFormatError:
        return
    assert path.num_frames == document["frames"]


NUMBER_TOKENS = st.sampled_from(["0", "1", "-1", "0.5", "1e3", "nan", "inf", "x", "", "1,2", "#"])
TEXT_LINES = st.lists(st.lists(NUMBER_TOKENS, max_size=18).map(" ".join), max_size=6).map("\n".join)


@FUZZ_SETTINGS
@given(TEXT_LINES | st.text(max_size=120))
def test_fuzzed_text_files_raise_only_file_errors(text):
    for parse in (parse_v1_trajectory, parse_pose_text):
        try:
            parse(text)
        except PathFileError:
            pass


@FUZZ_SETTINGS
@given(
    JSON_VALUES
    | st.fixed_dictionaries({"frames": JSON_VALUES, "K": JSON_VALUES, "c2w": JSON_VALUES})
)
def test_fuzzed_transforms_and_meta_files_raise_only_file_errors(tmp_path_factory, document):
    file = tmp_path_factory.mktemp("fuzz") / "camera.json"
    file.write_text(json.dumps(document))
    for read in (read_transforms_json, read_worldfm_meta):
        try:
            read(file)
        except PathFileError:
            pass
