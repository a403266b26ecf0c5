"""nodes/comfy.py: the ComfyUI adapter, inside a simulated ComfyUI and with its plain fallbacks."""

from __future__ import annotations

import math
import sys
import types

import pytest
import torch
from conftest import HOST_PREVIEW_SIZE, SUPPORTED_EXTENSIONS, fake_folder_paths
from inspatio_nodes.nodes import comfy as cf


def test_folder_registration_keeps_the_extra_model_paths_yaml_entries(inside_comfyui, tmp_path):
    module, yaml_folder = inside_comfyui
    (yaml_folder / "world.safetensors").write_bytes(b"x")
    default_folder = tmp_path / "models" / cf.PACK_MODEL_FOLDER
    default_folder.mkdir(parents=True)
    (default_folder / "taehv.pth").write_bytes(b"x")

    assert cf.model_files(cf.PACK_MODEL_FOLDER) == ["taehv.pth", "world.safetensors"]
    folders, extensions = module.folder_names_and_paths[cf.PACK_MODEL_FOLDER]
    assert folders == [str(yaml_folder), str(default_folder)]
    assert SUPPORTED_EXTENSIONS <= extensions


def test_folder_registration_creates_the_pack_folder_when_the_yaml_has_none(monkeypatch, tmp_path):
    module = fake_folder_paths(tmp_path, {})
    monkeypatch.setitem(sys.modules, "folder_paths", module)
    monkeypatch.setattr(cf, "_registered_folders", set())

    assert cf.model_files(cf.PACK_MODEL_FOLDER) == []
    folders, _ = module.folder_names_and_paths[cf.PACK_MODEL_FOLDER]
    assert folders == [str(tmp_path / "models" / cf.PACK_MODEL_FOLDER)]


def test_model_path_searches_the_folders_in_order_and_names_the_input_when_missing(
    inside_comfyui, tmp_path
):
    _, yaml_folder = inside_comfyui
    (yaml_folder / "world.safetensors").write_bytes(b"x")

    found = cf.model_path(
        "Load", "checkpoint", "world.safetensors", "diffusion_models", cf.PACK_MODEL_FOLDER
    )
    assert found == yaml_folder / "world.safetensors"
    with pytest.raises(
        cf.NodeInputError, match=r"Load: input 'checkpoint'.*diffusion_models, inspatio"
    ):
        cf.model_path(
            "Load", "checkpoint", "absent.safetensors", "diffusion_models", cf.PACK_MODEL_FOLDER
        )


def test_outside_comfyui_model_files_are_explicit_paths(tmp_path):
    weight_file = tmp_path / "tiny.safetensors"
    weight_file.write_bytes(b"x")

    assert cf.model_files(*cf.DIT_FOLDERS) == []
    assert cf.model_path("Load", "checkpoint", str(weight_file), *cf.DIT_FOLDERS) == weight_file
    with pytest.raises(cf.NodeInputError, match="outside ComfyUI give the path"):
        cf.model_path("Load", "checkpoint", str(tmp_path / "missing.safetensors"), *cf.DIT_FOLDERS)


def test_inside_comfyui_saved_files_go_to_the_output_folder_and_loads_look_in_input_first(
    inside_comfyui, tmp_path
):
    output, input_folder = tmp_path / "output", tmp_path / "input"
    assert cf.output_directory() == output and cf.input_directory() == input_folder
    assert cf.output_file("paths/orbit.json") == output / "paths" / "orbit.json"
    assert (output / "paths").is_dir()  # created for the save node to write into

    # A file only in the output folder (written by a save node) is found from its bare name ...
    (output / "paths" / "orbit.json").write_text("{}")
    assert cf.input_file("paths/orbit.json") == output / "paths" / "orbit.json"
    assert cf.input_file_fingerprint("paths/orbit.json") > 0
    # ... and an uploaded copy in the input folder takes precedence.
    (input_folder / "paths").mkdir(parents=True)
    (input_folder / "paths" / "orbit.json").write_text("{}")
    assert cf.input_file("paths/orbit.json") == input_folder / "paths" / "orbit.json"
    # Absent everywhere: the input folder path, which the reader reports as missing.
    assert cf.input_file("absent.json") == input_folder / "absent.json"
    assert math.isnan(cf.input_file_fingerprint("absent.json"))


def test_absolute_file_names_are_used_as_given_inside_comfyui(inside_comfyui, tmp_path):
    elsewhere = tmp_path / "elsewhere" / "scene.safetensors"
    assert cf.output_file(str(elsewhere)) == elsewhere
    assert cf.input_file(str(elsewhere)) == elsewhere


def test_outside_comfyui_relative_files_are_in_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cf.output_directory() == cf.input_directory() == tmp_path
    assert cf.output_file("camera_path.json") == tmp_path / "camera_path.json"
    assert cf.input_file("camera_path.json") == tmp_path / "camera_path.json"


def test_outside_comfyui_progress_interruption_and_previews_are_plain():
    bar = cf.progress_bar(3)
    bar.update(preview=torch.rand(4, 4, 3))
    bar.update(5)
    cf.check_interrupted()

    assert bar.current == bar.total == 3
    assert cf.save_preview_images(torch.rand(2, 4, 4, 3)) == []
    assert cf.intermediate_device() == torch.device("cpu")


def test_inside_comfyui_progress_reports_absolute_steps_with_a_jpeg_preview(host_progress):
    bar = cf.progress_bar(2)
    bar.update()
    bar.update(preview=torch.full((4, 6, 3), 0.5))

    assert [(value, total) for value, total, _ in host_progress] == [(1, 2), (2, 2)]
    assert host_progress[0][2] is None
    image_format, image, max_size = host_progress[1][2]
    assert (image_format, image.size, max_size) == ("JPEG", (6, 4), HOST_PREVIEW_SIZE)


