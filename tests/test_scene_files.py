"""Scene files: a saved scene loads back exactly, up to the 16-bit depth and 8-bit frame codes."""

from __future__ import annotations

import math

import pytest
import torch
from inspatio_nodes.core import scene_files
from inspatio_nodes.core.camera import look_at
from inspatio_nodes.core.scene import UINT16_CODES, Scene
from inspatio_nodes.core.wan.checkpoints import read_weights
from safetensors.torch import save_file

FRAME_CODE_STEP = 2.0 / 255.0  # frames in [-1, 1] stored as 8-bit RGB


def _scene(kind="video", frames=3, height=8, width=12, holes=False) -> Scene:
    generator = torch.Generator().manual_seed(3)
    depth = 0.7 + 9.0 * torch.rand(frames, height, width, generator=generator)
    if holes:
        depth[:, 0, :3] = 0.0
    eyes = torch.tensor([[0.1 * index, 0.0, -0.2 * index] for index in range(frames)])
    poses = torch.stack([look_at(eye, torch.tensor([0.0, 0.0, 5.0])) for eye in eyes]).float()
    intrinsics = torch.tensor([[10.5, 0.0, 6.25], [0.0, 11.0, 3.75], [0.0, 0.0, 1.0]])
    return Scene(
        frames=torch.rand(frames, 3, height, width, generator=generator) * 2 - 1,
        depth=depth,
        intrinsics=intrinsics.expand(frames, 3, 3).clone(),
        world_to_camera=poses,
        fps=23.976,
        kind=kind,
    )


def test_round_trip_is_exact_up_to_the_codes(tmp_path):
    scene = _scene()
    path = scene_files.save_scene(scene, tmp_path / "room.scene.safetensors")
    loaded = scene_files.load_scene(path)
    depth_step = float(scene.depth.max() - scene.depth.min()) / UINT16_CODES
    assert (loaded.depth - scene.depth).abs().max() <= depth_step / 2 + 1e-6
    assert (loaded.frames - scene.frames).abs().max() <= FRAME_CODE_STEP / 2 + 1e-6
    torch.testing.assert_close(loaded.intrinsics, scene.intrinsics, rtol=0, atol=0)
    torch.testing.assert_close(loaded.world_to_camera, scene.world_to_camera, rtol=0, atol=0)
    assert loaded.fps == scene.fps and loaded.kind == scene.kind


def test_saving_a_loaded_scene_again_changes_nothing(tmp_path):
    first = scene_files.load_scene(scene_files.save_scene(_scene(), tmp_path / "a.safetensors"))
    second = scene_files.load_scene(scene_files.save_scene(first, tmp_path / "b.safetensors"))
    torch.testing.assert_close(second.depth, first.depth, rtol=0, atol=0)
    torch.testing.assert_close(second.frames, first.frames, rtol=0, atol=0)


def test_depth_codes_follow_the_v15_linear_range():
    depth = torch.tensor([[[2.0, 3.0], [4.0, 2.0 + 2.0 / UINT16_CODES * 0.49]]])
    codes, depth_min, depth_max = scene_files.encode_depth_u16(depth)
    assert (depth_min, depth_max) == (2.0, 4.0)
    assert codes.dtype == torch.uint16
    assert codes.to(torch.int32).tolist() == [[[0, math.ceil(UINT16_CODES / 2)], [UINT16_CODES, 0]]]


def test_pixels_without_depth_stay_without_depth(tmp_path):
    scene = _scene(holes=True)
    loaded = scene_files.load_scene(scene_files.save_scene(scene, tmp_path / "holes.safetensors"))
    assert (loaded.depth[:, 0, :3] == 0).all()
    assert (loaded.depth[:, 1:] > 0).all()
    depth_step = float(scene.depth.max()) / UINT16_CODES  # min is 0 once holes exist
    assert (loaded.depth - scene.depth).abs().max() <= depth_step / 2 + 1e-6


def test_constant_depth_round_trips_exactly(tmp_path):
    scene = _scene()
    flat = Scene(
        scene.frames,
        torch.full_like(scene.depth, 2.5),
        scene.intrinsics,
        scene.world_to_camera,
        scene.fps,
        scene.kind,
    )
    loaded = scene_files.load_scene(scene_files.save_scene(flat, tmp_path / "flat.safetensors"))
    assert (loaded.depth == 2.5).all()


def test_image_scenes_keep_their_kind(tmp_path):
    scene = _scene(kind="images", frames=4)
    loaded = scene_files.load_scene(scene_files.save_scene(scene, tmp_path / "views.safetensors"))
    assert loaded.kind == "images" and loaded.num_frames == 4


def test_missing_file_says_how_to_make_one(tmp_path):
    with pytest.raises(scene_files.SceneFileError, match="Save Scene"):
        scene_files.load_scene(tmp_path / "nothing.safetensors")


def test_a_weight_file_is_not_taken_for_a_scene(tmp_path):
    path = tmp_path / "weights.safetensors"
    save_file({"blocks.0.weight": torch.zeros(2, 2)}, str(path))
    with pytest.raises(scene_files.SceneFileError, match="not an InSpatio scene file"):
        scene_files.load_scene(path)


def test_a_damaged_scene_file_names_the_tensor(tmp_path):
    path = scene_files.save_scene(_scene(), tmp_path / "scene.safetensors")
    tensors, metadata = read_weights(path)
    tensors["intrinsics"] = tensors["intrinsics"][:1].contiguous()
    save_file(tensors, str(path), metadata=metadata)
    with pytest.raises(scene_files.SceneFileError, match="'intrinsics'"):
        scene_files.load_scene(path)


def test_scene_files_must_be_safetensors(tmp_path):
    with pytest.raises(scene_files.SceneFileError, match=".safetensors"):
        scene_files.save_scene(_scene(), tmp_path / "scene.npz")
