"""Camera-path nodes: presets, keyframe JSON, files, operations and preview, called as ComfyUI would."""

from __future__ import annotations

import json
import math
import os

import pytest
import torch
from inspatio_nodes.core.camera import camera_centres, intrinsics_from_fov
from inspatio_nodes.core.path_files import read_v1_trajectory
from inspatio_nodes.core.path_presets import PRESETS
from inspatio_nodes.core.scene import scene_from_video
from inspatio_nodes.nodes.camera import (
    DEFAULT_KEYFRAMES_JSON,
    InSpatioCameraKeyframes,
    InSpatioCameraPreset,
)
from inspatio_nodes.nodes.camera_edit import (
    PATH_OPERATIONS,
    InSpatioCameraPathPreview,
    InSpatioConcatCameraPaths,
    InSpatioFollowSourceCamera,
    InSpatioModifyCameraPath,
    InSpatioRetimeCameraPath,
)
from inspatio_nodes.nodes.camera_files import InSpatioLoadCameraPath, InSpatioSaveCameraPath
from inspatio_nodes.nodes.comfy import NodeInputError

HEIGHT, WIDTH, SCENE_FRAMES = 32, 48, 5
SCENE_DEPTH = 2.0


def _scene(moving: bool = False):
    poses = torch.eye(4).repeat(SCENE_FRAMES, 1, 1)
    if moving:
        poses[:, 0, 3] = -torch.linspace(0, 0.5, SCENE_FRAMES)
    frames = (
        torch.rand(SCENE_FRAMES, 3, HEIGHT, WIDTH, generator=torch.Generator().manual_seed(1)) * 2
        - 1
    )
    depth = torch.full((SCENE_FRAMES, HEIGHT, WIDTH), SCENE_DEPTH)
    return scene_from_video(
        frames, depth, intrinsics_from_fov(60.0, WIDTH, HEIGHT), poses, 12.0, (HEIGHT, WIDTH)
    )


def _preset(preset="orbit_left", frames=9, scene=None, **overrides):
    arguments = {
        "preset": preset,
        "frames": frames,
        "strength": 1.0,
        "easing": "linear",
        "radius_ratio": 1.0,
        "rotation_only": False,
        "relative_to_source": False,
    }
    arguments.update(overrides)
    return InSpatioCameraPreset().build(**arguments, scene=scene)


def _keyframes(frames: int = 9):
    document = json.loads(DEFAULT_KEYFRAMES_JSON)
    document["frames"] = frames
    document["keyframes"] = [key for key in document["keyframes"] if key["frame"] < frames]
    return InSpatioCameraKeyframes().build(json.dumps(document))[0]


@pytest.mark.parametrize("preset", list(PRESETS))
def test_every_preset_builds_a_path_of_the_requested_length(preset):
    path, frames = _preset(preset, frames=7, scene=_scene())
    assert frames == path.num_frames == 7


def test_orbit_keeps_its_distance_to_the_pivot_at_the_scene_foreground_depth():
    path, _ = _preset("orbit_left", frames=9, scene=_scene(), strength=2.0)
    pivot = torch.tensor([0.0, 0.0, SCENE_DEPTH], dtype=torch.float64)
    distances = torch.linalg.vector_norm(camera_centres(path.world_to_camera) - pivot, dim=-1)
    torch.testing.assert_close(distances, torch.full_like(distances, SCENE_DEPTH))


def test_zero_frames_follows_the_scene_length():
    _, frames = _preset("dolly_in", frames=0, scene=_scene())
    assert frames == SCENE_FRAMES


def test_zero_frames_without_a_scene_names_the_frames_input():
    with pytest.raises(NodeInputError, match="Path Preset: input 'frames'"):
        _preset(frames=0)


def test_relative_to_source_needs_the_scene_length():
    with pytest.raises(NodeInputError, match="input 'relative_to_source'"):
        _preset(frames=SCENE_FRAMES + 1, scene=_scene(moving=True), relative_to_source=True)


def test_default_keyframes_document_is_valid_and_starts_at_the_origin():
    assert InSpatioCameraKeyframes.VALIDATE_INPUTS(DEFAULT_KEYFRAMES_JSON) is True
    path, frames = InSpatioCameraKeyframes().build(DEFAULT_KEYFRAMES_JSON)
    assert frames == json.loads(DEFAULT_KEYFRAMES_JSON)["frames"]
    torch.testing.assert_close(
        camera_centres(path.world_to_camera[:1]), torch.zeros(1, 3, dtype=torch.float64)
    )


def test_malformed_keyframes_fail_validation_with_the_node_and_input_named():
    message = InSpatioCameraKeyframes.VALIDATE_INPUTS(
        '{"format": "inspatio.camera_path/1", "frames": 3}'
    )
    assert isinstance(message, str) and "Keyframes: input 'path_json'" in message
    with pytest.raises(NodeInputError, match="input 'path_json'"):
        InSpatioCameraKeyframes().build("not json")


