"""The WorldFM 1/2-step sampler, preprocessing and codec boundary (``core/worldfm/sampler.py``)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import fixture_cases, load_json, require_fixture, sibling
from inspatio_nodes.core.camera import CameraError
from inspatio_nodes.core.point_render import render_points_hard
from inspatio_nodes.core.worldfm.bank import image_scene, panorama_scene, reference_image
from inspatio_nodes.core.worldfm.model import WorldFMConfig, WorldFMModel, load_worldfm
from inspatio_nodes.core.worldfm.sampler import (
    FrameNoise,
    ImageCodec,
    WorldFMSamplerError,
    alphas_cumprod,
    decode_to_u8,
    encode_reference,
    frame_noise,
    generate_frame,
    iter_frames,
    preprocess_reference,
    preprocess_u8,
    sample_latent,
    signal_and_noise_scales,
)
from PIL import Image as PILImage
from safetensors.torch import load_file

MODEL_CASES = fixture_cases("*worldfm_model*_io*.safetensors")
LATENT_STRIDE = 8


class ConstantVelocity(torch.nn.Module):
    """Stands in for the frame model: returns a fixed 8-channel output whatever the input."""

    def __init__(self, velocity: torch.Tensor) -> None:
        super().__init__()
        self.velocity = velocity
        self.timesteps: list[int] = []

    def forward(self, noisy, timesteps, render_latent, reference_latent):
        self.timesteps.append(int(timesteps[0]))
        return torch.cat([self.velocity, torch.full_like(self.velocity, 1e6)], dim=1)


def pooling_codec() -> ImageCodec:
    """A deterministic stand-in VAE: 8× average pooling to 4 channels and nearest upsampling."""

    def encode(pixels):
        pooled = F.avg_pool2d(pixels, LATENT_STRIDE)
        return torch.cat([pooled, pooled.mean(1, keepdim=True)], dim=1)

    def decode(latents):
        return F.interpolate(latents[:, :3], scale_factor=LATENT_STRIDE, mode="nearest").tanh()

    return ImageCodec(encode=encode, decode=decode)


def _model_case(case_path):
    io = load_file(str(require_fixture(case_path)))
    config = load_json(require_fixture(sibling(case_path, "io", "config", ".json")))
    model = load_worldfm(
        require_fixture(sibling(case_path, "io", "weights")),
        num_heads=config["model_constructor"]["num_heads"],
    )
    return io, config, model


@pytest.mark.parametrize("case_path", MODEL_CASES)
def test_schedule_and_scales_match_the_official_constants(case_path):
    io, config, _ = _model_case(case_path)
    assert torch.equal(alphas_cumprod(), io["schedule.alphas_cumprod"])
    constants = config["sampler_constants"]
    for timestep in (999, 200):
        signal, noise = signal_and_noise_scales(timestep)
        assert signal.dtype == torch.float32
        assert signal.item() == float.fromhex(constants[f"a{timestep}"]["float32_hex"])
        assert noise.item() == float.fromhex(constants[f"s{timestep}"]["float32_hex"])


@pytest.mark.parametrize("case_path", MODEL_CASES)
def test_one_and_two_step_samplers_replay_the_official_run(case_path):
    io, _, model = _model_case(case_path)
    one = sample_latent(
        model, io["inputs.cond1"], io["inputs.cond2"], FrameNoise(io["inputs.z"]), steps=1
    )
    torch.testing.assert_close(one, io["sampler1.samples"], atol=1e-5, rtol=0)
    noise = FrameNoise(io["inputs.z"], renoise=(io["sampler2.renoise"],))
    two = sample_latent(model, io["inputs.cond1"], io["inputs.cond2"], noise, steps=2)
    torch.testing.assert_close(two, io["sampler2.samples"], atol=1e-5, rtol=0)


class RecordedOutputs(torch.nn.Module):
    """Replays recorded model outputs in order and records the inputs it was called with."""

    def __init__(self, outputs: list[torch.Tensor]) -> None:
        super().__init__()
        self.outputs = list(outputs)
        self.inputs: list[torch.Tensor] = []

    def forward(self, noisy, timesteps, render_latent, reference_latent):
        self.inputs.append(noisy)
        return self.outputs.pop(0)


@pytest.mark.parametrize("case_path", MODEL_CASES)
def test_sampler_arithmetic_replays_the_official_float32_run_bit_exactly(case_path):
    io, _, _ = _model_case(case_path)
    replay = RecordedOutputs([io["sampler2.model_out1"], io["sampler2.model_out2"]])
    noise = FrameNoise(io["inputs.z"], renoise=(io["sampler2.renoise"],))
    samples = sample_latent(replay, io["inputs.cond1"], io["inputs.cond2"], noise, steps=2)
    assert torch.equal(replay.inputs[1], io["sampler2.noisy"])
    assert torch.equal(samples, io["sampler2.samples"])
    one_step = RecordedOutputs([io["sampler1.model_out"]])
    samples = sample_latent(
        one_step, io["inputs.cond1"], io["inputs.cond2"], FrameNoise(io["inputs.z"]), steps=1
    )
    assert torch.equal(samples, io["sampler1.samples"])
    assert torch.equal(samples, io["sampler2.pred_x0"])


@pytest.mark.parametrize("case_path", MODEL_CASES)
def test_preprocessing_matches_the_official_render_path(case_path):
    io, _, _ = _model_case(case_path)
    expected = io["preprocess.out"]
    out = preprocess_u8(io["preprocess.in_u8"], expected.shape[-2], expected.shape[-1])
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)


def test_one_step_is_the_v_prediction_formula_at_999():
    generator = torch.Generator().manual_seed(0)
    z, velocity = torch.randn(2, 1, 4, 4, 4, generator=generator)
    model = ConstantVelocity(velocity)
    out = sample_latent(model, z, z, FrameNoise(z), steps=1)
    a, s = signal_and_noise_scales(999)
    assert torch.equal(out, a * z - s * velocity)
    assert model.timesteps == [999]


def test_two_steps_renoise_to_200_and_recover_the_clean_latent_of_a_true_velocity():
    generator = torch.Generator().manual_seed(1)
    z, clean, epsilon, renoise = torch.randn(4, 1, 4, 4, 4, generator=generator)
    a999, s999 = signal_and_noise_scales(999)
    a200, s200 = signal_and_noise_scales(200)

    class TrueVelocity(ConstantVelocity):
        def forward(self, noisy, timesteps, render_latent, reference_latent):
            self.timesteps.append(int(timesteps[0]))
            if self.timesteps[-1] == 999:
                return torch.cat([self.velocity] * 2, dim=1)
            # At t=200 return v = a·ε − s·x0 for the input's own decomposition into x0 and ε.
            first_clean = a999 * z - s999 * self.velocity
            assert torch.allclose(noisy, a200 * first_clean + s200 * renoise)
            true_velocity = a200 * renoise - s200 * clean
            return torch.cat([true_velocity] * 2, dim=1)

    velocity = a999 * epsilon - s999 * clean
    model = TrueVelocity(velocity)
    out = sample_latent(model, z, z, FrameNoise(z, renoise=(renoise,)), steps=2)
    first_clean = a999 * z - s999 * velocity
    noisy = a200 * first_clean + s200 * renoise
    assert torch.equal(out, a200 * noisy - s200 * (a200 * renoise - s200 * clean))
    assert model.timesteps == [999, 200]


def test_frames_are_reproducible_per_seed_and_regenerable_alone():
    config = WorldFMConfig(
        depth=1, hidden_size=16, num_heads=2, mlp_hidden=32, input_size=4, pe_interpolation=1 / 16
    )
    model = WorldFMModel(config).eval()
    codec = pooling_codec()
    size = config.input_size * LATENT_STRIDE
    renders = torch.randint(
        0, 256, (3, size, size, 3), generator=torch.Generator().manual_seed(2), dtype=torch.uint8
    )
    reference = torch.randn(
        1, 4, config.input_size, config.input_size, generator=torch.Generator().manual_seed(3)
    )
    sequence = [
        generate_frame(model, codec, renders[i], reference, seed=7, frame_index=i) for i in range(3)
    ]
    alone = generate_frame(model, codec, renders[2], reference, seed=7, frame_index=2)
    assert torch.equal(alone, sequence[2])
    other_seed = generate_frame(model, codec, renders[2], reference, seed=8, frame_index=2)
    assert not torch.equal(other_seed, sequence[2])
    assert not torch.equal(
        frame_noise(7, 0, (1, 4, 4, 4), 2).initial, frame_noise(7, 1, (1, 4, 4, 4), 2).initial
    )
    assert sequence[0].shape == (1, size, size, 3) and sequence[0].dtype == torch.uint8


def test_decoded_pixels_are_offset_by_128_and_truncated():
    codec = ImageCodec(encode=lambda x: x, decode=lambda latent: latent, scale=0.5)
    values = (
        torch.tensor([-1.0, -0.999, 0.0, 0.5, 0.99, 1.0]).reshape(1, 1, 2, 3).expand(1, 3, 2, 3)
    )
    pixels = decode_to_u8(codec, values * codec.scale)
    assert pixels[0, ..., 0].flatten().tolist() == [0, 0, 128, 191, 254, 255]


def test_only_the_distilled_step_counts_are_accepted():
    z = torch.zeros(1, 4, 2, 2)
    with pytest.raises(WorldFMSamplerError, match="steps must be one of"):
        sample_latent(ConstantVelocity(z), z, z, FrameNoise(z), steps=4)
    with pytest.raises(WorldFMSamplerError, match="re-noising"):
        sample_latent(ConstantVelocity(z), z, z, FrameNoise(z), steps=2)


def _sphere_panorama(height: int = 16, radius: float = 4.0):
    rows = torch.arange(height)[:, None].expand(height, 2 * height)
    columns = torch.arange(2 * height)[None].expand(height, 2 * height)
    panorama = torch.stack([columns * 8 % 256, rows * 16 % 256, (rows + columns) % 256], -1)
    return panorama.to(torch.uint8), torch.full((height, 2 * height), radius)


def _yaw_pose(yaw_degrees: float) -> torch.Tensor:
    yaw = math.radians(yaw_degrees)
    pose = torch.eye(4, dtype=torch.float64)
    pose[0, 0], pose[0, 2], pose[2, 0], pose[2, 2] = (
        math.cos(yaw),
        -math.sin(yaw),
        math.sin(yaw),
        math.cos(yaw),
    )
    return pose


def test_streamed_frames_equal_frames_generated_one_by_one():
    config = WorldFMConfig(
        depth=1, hidden_size=16, num_heads=2, mlp_hidden=32, input_size=4, pe_interpolation=1 / 16
    )
    model = WorldFMModel(config).eval()
    size = config.input_size * LATENT_STRIDE
    panorama, distance = _sphere_panorama()
    scene = panorama_scene(panorama, distance, render_size=size, crop_size=size, focal=size / 2)
    intrinsics = torch.tensor(
        [[size / 2, 0, size / 2], [0, size / 2, size / 2], [0, 0, 1]], dtype=torch.float64
    )
    poses = torch.stack([_yaw_pose(angle) for angle in (0.0, 10.0, 95.0)])
    codec = pooling_codec()
    streamed = list(iter_frames(model, codec, scene, intrinsics, poses, seed=5, steps=2))
    assert [index for index, _, _ in streamed] == [0, 1, 2]
    index, frame, chosen = streamed[2]
    render, _ = render_points_hard(scene.cloud, intrinsics, poses[2], size, size)
    reference = encode_reference(codec, reference_image(scene.bank, chosen.best, size), size)
    alone = generate_frame(model, codec, render[0], reference, seed=5, frame_index=index)
    assert torch.equal(alone, frame)


def test_a_single_image_scene_always_uses_the_image_as_reference():
    size = 16
    image = torch.randint(
        0, 256, (size, size, 3), generator=torch.Generator().manual_seed(4), dtype=torch.uint8
    )
    depth = torch.full((size, size), 2.0)
    intrinsics = torch.tensor(
        [[size, 0, size / 2], [0, size, size / 2], [0, 0, 1]], dtype=torch.float64
    )
    scene = image_scene(
        image, depth, intrinsics, torch.eye(4, dtype=torch.float64), render_size=size
    )
    config = WorldFMConfig(
        depth=1, hidden_size=16, num_heads=2, mlp_hidden=32, input_size=2, pe_interpolation=1 / 32
    )
    poses = torch.stack([_yaw_pose(angle) for angle in (0.0, 5.0)])
    frames = list(
        iter_frames(
            WorldFMModel(config).eval(), pooling_codec(), scene, intrinsics, poses, seed=0, steps=1
        )
    )
    assert [chosen.best for _, _, chosen in frames] == [0, 0]


def test_target_cameras_are_checked_before_any_work():
    panorama, distance = _sphere_panorama()
    scene = panorama_scene(panorama, distance, render_size=16, crop_size=16, focal=8.0)
    config = WorldFMConfig(
        depth=1, hidden_size=16, num_heads=2, mlp_hidden=32, input_size=2, pe_interpolation=1 / 32
    )
    intrinsics = torch.tensor([[8.0, 0, 8], [0, 8, 8], [0, 0, 1]], dtype=torch.float64)
    scaled_pose = torch.diag(torch.tensor([2.0, 2.0, 2.0, 1.0], dtype=torch.float64))[None]
    frames = iter_frames(
        WorldFMModel(config), pooling_codec(), scene, intrinsics, scaled_pose, seed=0, steps=1
    )
    with pytest.raises(CameraError, match="target world_to_camera"):
        next(frames)


def test_reference_preprocessing_uses_pil_bicubic_and_rounded_centre_crop():
    generator = torch.Generator().manual_seed(6)
    image = torch.randint(0, 256, (40, 59, 3), generator=generator, dtype=torch.uint8)
    out = preprocess_reference(image, 32, 32)
    # 40×59 -> 32×47; torchvision rounds the crop offset (47 - 32) / 2 = 7.5 to 8.
    resized = PILImage.fromarray(image.numpy()).resize((47, 32), PILImage.BICUBIC)
    expected = torch.from_numpy(np.asarray(resized)[:, 8:40].copy()).permute(2, 0, 1) / 255.0
    torch.testing.assert_close(out, (expected - 0.5) / 0.5, atol=0, rtol=0)
    same_size = torch.randint(0, 256, (8, 8, 3), generator=generator, dtype=torch.uint8)
    unchanged = (same_size.permute(2, 0, 1).to(torch.float32) / 255.0 - 0.5) / 0.5
    assert torch.equal(preprocess_reference(same_size, 8, 8), unchanged)
