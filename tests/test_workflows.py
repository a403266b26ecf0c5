"""Workflow templates: each UI file agrees with its API twin, and the pack's part of it runs.

UI files (``workflows/*.json``) are what ComfyUI lists as templates; their API twins
(``workflows/api/*.json``) are what ``POST /prompt`` takes (COMFYUI.md §11). The frontend converts
one into the other; here the conversion rules are checked by hand: same nodes, same links, and
the UI's positional ``widgets_values`` equal to the API's constant inputs in ``INPUT_TYPES`` order,
linked inputs skipped, with the frontend-only extra values (``control_after_generate`` after a seed,
the upload button's value after an upload combo).

Then each API workflow is executed in topological order: the pack's nodes for real (tiny models,
small frames), core ComfyUI nodes replaced by the tensors they are documented to return
(IMAGE ``[B, H, W, 3]``, CONDITIONING ``[[cond [1, L, text_dim], {}]]``, a VAE object). Load VAE
gives, by the file the template names, the Wan2.1 model under ``first_stage_model`` (what the
InSpatio-World nodes read) or an SDXL-like object with ``encode(IMAGE)`` / ``decode(latent)``
(what the WorldFM sampler calls); Load Image gives a 2:1 room panorama and its grey distance map
for panorama files, small frames and grey depth ramps otherwise. The one change to the templates
is a smaller model resolution (scene width/height, the WorldFM render and reference bank sizes).
"""

from __future__ import annotations

from dataclasses import replace

import json
from graphlib import TopologicalSorter
from pathlib import Path

import pytest
import torch
from inspatio_nodes.core.wan.checkpoints import save_dit
from inspatio_nodes.core.wan.dit import CausalWanDiT
from inspatio_nodes.core.wan.vae import WanVAE
from inspatio_nodes.demo import HostVAE
from inspatio_nodes.nodes import NODE_CLASS_MAPPINGS
from safetensors.torch import save_file
from test_nodes_model import TINY_DIT, TINY_VAE
from test_nodes_worldfm import (
    LATENT_STRIDE,
    REFERENCE_FOCAL,
    REFERENCE_SIZE,
    RENDER_SIZE,
    TINY_RELEASED_STYLE,
    PoolingVAE,
    inverse_distance_image,
    room_panorama,
    save_released_style,
)

WORKFLOWS = Path(__file__).resolve().parents[1] / "workflows"
UI_FILES = sorted(WORKFLOWS.glob("*.json"))
# Templates the pack ships, by name; more may be added, each with its API twin.
SHIPPED_TEMPLATES = {
    "inspatio_video_orbit_v1.json",
    "inspatio_image_fly_through_v15.json",
    "inspatio_bullet_time.json",
    "inspatio_render_preview.json",
    "worldfm_panorama_to_video.json",
}

# Core nodes the templates may use: inputs in INPUT_TYPES order as (name, is_widget, frontend
# extra value or None), and output types. Read from ComfyUI's nodes.py / comfy_extras/nodes_video.py.
# The upload button of LoadImage / LoadVideo stores this value right after the file combo's.
UPLOAD_WIDGET_VALUE = "image"
CORE_NODES = {
    "LoadImage": ([("image", True, UPLOAD_WIDGET_VALUE)], ("IMAGE", "MASK")),
    "LoadVideo": ([("file", True, UPLOAD_WIDGET_VALUE)], ("VIDEO",)),
    "GetVideoComponents": ([("video", False, None)], ("IMAGE", "AUDIO", "FLOAT")),
    "CLIPLoader": (
        [("clip_name", True, None), ("type", True, None), ("device", True, None)],
        ("CLIP",),
    ),
    "CLIPTextEncode": ([("text", True, None), ("clip", False, None)], ("CONDITIONING",)),
    "VAELoader": ([("vae_name", True, None)], ("VAE",)),
    "VAEDecode": ([("samples", False, None), ("vae", False, None)], ("IMAGE",)),
    "PreviewImage": ([("images", False, None)], ()),
    "SaveImage": ([("images", False, None), ("filename_prefix", True, None)], ()),
    "CreateVideo": (
        [("images", False, None), ("fps", True, None), ("audio", False, None)],
        ("VIDEO",),
    ),
    "SaveVideo": (
        [
            ("video", False, None),
            ("filename_prefix", True, None),
            ("format", True, None),
            ("codec", True, None),
        ],
        (),
    ),
}
CORE_OUTPUT_NODES = {"PreviewImage", "SaveImage", "SaveVideo"}
# Pack nodes that render the WorldFM scene along a camera path (their path K is shrunk with it).
WORLDFM_PATH_CONSUMERS = ("InSpatioWorldFMRender", "InSpatioWorldFMSampler")
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN"}
SEED_CONTROL_VALUES = {"fixed", "increment", "decrement", "randomize"}
MODEL_FILE_SUFFIXES = (".safetensors", ".pth", ".pt", ".ckpt", ".sft")