def test_concatenation_adds_the_frame_counts():
    path, frames = InSpatioConcatCameraPaths().concatenate(_keyframes(9), _preset(frames=4)[0])
    assert frames == 13
    torch.testing.assert_close(path.world_to_camera[9:], _preset(frames=4)[0].world_to_camera)


def test_retime_by_speed_and_by_frame_count():
    path = _keyframes(9)
    _, faster = InSpatioRetimeCameraPath().retime(
        path, speed=2.0, frames=0, easing="linear", interpolation="smooth"
    )
    _, exact = InSpatioRetimeCameraPath().retime(
        path, speed=2.0, frames=21, easing="linear", interpolation="linear"
    )
    assert (faster, exact) == (5, 21)


def test_bad_speed_names_the_speed_input():
    with pytest.raises(NodeInputError, match="input 'speed'"):
        InSpatioRetimeCameraPath().retime(
            _keyframes(9), speed=0.0, frames=0, easing="linear", interpolation="smooth"
        )


def test_unknown_preset_names_the_preset_input_and_lists_the_valid_names():
    with pytest.raises(
        NodeInputError, match="input 'preset' is 'nonsense'.*orbit_left.*zoom_out_in"
    ):
        _preset(preset="nonsense")


@pytest.mark.parametrize(
    "override, input_name",
    [
        ({"easing": "wobbly"}, "easing"),
        ({"strength": math.nan}, "strength"),
        ({"frames": -3}, "frames"),
        ({"radius_ratio": 0.0}, "radius_ratio"),
    ],
)
def test_bad_preset_widget_names_its_own_input(override, input_name):
    with pytest.raises(NodeInputError, match=f"Camera Path Preset: input '{input_name}'"):
        _preset(**override)


@pytest.mark.parametrize(
    "override, input_name",
    [({"easing": "wobbly"}, "easing"), ({"interpolation": "cubic"}, "interpolation")],
)
def test_bad_retime_choice_names_its_own_input(override, input_name):
    arguments = {"speed": 1.0, "frames": 0, "easing": "linear", "interpolation": "smooth"}
    arguments.update(override)
    with pytest.raises(NodeInputError, match=f"Retime Camera Path: input '{input_name}'"):
        InSpatioRetimeCameraPath().retime(_keyframes(9), **arguments)


@pytest.mark.parametrize(
    "operation, expected_frames",
    [("reverse", 9), ("ping_pong", 17), ("loop", 27), ("hold_end", 12), ("hold_start", 12)],
)
def test_path_operations_give_the_expected_lengths(operation, expected_frames):
    count = 3
    _, frames = InSpatioModifyCameraPath().modify(_keyframes(9), operation, count)
    assert frames == expected_frames
    assert operation in PATH_OPERATIONS


def test_following_a_moving_source_camera_moves_the_path_with_it():
    still, _ = _preset("static", frames=SCENE_FRAMES, scene=_scene(moving=True))
    followed, _ = InSpatioFollowSourceCamera().compose(still, _scene(moving=True))
    torch.testing.assert_close(
        followed.world_to_camera.float(), _scene(moving=True).world_to_camera
    )


def test_preview_node_returns_one_two_panel_image():
    result = InSpatioCameraPathPreview().preview(
        _scene(), _preset(frames=9)[0], panel_size=64, frustum_every=0
    )
    (image,) = result["result"]
    assert image.shape == (1, 64, 128, 3)
    assert result["ui"]["images"] == []  # outside ComfyUI nothing is written


def test_preview_panel_too_small_names_the_input():
    with pytest.raises(NodeInputError, match="input 'panel_size'"):
        InSpatioCameraPathPreview().preview(
            _scene(), _preset(frames=3)[0], panel_size=8, frustum_every=0
        )


def test_every_camera_input_has_a_tooltip():
    nodes = (
        InSpatioCameraPreset,
        InSpatioCameraKeyframes,
        InSpatioLoadCameraPath,
        InSpatioSaveCameraPath,
        InSpatioConcatCameraPaths,
        InSpatioRetimeCameraPath,
        InSpatioModifyCameraPath,
        InSpatioFollowSourceCamera,
        InSpatioCameraPathPreview,
    )
    for node in nodes:
        for section in node.INPUT_TYPES().values():
            for name, (_, options) in section.items():
                assert options.get("tooltip"), f"{node.__name__}.{name} has no tooltip"


def _load(file, format, frames=0, scene=None, **overrides):
    arguments = {
        "file": str(file),
        "format": format,
        "frames": frames,
        "v1_style": "render_point_cloud",
        "radius_ratio": 1.0,
        "rotation_only": False,
    }
    arguments.update(overrides)
    return InSpatioLoadCameraPath().load(**arguments, scene=scene)


