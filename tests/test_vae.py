"""The streaming Wan2.1 VAE (``core/wan/vae.py``): parity, streaming, loading and bad input."""

from __future__ import annotations

import pytest
import torch
from conftest import fixture_cases, require_fixture, sibling
from einops import rearrange
from inspatio_nodes.core.codec import FRAMES_PER_LATENT, CodecInputError
from inspatio_nodes.core.wan.checkpoints import CheckpointError
from inspatio_nodes.core.wan.taehv import TAEHV
from inspatio_nodes.core.wan.vae import WanVAE, WanVAEConfig, load_wan_vae
from safetensors.torch import load_file, save_file

VAE_CASES = fixture_cases("*wan_vae*_io*.safetensors")
ATOL = 1e-4  # fixtures/README.md §5: a float64 run differs by at most 2.5e-6


def _fixture_vae(case_path):
    io = load_file(str(require_fixture(case_path)))
    weights_path = require_fixture(sibling(case_path, "io", "weights"))
    vae = load_wan_vae(
        weights_path, latent_mean=tuple(io["mean"].tolist()), latent_std=tuple(io["std"].tolist())
    )
    return vae, io


def _tiny_vae(seed: int = 0, base_dim: int = 4) -> WanVAE:
    torch.manual_seed(seed)
    vae = WanVAE(WanVAEConfig(base_dim=base_dim)).eval()
    with torch.no_grad():
        for name, parameter in vae.named_parameters():
            if name.endswith("gamma"):
                parameter.add_(0.1 * torch.randn_like(parameter))
    return vae