# Small stand-ins for the run: frames, model resolution and models.
SOURCE_FRAMES, SOURCE_HEIGHT, SOURCE_WIDTH = 9, 40, 64
MODEL_HEIGHT, MODEL_WIDTH = 32, 48
PROMPT_TOKENS = 4
WORLD_CHECKPOINTS = ("InSpatio-World-1.3B.safetensors", "InSpatio-World-1.5-1.3B.safetensors")
WORLDFM_CHECKPOINT = "worldfm_2-step.pth"
# Scene-building widgets set to a tiny model resolution, per node.
SHRUNK_SCENE_INPUTS = {
    "InSpatioSceneFromImages": {"width": MODEL_WIDTH, "height": MODEL_HEIGHT},
    "InSpatioSceneFromVideo": {"width": MODEL_WIDTH, "height": MODEL_HEIGHT},
    "InSpatioWorldFMSceneFromPanorama": {
        "render_size": RENDER_SIZE,
        "reference_size": REFERENCE_SIZE,
        "reference_focal": REFERENCE_FOCAL,
    },
}


def _pack_inputs(class_type: str) -> list[tuple[str, bool, str | None]]:
    spec = NODE_CLASS_MAPPINGS[class_type].INPUT_TYPES()
    inputs = []
    for section in ("required", "optional"):
        for name, (kind, *rest) in spec.get(section, {}).items():
            options = rest[0] if rest else {}
            is_widget = isinstance(kind, list) or (
                kind in WIDGET_TYPES and not options.get("forceInput")
            )
            inputs.append(
                (name, is_widget, "seed control" if options.get("control_after_generate") else None)
            )
    return inputs


def _inputs(class_type: str) -> list[tuple[str, bool, str | None]]:
    if class_type in CORE_NODES:
        return CORE_NODES[class_type][0]
    assert class_type in NODE_CLASS_MAPPINGS, (
        f"{class_type} is neither a pack node nor an allowed core node"
    )
    return _pack_inputs(class_type)


def _output_types(class_type: str) -> tuple[str, ...]:
    if class_type in CORE_NODES:
        return CORE_NODES[class_type][1]
    return NODE_CLASS_MAPPINGS[class_type].RETURN_TYPES


def _is_link(value) -> bool:
    return (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], str)
        and isinstance(value[1], int)
    )


def _load_pair(ui_file: Path) -> tuple[dict, dict]:
    api_file = WORKFLOWS / "api" / ui_file.name
    assert api_file.is_file(), f"{ui_file.name} has no API twin in workflows/api/"
    return json.loads(ui_file.read_text()), json.loads(api_file.read_text())


def test_every_template_has_an_api_twin_and_the_shipped_ones_are_there():
    ui_names = {p.name for p in UI_FILES}
    api_names = {p.name for p in (WORKFLOWS / "api").glob("*.json")}
    assert ui_names == api_names, "each workflows/*.json needs its twin in workflows/api/"
    assert SHIPPED_TEMPLATES <= ui_names


@pytest.mark.parametrize("ui_file", UI_FILES, ids=lambda p: p.stem)
def test_ui_and_api_have_the_same_nodes(ui_file):
    ui, api = _load_pair(ui_file)
    assert {str(node["id"]): node["type"] for node in ui["nodes"]} == {
        node_id: node["class_type"] for node_id, node in api.items()
    }
    assert ui["last_node_id"] == max(node["id"] for node in ui["nodes"])
    assert all(node["mode"] == 0 for node in ui["nodes"])  # nothing muted or bypassed


@pytest.mark.parametrize("ui_file", UI_FILES, ids=lambda p: p.stem)
def test_ui_links_are_the_api_links(ui_file):
    ui, api = _load_pair(ui_file)
    ui_links = set()
    for link_id, source, source_slot, target, target_slot, link_type in ui["links"]:
        sockets = [
            name for name, is_widget, _ in _inputs(api[str(target)]["class_type"]) if not is_widget
        ]
        ui_links.add((str(target), sockets[target_slot], str(source), source_slot))
        assert link_type == _output_types(api[str(source)]["class_type"])[source_slot]
        target_node = next(node for node in ui["nodes"] if node["id"] == target)
        assert target_node["inputs"][target_slot]["link"] == link_id
    api_links = {
        (node_id, name, value[0], value[1])
        for node_id, node in api.items()
        for name, value in node["inputs"].items()
        if _is_link(value)
    }
    assert ui_links == api_links
    assert ui["last_link_id"] == max(link[0] for link in ui["links"])


