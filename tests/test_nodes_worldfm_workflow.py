"""The WorldFM template (``workflows/api/worldfm_panorama_to_video.json``) runs end to end.

The API twin is executed in topological order: the pack's nodes for real, with a tiny random
frame model saved as the release saves it (a pickled ``{"state_dict": ...}`` with the unused
square ``pos_embed``, 72-wide heads) under the template's bare checkpoint name, and a smaller
reference bank (the one change to the template, as the other workflow tests shrink the model
resolution); core
nodes replaced by what they return: Load Image a synthetic 2:1 room panorama and its grey
inverse-distance map, Load VAE a pooling stand-in with ComfyUI's ``encode`` / ``decode``
contract. That the UI file and this twin agree is checked by ``tests/test_workflows.py``.
"""

from __future__ import annotations

import json
from graphlib import TopologicalSorter
from pathlib import Path

import torch
from inspatio_nodes.core.worldfm.model import WorldFMConfig, WorldFMModel
from inspatio_nodes.nodes import NODE_CLASS_MAPPINGS
from test_nodes_worldfm import (
    REFERENCE_FOCAL,
    REFERENCE_SIZE,
    RENDER_SIZE,
    PoolingVAE,
    room_panorama,
)

WORKFLOW = (
    Path(__file__).resolve().parents[1] / "workflows" / "api" / "worldfm_panorama_to_video.json"
)
LATENT_STRIDE = 8
PIXART_HEAD_WIDTH = 72  # what the loader assumes when a file does not record its head count
TINY_RELEASED_STYLE = WorldFMConfig.for_latent_size(
    4, depth=1, hidden_size=2 * PIXART_HEAD_WIDTH, num_heads=2, mlp_hidden=4 * PIXART_HEAD_WIDTH
)


def _save_released_style(path: Path) -> None:
    torch.manual_seed(0)
    state = WorldFMModel(TINY_RELEASED_STYLE).state_dict()
    config = TINY_RELEASED_STYLE
    # The constructor's square table: the only record of the latent size in a released file.
    state["pos_embed"] = torch.zeros(1, config.base_size**2, config.hidden_size)
    torch.save({"state_dict": state}, path)


def _is_link(value) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str)


def _inverse_distance_image(distance, near: float, far: float):
    """The grey IMAGE a depth node writes for ``distance``: 1 at near, 0 at far, linear in 1/d."""
    inverse = (1.0 / distance - 1.0 / far) / (1.0 / near - 1.0 / far)
    return inverse[..., None].expand(-1, -1, -1, 3)


def _core_node(class_type: str, inputs: dict, scene_inputs: dict) -> tuple:
    if class_type == "LoadImage":
        panorama, distance = room_panorama()
        if "distance" in inputs["image"]:
            near, far = scene_inputs["distance_near"], scene_inputs["distance_far"]
            return (_inverse_distance_image(distance, near, far), distance)
        return (panorama, torch.zeros(panorama.shape[:3]))
    if class_type == "VAELoader":
        assert "sdxl" in inputs["vae_name"]
        return (PoolingVAE(),)
    if class_type == "PreviewImage":
        assert inputs["images"].ndim == 4 and inputs["images"].shape[-1] == 3
        return ()
    if class_type == "CreateVideo":
        return (inputs["images"],)
    if class_type == "SaveVideo":
        return ()
    raise AssertionError(f"no stand-in for core node {class_type}")


def test_worldfm_template_runs_from_panorama_to_frames(tmp_path, monkeypatch):
    api = json.loads(WORKFLOW.read_text())
    loader = next(node for node in api.values() if node["class_type"].endswith("ModelLoader"))
    _save_released_style(tmp_path / loader["inputs"]["checkpoint"])
    monkeypatch.chdir(tmp_path)  # bare file names resolve in the working directory outside ComfyUI
    scene_inputs = next(
        node["inputs"] for node in api.values() if node["class_type"].endswith("FromPanorama")
    )
    dependencies = {
        node_id: {value[0] for value in node["inputs"].values() if _is_link(value)}
        for node_id, node in api.items()
    }
    results: dict[str, tuple] = {}
    with torch.inference_mode():
        for node_id in TopologicalSorter(dependencies).static_order():
            node = api[node_id]
            inputs = {
                name: results[value[0]][value[1]] if _is_link(value) else value
                for name, value in node["inputs"].items()
            }
            if node["class_type"] not in NODE_CLASS_MAPPINGS:
                results[node_id] = _core_node(node["class_type"], inputs, scene_inputs)
                continue
            if node["class_type"].endswith("FromPanorama"):
                inputs |= {
                    "render_size": RENDER_SIZE,
                    "reference_size": REFERENCE_SIZE,
                    "reference_focal": REFERENCE_FOCAL,
                }
            node_class = NODE_CLASS_MAPPINGS[node["class_type"]]
            results[node_id] = getattr(node_class(), node_class.FUNCTION)(**inputs)

    path_frames = next(
        results[node_id][1]
        for node_id, node in api.items()
        if node["class_type"] == "InSpatioCameraKeyframes"
    )
    (renders, references), (frames,) = (
        next(results[i] for i, node in api.items() if node["class_type"] == class_type)
        for class_type in ("InSpatioWorldFMRender", "InSpatioWorldFMSampler")
    )
    assert renders.shape == references.shape == (path_frames, RENDER_SIZE, RENDER_SIZE, 3)
    image_side = TINY_RELEASED_STYLE.input_size * LATENT_STRIDE
    assert frames.shape == (path_frames, image_side, image_side, 3)
    assert torch.isfinite(frames).all() and float(renders.max()) > 0
