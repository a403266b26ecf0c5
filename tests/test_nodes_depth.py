"""DA3 Scene, Save Scene and Load Scene nodes, called as ComfyUI calls them (outside ComfyUI).

The DA3 node runs the installed ``depth-anything-3`` package's own ``da3-small`` network with
random weights from a folder laid out like the Hugging Face release; those tests are skipped when
the package is absent.
"""

from __future__ import annotations

import json

import pytest
import torch
from inspatio_nodes.core.camera import look_at
from inspatio_nodes.core.scene import Scene
from inspatio_nodes.nodes import depth as depth_nodes
from inspatio_nodes.nodes.comfy import NodeInputError
from torch import nn

SMALL_MODEL = "da3-small"
WIDTH, HEIGHT, PROCESS_RES = 64, 32, 56


@pytest.fixture(scope="module")
def da3_weights(tmp_path_factory):
    pytest.importorskip("depth_anything_3.cfg")
    from inspatio_nodes.core import da3
    from safetensors.torch import save_model

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("DA3-SMALL")
    (folder / da3.CONFIG_FILE).write_text(json.dumps({"model_name": SMALL_MODEL}))
    wrapper = nn.Module()
    wrapper.model = da3.build_da3(SMALL_MODEL)
    save_model(wrapper, str(folder / da3.WEIGHTS_FILE))
    return folder / da3.WEIGHTS_FILE


@pytest.fixture(scope="module")
def video_scene(da3_weights):
    frames = torch.rand(3, 40, 70, 3, generator=torch.Generator().manual_seed(1))
    (scene,) = depth_nodes.InSpatioDA3Scene().estimate(
        frames, str(da3_weights), "video", 12.0, WIDTH, HEIGHT, PROCESS_RES
    )
    return scene


def _small_scene() -> Scene:
    generator = torch.Generator().manual_seed(2)
    poses = torch.stack(
        [
            look_at(torch.tensor([0.1 * i, 0.0, 0.0]), torch.tensor([0.0, 0.0, 4.0]))
            for i in range(2)
        ]
    )
    return Scene(
        frames=torch.rand(2, 3, 16, 16, generator=generator) * 2 - 1,
        depth=1 + torch.rand(2, 16, 16, generator=generator),
        intrinsics=torch.tensor([[12.0, 0.0, 8.0], [0.0, 12.0, 8.0], [0.0, 0.0, 1.0]]).expand(
            2, 3, 3
        ),
        world_to_camera=poses.float(),
        fps=10.0,
    )


def test_da3_scene_has_geometry_for_every_frame_at_the_model_size(video_scene):
    assert video_scene.kind == "video" and video_scene.fps == 12.0
    assert video_scene.frames.shape == (3, 3, HEIGHT, WIDTH)
    assert video_scene.depth.shape == (3, HEIGHT, WIDTH)
    assert video_scene.intrinsics.shape == (3, 3, 3)
    assert video_scene.world_to_camera.shape == (3, 4, 4)


def test_da3_intrinsics_belong_to_the_model_size(video_scene):
    # DA3 puts the principal point at the centre of its processed frame; scaled rows keep it there.
    centre = video_scene.intrinsics[:, :2, 2]
    torch.testing.assert_close(centre, torch.tensor([WIDTH / 2, HEIGHT / 2]).expand(3, 2))


def test_da3_loaded_network_is_reused_between_runs(da3_weights):
    first = depth_nodes._da3_network(depth_nodes.InSpatioDA3Scene.NODE, da3_weights)
    assert depth_nodes._da3_network(depth_nodes.InSpatioDA3Scene.NODE, da3_weights) is first


def test_da3_single_image_becomes_an_image_scene(da3_weights):
    image = torch.rand(1, 40, 70, 3, generator=torch.Generator().manual_seed(4))
    (scene,) = depth_nodes.InSpatioDA3Scene().estimate(
        image, str(da3_weights), "images", 16.0, WIDTH, HEIGHT, PROCESS_RES
    )
    assert scene.kind == "images" and scene.num_frames == 1


def test_da3_missing_weights_name_the_model_input(tmp_path):
    with pytest.raises(NodeInputError, match="'model'"):
        depth_nodes.InSpatioDA3Scene().estimate(
            torch.rand(1, 16, 16, 3), str(tmp_path / "model.safetensors"), "video", 16.0, 64, 32, 56
        )


def test_da3_unknown_scene_kind_names_the_kind_input():
    with pytest.raises(NodeInputError, match="'kind'"):
        depth_nodes.InSpatioDA3Scene().estimate(
            torch.rand(1, 16, 16, 3), "model.safetensors", "panorama", 16.0, 64, 32, 56
        )


def test_saved_scene_loads_back_through_the_nodes(tmp_path):
    scene = _small_scene()
    target = str(tmp_path / "scenes" / "walk.safetensors")
    saved = depth_nodes.InSpatioSaveScene().save(scene, target)
    assert saved["result"] == (target,)
    (loaded,) = depth_nodes.InSpatioLoadScene().load(target)
    torch.testing.assert_close(loaded.world_to_camera, scene.world_to_camera, rtol=0, atol=0)
    assert (loaded.depth - scene.depth).abs().max() < 1e-4
    assert depth_nodes.InSpatioLoadScene.IS_CHANGED(target) > 0


def test_missing_scene_file_names_the_node_and_the_file_input(tmp_path):
    with pytest.raises(NodeInputError, match="InSpatio Load Scene: input 'file'"):
        depth_nodes.InSpatioLoadScene().load(str(tmp_path / "absent.safetensors"))


def test_saving_to_another_extension_names_the_file_input(tmp_path):
    with pytest.raises(NodeInputError, match="'file'.*safetensors"):
        depth_nodes.InSpatioSaveScene().save(_small_scene(), str(tmp_path / "scene.json"))


@pytest.mark.parametrize("node", list(depth_nodes.NODE_CLASS_MAPPINGS.values()))
def test_every_input_has_a_tooltip_and_the_scene_category(node):
    inputs = node.INPUT_TYPES()["required"]
    assert all("tooltip" in options for _, options in inputs.values())
    assert node.CATEGORY == "InSpatio/Scene"


def test_inside_comfyui_a_relative_scene_file_is_saved_to_output_and_loads_back(
    inside_comfyui, tmp_path
):
    scene = _small_scene()
    saved = depth_nodes.InSpatioSaveScene().save(scene, "scenes/walk.safetensors")
    written = tmp_path / "output" / "scenes" / "walk.safetensors"
    assert saved["result"] == (str(written),) and written.is_file()
    (loaded,) = depth_nodes.InSpatioLoadScene().load("scenes/walk.safetensors")
    torch.testing.assert_close(loaded.world_to_camera, scene.world_to_camera, rtol=0, atol=0)
    assert depth_nodes.InSpatioLoadScene.IS_CHANGED("scenes/walk.safetensors") > 0