@pytest.mark.parametrize("ui_file", UI_FILES, ids=lambda p: p.stem)
def test_ui_widget_values_are_the_api_constants_in_input_order(ui_file):
    ui, api = _load_pair(ui_file)
    for node in ui["nodes"]:
        api_inputs = api[str(node["id"])]["inputs"]
        expected = []
        for name, is_widget, extra in _inputs(node["type"]):
            if not is_widget or _is_link(api_inputs.get(name)):
                continue
            assert name in api_inputs, (
                f"node {node['id']} ({node['type']}) lacks widget {name!r} in the API file"
            )
            expected.append(api_inputs[name])
            if extra is not None:
                expected.append(extra)
        values = list(node["widgets_values"])
        for index, (want, got) in enumerate(zip(expected, values)):
            if want == "seed control":
                assert got in SEED_CONTROL_VALUES
                values[index] = want
        assert values == expected, f"node {node['id']} ({node['type']})"


@pytest.mark.parametrize("ui_file", UI_FILES, ids=lambda p: p.stem)
def test_api_workflow_has_an_output_node_and_bare_model_file_names(ui_file):
    _, api = _load_pair(ui_file)
    outputs = [
        node
        for node in api.values()
        if node["class_type"] in CORE_OUTPUT_NODES
        or getattr(NODE_CLASS_MAPPINGS.get(node["class_type"]), "OUTPUT_NODE", False)
    ]
    assert outputs, "ComfyUI rejects a prompt without an output node (prompt_no_outputs)"
    for node in api.values():
        for value in node["inputs"].values():
            if isinstance(value, str) and value.endswith(MODEL_FILE_SUFFIXES):
                assert "/" not in value and "\\" not in value, (
                    f"{value!r}: use bare model file names"
                )


# --- running the pack's part -------------------------------------------------------------------


def _frames(count: int, name: str) -> torch.Tensor:
    """IMAGE frames; a file whose name says depth gets a grey ramp (white = near), as depth nodes write."""
    if "depth" in name:
        ramp = torch.linspace(0.2, 0.9, SOURCE_HEIGHT)[:, None, None].expand(
            SOURCE_HEIGHT, SOURCE_WIDTH, 3
        )
        return ramp.expand(count, -1, -1, -1).clone()
    return torch.rand(
        count, SOURCE_HEIGHT, SOURCE_WIDTH, 3, generator=torch.Generator().manual_seed(7)
    )


def _image(name: str, api: dict) -> torch.Tensor:
    """Load Image's IMAGE: a panorama file is a 2:1 room, its distance file the room's grey map.

    The map is written as a depth node writes an inverse map (white = near, linear in 1/distance)
    with the near/far of the template's own panorama scene node, so those widgets read it back as
    the room's true distances.
    """
    if "panorama" not in name:
        return _frames(1, name)
    panorama, distance = room_panorama()
    if "distance" not in name:
        return panorama
    scene = next(
        node["inputs"] for node in api.values() if node["class_type"].endswith("FromPanorama")
    )
    assert scene["distance_encoding"] == "inverse", "the stand-in writes inverse distance maps"
    return inverse_distance_image(distance, scene["distance_near"], scene["distance_far"])


def _vae(name: str):
    """Load VAE's object for the file the template names: the Wan2.1 or the SDXL image VAE."""
    if "sdxl" in name:
        return PoolingVAE()
    assert "wan" in name, f"no stand-in for the VAE file {name!r}"
    torch.manual_seed(1)
    return HostVAE(WanVAE(TINY_VAE).eval())  # the Wan2.1 model under ``first_stage_model``


def _run_core_node(class_type: str, inputs: dict, api: dict) -> tuple:
    if class_type == "LoadVideo":
        return (inputs["file"],)
    if class_type == "GetVideoComponents":
        return (_frames(SOURCE_FRAMES, inputs["video"]), None, 16.0)
    if class_type == "LoadImage":
        image = _image(inputs["image"], api)
        return (image, torch.zeros(image.shape[:3]))
    if class_type == "CLIPLoader":
        assert inputs["type"] == "wan"
        return ("clip",)
    if class_type == "CLIPTextEncode":
        return ([[torch.randn(1, PROMPT_TOKENS, TINY_DIT.text_dim), {"pooled_output": None}]],)
    if class_type == "VAELoader":
        return (_vae(inputs["vae_name"]),)
    if class_type in ("PreviewImage", "SaveImage"):
        assert inputs["images"].ndim == 4 and inputs["images"].shape[-1] == 3
        return ()
    if class_type == "CreateVideo":
        assert inputs["images"].ndim == 4 and inputs["images"].shape[-1] == 3
        return (inputs["images"],)
    if class_type == "SaveVideo":
        return ()
    raise AssertionError(f"no stand-in for core node {class_type}")


