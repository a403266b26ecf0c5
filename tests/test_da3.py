"""DA3 post-processing on synthetic DA3-shaped outputs with known answers, and the adapter.

The post-processing tests build ``DA3Prediction`` objects by hand (depth [F, h, w], extrinsics
[F, 3, 4] world-to-camera, intrinsics [F, 3, 3], as ``DepthAnything3.inference`` returns them) and
check each official step against an answer computed independently: frame-0 normalisation, the
σ = 2 Gaussian smoothing with reflected borders and re-normalised quaternions, K row scaling and
the cv2-style nearest resize. The adapter tests build a real DA3 network from the installed
``depth-anything-3`` package's own config (``da3-small``) with random weights; they are skipped
when the package is absent.
"""

from __future__ import annotations

import json
import math
import sys

import numpy as np
import pytest
import torch
from inspatio_nodes.core import da3
from inspatio_nodes.core.camera import invert_rigid, pose_from_rotation_translation
from torch import nn

SMALL_MODEL = "da3-small"  # the smallest config the package registers (ViT-S backbone)


def _rotation_y(angle: float) -> torch.Tensor:
    cosine, sine = math.cos(angle), math.sin(angle)
    return torch.tensor(
        [[cosine, 0.0, sine], [0.0, 1.0, 0.0], [-sine, 0.0, cosine]], dtype=torch.float64
    )


def _prediction(camera_to_world: torch.Tensor, size=(56, 28)) -> da3.DA3Prediction:
    """A DA3-shaped prediction for the given camera-to-world poses (extrinsics as [F, 3, 4] w2c)."""
    frames = camera_to_world.shape[0]
    width, height = size
    world_to_camera = invert_rigid(camera_to_world)[:, :3, :].float()
    intrinsics = torch.tensor([[40.0, 0.0, 27.5], [0.0, 41.0, 13.5], [0.0, 0.0, 1.0]])
    depth = torch.arange(frames * height * width, dtype=torch.float32).reshape(
        frames, height, width
    )
    return da3.DA3Prediction(depth + 1.0, world_to_camera, intrinsics.expand(frames, 3, 3).clone())


def _gaussian_reflect(values: np.ndarray, sigma: float) -> np.ndarray:
    """Independent reference: a normalised Gaussian of radius round(4σ), borders mirrored
    (``d c b a | a b c d``), applied along axis 0."""
    radius = int(4 * sigma + 0.5)
    offsets = np.arange(-radius, radius + 1)
    weights = np.exp(-0.5 * (offsets / sigma) ** 2)
    weights /= weights.sum()
    count = values.shape[0]
    result = np.zeros_like(values, dtype=np.float64)
    for index in range(count):
        for offset, weight in zip(offsets, weights):
            source = index + offset
            while source < 0 or source >= count:  # reflect about the half-pixel border
                source = -source - 1 if source < 0 else 2 * count - source - 1
            result[index] += weight * values[source]
    return result


# --- frame-0 normalisation ---------------------------------------------------------------------


def test_a_static_camera_anywhere_becomes_the_identity():
    somewhere = pose_from_rotation_translation(
        _rotation_y(0.7), torch.tensor([3.0, -1.0, 2.0], dtype=torch.float64)
    )
    geometry = da3.postprocess_da3(_prediction(somewhere.expand(5, 4, 4)), (112, 56))
    torch.testing.assert_close(
        geometry.world_to_camera, torch.eye(4).expand(5, 4, 4), atol=1e-5, rtol=0
    )


def test_poses_are_relative_to_the_first_frame_whatever_the_world_frame():
    motion = torch.stack(
        [
            pose_from_rotation_translation(
                _rotation_y(0.0), torch.tensor([0.1 * index, 0.0, 0.0], dtype=torch.float64)
            )
            for index in range(6)
        ]
    )
    world_change = pose_from_rotation_translation(
        _rotation_y(-1.1), torch.tensor([5.0, 2.0, -3.0], dtype=torch.float64)
    )
    direct = da3.postprocess_da3(_prediction(motion), (56, 28))
    moved = da3.postprocess_da3(_prediction(world_change @ motion), (56, 28))
    torch.testing.assert_close(moved.world_to_camera, direct.world_to_camera, atol=2e-5, rtol=0)


# --- smoothing -----------------------------------------------------------------------------


def test_translation_is_gaussian_smoothed_with_reflected_borders():
    positions = np.array([0.0, 0.1, 0.5, 0.4, 1.2, 1.0, 1.1, 2.0, 1.7, 2.5, 3.0, 2.8])
    camera_to_world = torch.stack(
        [
            pose_from_rotation_translation(
                torch.eye(3, dtype=torch.float64),
                torch.tensor([x, 0.5 * x, -x], dtype=torch.float64),
            )
            for x in positions
        ]
    )
    geometry = da3.postprocess_da3(_prediction(camera_to_world), (56, 28))
    centres = invert_rigid(geometry.world_to_camera.double())[:, :3, 3]
    smoothed = _gaussian_reflect(positions, da3.POSE_SMOOTHING_SIGMA)
    expected = np.stack([smoothed, 0.5 * smoothed, -smoothed], axis=1)
    np.testing.assert_allclose(centres.numpy(), expected, atol=2e-6)