def _video(frames: int, height: int = 16, width: int = 24, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(1, frames, 3, height, width, generator=generator) * 2 - 1


@pytest.mark.parametrize("case_path", VAE_CASES)
def test_encode_matches_the_official_wrapper_which_drops_frames_after_the_last_full_group(
    case_path,
):
    vae, io = _fixture_vae(case_path)
    frames = rearrange(io["video"], "b c t h w -> b t c h w")
    # fixtures/README.md §5: upstream silently drops the frames after the last full group of 4;
    # our encode refuses such lengths, so the test trims them as upstream does.
    usable = 1 + FRAMES_PER_LATENT * ((frames.shape[1] - 1) // FRAMES_PER_LATENT)
    frames = frames[:, :usable]
    latents = vae.encode(frames, vae.new_state())
    assert latents.shape == io["latent"].shape
    torch.testing.assert_close(latents, io["latent"], atol=ATOL, rtol=0)


@pytest.mark.parametrize("case_path", VAE_CASES)
@pytest.mark.parametrize(
    "latent_name, decoded_name", [("latent", "decoded"), ("latent_long", "decoded_long")]
)
def test_decode_matches_the_official_wrapper_including_the_upsample_cache_quirk(
    case_path, latent_name, decoded_name
):
    vae, io = _fixture_vae(case_path)
    frames = vae.decode(io[latent_name], vae.new_state())
    assert frames.shape == io[decoded_name].shape
    torch.testing.assert_close(frames, io[decoded_name], atol=ATOL, rtol=0)


def test_chunked_encode_is_bit_identical_to_the_whole_encode():
    vae = _tiny_vae()
    video = _video(13)
    whole = vae.encode(video, vae.new_state())
    state = vae.new_state()
    streamed = [
        vae.encode(video[:, :5], state),
        vae.encode(video[:, 5:9], state),
        vae.encode(video[:, 9:], state),
    ]
    assert [piece.shape[1] for piece in streamed] == [2, 1, 1]
    assert torch.equal(torch.cat(streamed, dim=1), whole)


def test_block_by_block_decode_is_bit_identical_to_the_whole_decode():
    vae = _tiny_vae()
    # 5 latents: the upsample memory quirk first matters at the 4th (fixtures/README.md §5).
    latents = torch.randn(1, 5, 16, 2, 3, generator=torch.Generator().manual_seed(3))
    whole = vae.decode(latents, vae.new_state())
    assert whole.shape[1] == 1 + 4 * (latents.shape[1] - 1)
    state = vae.new_state()
    per_latent = [
        vae.decode(latents[:, index : index + 1], state) for index in range(latents.shape[1])
    ]
    assert [piece.shape[1] for piece in per_latent] == [1] + [4] * (latents.shape[1] - 1)
    assert torch.equal(torch.cat(per_latent, dim=1), whole)
    state = vae.new_state()
    uneven = torch.cat(
        [vae.decode(latents[:, :2], state), vae.decode(latents[:, 2:], state)], dim=1
    )
    assert torch.equal(uneven, whole)


def test_batched_stream_equals_each_video_alone():
    vae = _tiny_vae()
    videos = torch.cat([_video(5, seed=4), _video(5, seed=5)])
    together = vae.encode(videos, vae.new_state())
    alone = torch.cat(
        [vae.encode(videos[index : index + 1], vae.new_state()) for index in range(2)]
    )
    torch.testing.assert_close(together, alone, atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    "config",
    [
        WanVAEConfig(base_dim=6),
        WanVAEConfig(
            base_dim=4, dim_mult=(1, 2, 2), res_blocks=1, temporal_downsample=(True, False)
        ),
    ],
    ids=["released-layout", "other-layout"],
)
def test_config_is_inferred_from_weight_shapes(config):
    assert load_wan_vae(WanVAE(config).state_dict()).config == config


@pytest.mark.parametrize("case_path", VAE_CASES)
def test_every_accepted_file_layout_loads_the_same_model(case_path, tmp_path):
    vae, _ = _fixture_vae(case_path)
    weights = load_file(str(require_fixture(sibling(case_path, "io", "weights"))))
    pth = tmp_path / "Wan2.1_VAE.pth"
    torch.save({key: value.float() for key, value in weights.items()}, pth)
    # ComfyUI's wan_2.1_vae.safetensors uses the released key names; some bundles add a prefix.
    comfy_file = tmp_path / "wan_2.1_vae.safetensors"
    save_file(
        {f"first_stage_model.{key}": value for key, value in weights.items()}, str(comfy_file)
    )
    module_state = vae.state_dict()  # like ComfyUI's vae.first_stage_model.state_dict()
    for source in (pth, comfy_file, module_state):
        loaded = load_wan_vae(source).state_dict()
        assert loaded.keys() == module_state.keys()
        for key, value in module_state.items():
            assert torch.equal(loaded[key], value), key


def test_bfloat16_weights_are_cast_to_the_requested_dtype():
    weights = {key: value.bfloat16() for key, value in _tiny_vae().state_dict().items()}
    assert load_wan_vae(weights).dtype == torch.float32
    assert load_wan_vae(weights, dtype=torch.bfloat16).dtype == torch.bfloat16


@pytest.mark.parametrize(
    "weights, named",
    [
        (lambda: TAEHV().state_dict(), "TAEHV"),
        (lambda: {"model.blocks.0.self_attn.q.weight": torch.zeros(2, 2)}, "DiT"),
        (
            lambda: {
                "decoder.conv_in.weight": torch.zeros(2, 2, 3, 3),
                "decoder.up.0.block.0.conv1.weight": torch.zeros(1),
            },
            "image VAE",
        ),
        (
            lambda: {**_tiny_vae().state_dict(), "conv2.weight": torch.zeros(48, 48, 1, 1, 1)},
            "Wan2.2",
        ),
    ],
    ids=["taehv", "dit", "image-vae", "wan2.2"],
)
def test_weights_of_another_model_are_refused_with_what_they_look_like(weights, named):
    with pytest.raises(CheckpointError, match=named):
        load_wan_vae(weights())


def test_decoder_only_weights_are_refused():
    weights = {
        key: value
        for key, value in _tiny_vae().state_dict().items()
        if not key.startswith("encoder.")
    }
    with pytest.raises(CheckpointError, match="decoder-only"):
        load_wan_vae(weights)


def test_weights_with_missing_keys_name_them():
    weights = _tiny_vae().state_dict()
    weights.pop("decoder.head.2.bias")
    with pytest.raises(CheckpointError, match="decoder.head.2.bias"):
        load_wan_vae(weights)


@pytest.mark.parametrize(
    "frames, message",
    [
        (_video(4), "1 \\+ 4k"),
        (_video(5, height=12), "multiples of 8"),
        (torch.zeros(1, 5, 4, 16, 16), "expected \\[batch, frames, 3"),
    ],
    ids=["frame-count", "odd-size", "channels"],
)
def test_bad_frames_are_refused_with_the_fix(frames, message):
    vae = _tiny_vae()
    with pytest.raises(CodecInputError, match=message):
        vae.encode(frames, vae.new_state())


def test_a_continuing_chunk_must_hold_whole_groups_of_four():
    vae = _tiny_vae()
    state = vae.new_state()
    vae.encode(_video(1), state)
    with pytest.raises(CodecInputError, match="multiple of 4"):
        vae.encode(_video(3), state)


def test_nan_frames_and_latents_are_refused():
    vae = _tiny_vae()
    frames = _video(1)
    frames[0, 0, 0, 0, 0] = float("nan")
    with pytest.raises(CodecInputError, match="NaN"):
        vae.encode(frames, vae.new_state())
    latents = torch.zeros(1, 1, 16, 2, 2)
    latents[..., 0] = float("inf")
    with pytest.raises(CodecInputError, match="NaN"):
        vae.decode(latents, vae.new_state())


def test_comfyui_layout_latents_are_refused_with_the_conversion_to_use():
    vae = _tiny_vae()
    with pytest.raises(CodecInputError, match="from_comfy_latent"):
        vae.decode(torch.zeros(1, 16, 3, 2, 2), vae.new_state())
