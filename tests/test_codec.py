"""The shared codec interface (``core/codec.py``): ComfyUI latent space, dispatch, frame policy."""

from __future__ import annotations

import pytest
import torch
from conftest import fixture_cases, require_fixture
from inspatio_nodes.core.codec import (
    PIXEL_RANGE_TOLERANCE,
    WAN21_LATENT_MEAN,
    WAN21_LATENT_STD,
    CodecInputError,
    describe_weights,
    from_comfy_latent,
    load_codec,
    to_comfy_latent,
)
from inspatio_nodes.core.wan.checkpoints import CheckpointError
from inspatio_nodes.core.wan.taehv import TAEHV
from inspatio_nodes.core.wan.vae import WanVAE, WanVAEConfig
from safetensors.torch import load_file

VAE_CASES = fixture_cases("*wan_vae*_io*.safetensors")


def _latents(seed: int = 0) -> torch.Tensor:
    return torch.randn(2, 3, 16, 4, 5, generator=torch.Generator().manual_seed(seed))


def test_raw_and_normalised_latents_round_trip():
    latents = _latents()
    raw = to_comfy_latent(latents)
    assert raw.shape == (2, 16, 3, 4, 5)
    torch.testing.assert_close(from_comfy_latent(raw), latents, atol=1e-6, rtol=0)


def test_raw_latents_follow_comfyui_wan21_process_out():
    latents = _latents(1)
    raw = to_comfy_latent(latents)
    channel = 7
    expected = latents[:, :, channel] * WAN21_LATENT_STD[channel] + WAN21_LATENT_MEAN[channel]
    torch.testing.assert_close(raw[:, channel], expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("case_path", VAE_CASES)
def test_comfyui_process_in_of_the_raw_encoder_mean_gives_the_dit_latents(case_path):
    io = load_file(str(require_fixture(case_path)))
    if "debug.mu_unnormalised" not in io:
        pytest.skip("this fixture set has no unnormalised encoder means")
    tables = {"mean": tuple(io["mean"].tolist()), "std": tuple(io["std"].tolist())}
    normalised = from_comfy_latent(io["debug.mu_unnormalised"], **tables)
    torch.testing.assert_close(normalised, io["latent"], atol=1e-5, rtol=0)


def test_the_codec_is_chosen_by_the_weights():
    vae_weights = WanVAE(WanVAEConfig(base_dim=4)).state_dict()
    taehv_weights = TAEHV().state_dict()
    assert isinstance(load_codec(vae_weights), WanVAE)
    assert isinstance(load_codec(taehv_weights), TAEHV)
    with pytest.raises(CheckpointError, match="DiT"):
        load_codec({"blocks.0.self_attn.q.weight": torch.zeros(1)})


def test_both_codecs_share_the_frame_layout():
    torch.manual_seed(0)
    frames = torch.rand(1, 9, 3, 16, 16) * 2 - 1
    for codec in (WanVAE(WanVAEConfig(base_dim=4)).eval(), TAEHV().eval()):
        latents = codec.encode(frames, codec.new_state())
        assert latents.shape == (1, 3, 16, 2, 2), codec.name
        assert codec.decode(latents, codec.new_state()).shape == frames.shape, codec.name


def test_diffusers_folder_weights_are_named_as_such():
    weights = {
        "decoder.up_blocks.0.resnets.0.conv1.weight": torch.zeros(1),
        "post_quant_conv.weight": torch.zeros(1),
    }
    assert "diffusers" in describe_weights(weights)


def test_a_wrong_frame_count_suggests_the_nearest_valid_counts():
    codec = WanVAE(WanVAEConfig(base_dim=4)).eval()
    with pytest.raises(CodecInputError, match="13 or 17"):
        codec.encode(torch.zeros(1, 14, 3, 16, 16), codec.new_state())


def test_both_codecs_run_in_bfloat16_and_return_float32():
    torch.manual_seed(0)
    frames = torch.rand(1, 5, 3, 16, 16) * 2 - 1
    for codec in (WanVAE(WanVAEConfig(base_dim=4)).eval(), TAEHV().eval()):
        codec = codec.to(torch.bfloat16)
        latents = codec.encode(frames, codec.new_state())
        decoded = codec.decode(latents, codec.new_state())
        assert (latents.dtype, decoded.dtype) == (torch.float32, torch.float32), codec.name
        assert torch.isfinite(decoded).all() and decoded.shape == frames.shape, codec.name


def _tiny_codecs():
    torch.manual_seed(0)
    return (WanVAE(WanVAEConfig(base_dim=4)).eval(), TAEHV().eval())


def test_frames_outside_minus_one_one_are_refused_with_the_conversion_to_use():
    in_range = torch.rand(1, 1, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    for codec in _tiny_codecs():
        for bad_value in (1.5, 255.0, -1 - 2 * PIXEL_RANGE_TOLERANCE):
            frames = in_range.clone()
            frames[..., 0, 0] = bad_value
            with pytest.raises(CodecInputError, match=r"must be in \[-1, 1\].*x \* 2 - 1"):
                codec.encode(frames, codec.new_state())
        # Rounding slack, such as bytes / 127.5 - 1 computed in float32, is accepted.
        rounded = in_range.clone()
        rounded[..., 0, 0] = 1 + PIXEL_RANGE_TOLERANCE / 2
        assert codec.encode(rounded, codec.new_state()).shape[1] == 1, codec.name


def test_a_stream_that_changes_size_midway_is_refused_naming_both_sizes():
    for codec in _tiny_codecs():
        state = codec.new_state()
        codec.encode(torch.zeros(1, 1, 3, 16, 16), state)
        with pytest.raises(CodecInputError, match="started at 16x16 but this chunk is 16x24"):
            codec.encode(torch.zeros(1, 4, 3, 16, 24), state)
        codec.encode(torch.zeros(1, 4, 3, 16, 16), state)  # the stream itself is unharmed

        state = codec.new_state()
        codec.decode(torch.zeros(1, 1, 16, 2, 2), state)
        with pytest.raises(
            CodecInputError, match="latent stream started at 2x2 but this chunk is 3x2"
        ):
            codec.decode(torch.zeros(1, 1, 16, 3, 2), state)