def test_rotation_quaternions_are_smoothed_then_renormalised():
    angles = np.array([0.0, 0.3, -0.1, 0.4, 0.2, 0.6, 0.1, 0.5])
    camera_to_world = torch.stack(
        [
            pose_from_rotation_translation(_rotation_y(a), torch.zeros(3, dtype=torch.float64))
            for a in angles
        ]
    )
    geometry = da3.postprocess_da3(_prediction(camera_to_world), (56, 28))
    rotations = invert_rigid(geometry.world_to_camera.double())[:, :3, :3]
    # About one axis the quaternion is (0, sin(a/2), 0, cos(a/2)); smoothing the two non-zero
    # components and re-normalising gives the angle 2·atan2(smoothed sin, smoothed cos).
    sine = _gaussian_reflect(np.sin(angles / 2), da3.POSE_SMOOTHING_SIGMA)
    cosine = _gaussian_reflect(np.cos(angles / 2), da3.POSE_SMOOTHING_SIGMA)
    expected = torch.stack([_rotation_y(float(a)) for a in 2 * np.arctan2(sine, cosine)])
    torch.testing.assert_close(rotations, expected, atol=2e-6, rtol=0)
    identity = torch.eye(3, dtype=torch.float64).expand_as(rotations)
    torch.testing.assert_close(rotations @ rotations.transpose(1, 2), identity, atol=1e-6, rtol=0)


def test_non_positive_smoothing_sigma_is_refused():
    with pytest.raises(da3.DA3Error, match="sigma"):
        da3.postprocess_da3(_prediction(torch.eye(4, dtype=torch.float64)[None]), (56, 28), 0.0)


# --- intrinsics and depth ------------------------------------------------------------------


def test_intrinsics_rows_scale_to_the_target_size():
    prediction = _prediction(torch.eye(4, dtype=torch.float64).expand(2, 4, 4), size=(504, 280))
    geometry = da3.postprocess_da3(prediction, (832, 480))
    scale_x, scale_y = 832 / 504, 480 / 280
    expected = torch.tensor(
        [
            [40.0 * scale_x, 0.0, 27.5 * scale_x],
            [0.0, 41.0 * scale_y, 13.5 * scale_y],
            [0.0, 0.0, 1.0],
        ]
    )
    torch.testing.assert_close(geometry.intrinsics, expected.expand(2, 3, 3), atol=1e-4, rtol=1e-6)


def test_depth_is_nearest_resized_like_cv2():
    depth = torch.arange(2 * 3 * 5, dtype=torch.float32).reshape(2, 3, 5)
    resized = da3.nearest_resize(depth, 6, 8)
    rows = [0, 0, 1, 1, 2, 2]  # floor(y · 3/6)
    columns = [0, 0, 1, 1, 2, 3, 3, 4]  # floor(x · 5/8)
    torch.testing.assert_close(resized, depth[:, rows][:, :, columns])


def test_depth_is_stretched_to_the_target_size_whatever_the_aspect():
    geometry = da3.postprocess_da3(_prediction(torch.eye(4, dtype=torch.float64)[None]), (64, 48))
    assert geometry.depth.shape == (1, 48, 64)


# --- shapes -------------------------------------------------------------------------------


def test_prediction_with_mismatched_extrinsics_is_refused():
    with pytest.raises(da3.DA3Error, match="extrinsics"):
        da3.DA3Prediction(torch.ones(3, 4, 5), torch.zeros(2, 3, 4), torch.eye(3).expand(3, 3, 3))


# --- adapter: the package's own network ----------------------------------------------------


def test_missing_package_is_reported_with_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "depth_anything_3", None)
    monkeypatch.setitem(sys.modules, "depth_anything_3.cfg", None)
    with pytest.raises(da3.DA3Error, match="pip install --no-deps depth-anything-3"):
        da3.build_da3(SMALL_MODEL)


def test_missing_package_message_also_says_where_the_weights_go(monkeypatch):
    monkeypatch.setitem(sys.modules, "depth_anything_3", None)
    monkeypatch.setitem(sys.modules, "depth_anything_3.cfg", None)
    with pytest.raises(
        da3.DA3Error,
        match="DA3NESTED-GIANT-LARGE/ with its config.json and model.safetensors under "
        "ComfyUI/models/inspatio/",
    ):
        da3.build_da3(SMALL_MODEL)