def _shrunk_worldfm_path(path, template_render_size: int):
    """The template's path K is for its render size; the shrunk WorldFM scene renders smaller."""
    if path.intrinsics is None:
        return path
    intrinsics = path.intrinsics.clone()
    intrinsics[:2] *= RENDER_SIZE / template_render_size
    return replace(path, intrinsics=intrinsics)


def _run_pack_node(class_type: str, inputs: dict, worldfm_render_size: int | None = None):
    node_class = NODE_CLASS_MAPPINGS[class_type]
    inputs = {**inputs, **SHRUNK_SCENE_INPUTS.get(class_type, {})}
    if class_type in WORLDFM_PATH_CONSUMERS and worldfm_render_size is not None:
        inputs["camera_path"] = _shrunk_worldfm_path(inputs["camera_path"], worldfm_render_size)
    result = getattr(node_class(), node_class.FUNCTION)(**inputs)
    outputs = result["result"] if isinstance(result, dict) else result
    assert len(outputs) == len(node_class.RETURN_TYPES)
    return outputs


@pytest.fixture()
def model_folder(tmp_path, monkeypatch, one_torch_thread):
    """The template's bare model file names resolve in the working directory outside ComfyUI."""
    torch.manual_seed(0)
    for name in WORLD_CHECKPOINTS:
        save_dit(CausalWanDiT(TINY_DIT), tmp_path / name)
    save_released_style(tmp_path / WORLDFM_CHECKPOINT)
    save_file(
        {"embeddings": torch.randn(PROMPT_TOKENS, TINY_DIT.text_dim)},
        str(tmp_path / "prompt.safetensors"),
    )
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _run_workflow(api: dict) -> dict[str, tuple[dict, tuple]]:
    """Each node's inputs (links resolved) and outputs, nodes run in topological order."""
    dependencies = {
        node_id: {value[0] for value in node["inputs"].values() if _is_link(value)}
        for node_id, node in api.items()
    }
    worldfm_render_size = next(
        (
            node["inputs"]["render_size"]
            for node in api.values()
            if node["class_type"] == "InSpatioWorldFMSceneFromPanorama"
        ),
        None,
    )
    ran: dict[str, tuple[dict, tuple]] = {}
    with torch.inference_mode():
        for node_id in TopologicalSorter(dependencies).static_order():
            node = api[node_id]
            inputs = {
                name: ran[value[0]][1][value[1]] if _is_link(value) else value
                for name, value in node["inputs"].items()
            }
            if node["class_type"] in NODE_CLASS_MAPPINGS:
                outputs = _run_pack_node(node["class_type"], inputs, worldfm_render_size)
            else:
                outputs = _run_core_node(node["class_type"], inputs, api)
            ran[node_id] = (inputs, outputs)
    return ran


@pytest.mark.parametrize("ui_file", UI_FILES, ids=lambda p: p.stem)
def test_api_workflow_runs_end_to_end_with_tiny_models(ui_file, model_folder):
    _, api = _load_pair(ui_file)
    ran = _run_workflow(api)

    def of(class_type: str) -> list[tuple[dict, tuple]]:
        return [ran[node_id] for node_id, node in api.items() if node["class_type"] == class_type]

    conditions = [outputs[0] for _, outputs in of("InSpatioRenderCondition")]
    worldfm_renders = of("InSpatioWorldFMRender")
    assert conditions or worldfm_renders, "the template renders nothing the test can check"
    for render in conditions:
        assert render.shape[1:] == (MODEL_HEIGHT, MODEL_WIDTH, 3)
    for _, (_, frames) in of("InSpatioWorldSampler"):
        assert frames.shape == conditions[0].shape
        assert torch.isfinite(frames).all()
    for inputs, (anchor_renders, references) in worldfm_renders:
        expected = (inputs["camera_path"].num_frames, RENDER_SIZE, RENDER_SIZE, 3)
        assert anchor_renders.shape == references.shape == expected
        assert float(anchor_renders.max()) > 0  # the room is seen, not an empty render
    image_side = TINY_RELEASED_STYLE.input_size * LATENT_STRIDE
    for inputs, (frames,) in of("InSpatioWorldFMSampler"):
        assert frames.shape == (inputs["camera_path"].num_frames, image_side, image_side, 3)
        assert torch.isfinite(frames).all()