@pytest.mark.parametrize("format", ["tcw_text", "inspatio_json", "transforms_json", "c2w_text"])
def test_saved_paths_load_back_with_the_same_poses(tmp_path, format):
    path = _keyframes(9)
    file = tmp_path / f"path.{format}"
    result = InSpatioSaveCameraPath().save(
        path, str(file), format, image_width=WIDTH, image_height=HEIGHT
    )
    assert result["result"] == (str(file),)
    loaded, frames = _load(file, format)
    assert frames == 9
    torch.testing.assert_close(loaded.world_to_camera, path.world_to_camera, atol=1e-6, rtol=0)


def test_v1_trajectory_file_follows_the_scene_length(tmp_path):
    file = tmp_path / "orbit.txt"
    file.write_text("0 0 0\n0 10 20\n1 1 1\n")
    path, frames = _load(file, "v1_trajectory", scene=_scene())
    assert frames == SCENE_FRAMES
    assert not torch.allclose(path.world_to_camera[0], path.world_to_camera[-1])


def test_v1_file_loaded_and_saved_as_v1_keeps_its_keyframes(tmp_path):
    original = tmp_path / "original.txt"
    original.write_text("0 -5 10 0\n0 15 30\n1 0.8 1.2 1\n")
    path, _ = _load(original, "v1_trajectory", scene=_scene())
    saved = tmp_path / "saved.txt"
    InSpatioSaveCameraPath().save(path, str(saved), "v1_trajectory", WIDTH, HEIGHT)
    assert read_v1_trajectory(saved) == read_v1_trajectory(original)
    reloaded, _ = _load(saved, "v1_trajectory", scene=_scene())
    torch.testing.assert_close(reloaded.world_to_camera, path.world_to_camera, atol=0, rtol=0)


@pytest.mark.parametrize(
    "preset", [name for name, value in PRESETS.items() if value.official_keyframes]
)
def test_official_v1_preset_saves_its_keyframe_lines(tmp_path, preset):
    file = tmp_path / f"{preset}.txt"
    InSpatioSaveCameraPath().save(_preset(preset)[0], str(file), "v1_trajectory", WIDTH, HEIGHT)
    assert read_v1_trajectory(file) == PRESETS[preset].official_keyframes


def test_path_not_built_from_v1_keyframes_cannot_be_saved_as_v1(tmp_path):
    file = tmp_path / "keys.txt"
    file.write_text("0 0 0\n0 10 20\n1 1 1\n")
    loaded, _ = _load(file, "v1_trajectory", scene=_scene())
    (reversed_path, _) = InSpatioModifyCameraPath().modify(loaded, "reverse", 0)
    for path in (_keyframes(5), _preset("orbit_left")[0], reversed_path):
        with pytest.raises(
            NodeInputError, match="Save Camera Path: input 'format' is 'v1_trajectory'.*x_y_circle"
        ):
            InSpatioSaveCameraPath().save(path, str(tmp_path / "out.txt"), "v1_trajectory", 8, 8)


def test_malformed_camera_file_names_the_file_input(tmp_path):
    file = tmp_path / "broken.txt"
    file.write_text("1 2 3\n")
    with pytest.raises(NodeInputError, match="Load Camera Path: input 'file'.*line 1"):
        _load(file, "tcw_text")


def test_saving_worldfm_meta_without_intrinsics_names_the_file_input(tmp_path):
    with pytest.raises(NodeInputError, match="Save Camera Path: input 'file'.*K"):
        InSpatioSaveCameraPath().save(
            _keyframes(3), str(tmp_path / "meta.json"), "worldfm_meta", 8, 8
        )


def test_loaded_camera_file_is_fingerprinted_by_its_modification_time(tmp_path):
    file = tmp_path / "target_tcw.txt"
    InSpatioSaveCameraPath().save(_keyframes(3), str(file), "tcw_text", WIDTH, HEIGHT)
    first = InSpatioLoadCameraPath.IS_CHANGED(file=str(file))
    os.utime(file, (first + 10, first + 10))
    assert InSpatioLoadCameraPath.IS_CHANGED(file=str(file)) == first + 10
    assert math.isnan(InSpatioLoadCameraPath.IS_CHANGED(file=str(tmp_path / "missing.txt")))


def test_inside_comfyui_a_relative_camera_file_is_saved_to_output_and_loads_back(
    inside_comfyui, tmp_path
):
    path = _keyframes(4)
    result = InSpatioSaveCameraPath().save(path, "paths/orbit.json", "inspatio_json", WIDTH, HEIGHT)
    written = tmp_path / "output" / "paths" / "orbit.json"
    assert result["result"] == (str(written),) and written.is_file()
    loaded, frames = _load("paths/orbit.json", "inspatio_json")
    assert frames == 4
    torch.testing.assert_close(loaded.world_to_camera, path.world_to_camera, atol=1e-6, rtol=0)
    assert InSpatioLoadCameraPath.IS_CHANGED(file="paths/orbit.json") == os.path.getmtime(written)