def test_model_folder_without_config_names_the_files(tmp_path):
    with pytest.raises(da3.DA3Error, match="config.json and model.safetensors"):
        da3.load_da3(tmp_path)


@pytest.fixture(scope="module")
def small_model_folder(tmp_path_factory):
    """A DA3 folder as Hugging Face publishes it: config.json + model.safetensors written by
    ``save_model`` on the wrapper (keys prefixed ``model.``, tied tensors stored once)."""
    pytest.importorskip("depth_anything_3.cfg")
    from safetensors.torch import save_model

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("DA3-SMALL")
    (folder / da3.CONFIG_FILE).write_text(json.dumps({"model_name": SMALL_MODEL}))
    wrapper = nn.Module()
    wrapper.model = da3.build_da3(SMALL_MODEL)
    save_model(wrapper, str(folder / da3.WEIGHTS_FILE))
    return folder, wrapper.model


def test_loaded_network_has_the_saved_weights(small_model_folder):
    folder, original = small_model_folder
    loaded = da3.load_da3(folder)
    for name, tensor in original.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], tensor, rtol=0, atol=0, msg=name)


def test_weights_of_another_model_are_refused_with_the_key_counts(small_model_folder, tmp_path):
    pytest.importorskip("depth_anything_3.cfg")
    from safetensors.torch import save_file

    folder, _ = small_model_folder
    (tmp_path / da3.CONFIG_FILE).write_text((folder / da3.CONFIG_FILE).read_text())
    save_file({"model.unrelated.weight": torch.zeros(2)}, str(tmp_path / da3.WEIGHTS_FILE))
    with pytest.raises(da3.DA3Error, match="missing keys.*1 unexpected"):
        da3.load_da3(tmp_path)


@pytest.fixture(scope="module")
def tiny_nested_network():
    """The nested (any-view + metric) network class of DA3NESTED-GIANT-LARGE, built from the
    package's own configs shrunk to the ViT-S backbone: the metric branch of da3metric-large with
    its DPT head narrowed to the ViT-S width."""
    pytest.importorskip("depth_anything_3.cfg")
    from depth_anything_3.cfg import load_config
    from depth_anything_3.model.da3 import NestedDepthAnything3Net
    from depth_anything_3.registry import MODEL_REGISTRY
    from omegaconf import OmegaConf

    torch.manual_seed(0)
    small_metric = {
        "net": {"name": "vits", "out_layers": [2, 5, 8, 11]},
        "head": {"dim_in": 384, "features": 64, "out_channels": [48, 96, 192, 384]},
    }
    metric = OmegaConf.merge(load_config(MODEL_REGISTRY["da3metric-large"]), small_metric)
    anyview = load_config(MODEL_REGISTRY[SMALL_MODEL])
    return NestedDepthAnything3Net(anyview=anyview, metric=metric).eval()


def test_nested_network_prediction_has_the_inference_shapes(tiny_nested_network):
    prediction = da3.run_da3(tiny_nested_network, torch.rand(2, 40, 70, 3), process_res=56)
    assert prediction.depth.shape == (2, 28, 56)
    assert prediction.world_to_camera.shape == (2, 3, 4)
    assert prediction.intrinsics.shape == (2, 3, 3)
    assert prediction.size == (56, 28)
    assert torch.isfinite(prediction.depth).all() and (prediction.depth > 0).all()


def test_float32_metric_alignment_is_undone_after_the_call(tiny_nested_network):
    import depth_anything_3.model.da3 as nested

    original = nested.least_squares_scale_scalar
    da3.run_da3(tiny_nested_network, torch.rand(1, 28, 28, 3), process_res=28)
    assert nested.least_squares_scale_scalar is original


class _RandomDepthNetwork(nn.Module):
    """Stands in for the nested model's random quantile sampling: its output is drawn from the
    global generator, in the output layout of the DA3 networks."""

    def __init__(self):
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(()))

    def forward(self, images, *_):
        _, frames, _, height, width = images.shape
        pose = torch.eye(4)[:3].expand(1, frames, 3, 4)
        intrinsics = torch.eye(3).expand(1, frames, 3, 3)
        return {
            "depth": torch.rand(1, frames, height, width),
            "extrinsics": pose,
            "intrinsics": intrinsics,
        }


def test_repeated_runs_agree_and_leave_the_callers_random_state_alone():
    pytest.importorskip("depth_anything_3.model.da3")  # run_da3 patches its alignment
    frame = torch.rand(1, 28, 42, 3)
    state = torch.get_rng_state()
    first = da3.run_da3(_RandomDepthNetwork(), frame, process_res=42)
    second = da3.run_da3(_RandomDepthNetwork(), frame, process_res=42)
    assert torch.equal(first.depth, second.depth)
    assert torch.equal(torch.get_rng_state(), state)