def test_inside_comfyui_previews_are_temp_pngs(inside_comfyui, tmp_path):
    module, _ = inside_comfyui
    temp = tmp_path / "temp"
    temp.mkdir()
    module.get_temp_directory = lambda: str(temp)
    module.get_save_image_path = lambda prefix, folder, width, height: (
        folder,
        prefix,
        7,
        "",
        prefix,
    )

    records = cf.save_preview_images(torch.rand(2, 4, 6, 3))

    assert [record["type"] for record in records] == ["temp", "temp"]
    assert records[0]["filename"].startswith(cf.PREVIEW_PREFIX) and records[0]["filename"].endswith(
        "_00007_.png"
    )
    assert sorted(path.name for path in temp.iterdir()) == sorted(
        record["filename"] for record in records
    )


def test_interruption_raises_the_host_exception(monkeypatch):
    class Interrupted(Exception):
        pass

    def throw():
        raise Interrupted

    monkeypatch.setitem(
        sys.modules,
        "comfy.model_management",
        types.SimpleNamespace(throw_exception_if_processing_interrupted=throw),
    )
    with pytest.raises(Interrupted):
        cf.check_interrupted()


def test_image_and_mask_round_trip_through_core_layouts():
    image = torch.rand(3, 5, 7, 3)
    mask = (torch.rand(3, 5, 7) > 0.5).float()

    frames = cf.image_to_frames("Node", "image", image)
    render_mask = cf.mask_to_render_mask("Node", "mask", mask)

    assert frames.shape == (3, 3, 5, 7) and frames.min() >= -1 and frames.max() <= 1
    assert render_mask.shape == (3, 1, 5, 7)
    torch.testing.assert_close(cf.frames_to_image(frames), image)
    assert torch.equal(cf.render_mask_to_mask(render_mask), mask)


def test_image_with_alpha_is_refused_with_the_node_and_input_named():
    with pytest.raises(
        cf.NodeInputError, match=r"Render: input 'render' .*got shape \(2, 4, 4, 4\)"
    ):
        cf.image_to_frames("Render", "render", torch.rand(2, 4, 4, 4))


def test_conditioning_is_truncated_to_text_len_and_zero_padded():
    long_prompt = torch.randn(1, 9, 4)
    short_prompt = torch.randn(1, 3, 4)

    truncated = cf.conditioning_to_text_embeddings("Init", "positive", [[long_prompt, {}]], 6, 4)
    padded = cf.conditioning_to_text_embeddings(
        "Init", "positive", [[short_prompt, {"pooled_output": None}]], 6, 4
    )

    assert torch.equal(truncated, long_prompt[:, :6])
    assert torch.equal(padded[:, :3], short_prompt) and torch.all(padded[:, 3:] == 0)


@pytest.mark.parametrize(
    ("conditioning", "message"),
    [
        ([], "not a CONDITIONING list"),
        ([[torch.randn(2, 5, 4), {}]], "one prompt"),
        ([[torch.randn(1, 5, 8), {}]], "8-wide embeddings but the model needs 4"),
    ],
)
def test_bad_conditioning_is_refused_with_a_fix(conditioning, message):
    with pytest.raises(cf.NodeInputError, match=message):
        cf.conditioning_to_text_embeddings("Init", "positive", conditioning, 6, 4)


def test_latent_dict_carries_raw_video_samples():
    raw = torch.randn(1, 16, 3, 4, 6)

    assert torch.equal(cf.latent_samples("Decode", "latent", cf.latent_output(raw)), raw)
    with pytest.raises(cf.NodeInputError, match="Decode: input 'latent'.*frame axis"):
        cf.latent_samples("Decode", "latent", {"samples": torch.randn(1, 16, 4, 6)})


def test_outside_comfyui_a_managed_model_loads_onto_a_plain_device():
    module = torch.nn.Linear(2, 2)
    managed = cf.manage_model(module)

    device = cf.load_to_device(managed, memory_required=0)

    assert managed.patcher is None
    assert next(module.parameters()).device.type == device.type


def test_a_model_file_replaced_under_the_same_name_changes_its_fingerprint(tmp_path):
    weight_file = tmp_path / "embeddings.safetensors"
    weight_file.write_bytes(b"first")
    before = cf.model_file_fingerprint(str(weight_file), cf.PACK_MODEL_FOLDER)

    weight_file.write_bytes(b"second version")

    assert cf.model_file_fingerprint(str(weight_file), cf.PACK_MODEL_FOLDER) != before
    assert cf.model_file_fingerprint(str(tmp_path / "absent"), cf.PACK_MODEL_FOLDER) == ""


def test_inside_comfyui_models_used_together_load_in_one_call_with_the_memory_estimate(monkeypatch):
    loads = []

    class HostModelPatcher:
        def __init__(self, model, load_device, offload_device):
            self.model, self.load_device = model, load_device

    host = types.SimpleNamespace(
        get_torch_device=lambda: torch.device("cpu"),
        unet_offload_device=lambda: torch.device("cpu"),
        load_models_gpu=lambda patchers, **options: loads.append((patchers, options)),
    )
    monkeypatch.setitem(sys.modules, "comfy.model_management", host)
    monkeypatch.setitem(
        sys.modules, "comfy.model_patcher", types.SimpleNamespace(ModelPatcher=HostModelPatcher)
    )
    world, codec = cf.manage_model(torch.nn.Linear(2, 2)), cf.manage_model(torch.nn.Linear(2, 3))

    device = cf.load_to_device(world, 1234, alongside=(codec,))

    ((patchers, options),) = loads
    assert [patcher.model.core for patcher in patchers] == [world.module, codec.module]
    assert options == {"memory_required": 1234, "force_full_load": True}
    assert device == torch.device("cpu")
