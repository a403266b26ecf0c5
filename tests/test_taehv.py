"""TAEHV (``core/wan/taehv.py``): parity, frame alignment, streaming, loading and bad input."""

from __future__ import annotations

import dataclasses
import functools
import json

import pytest
import torch
from conftest import fixture_cases, require_fixture, sibling
from inspatio_nodes.core.codec import CodecInputError
from inspatio_nodes.core.wan.checkpoints import CheckpointError
from inspatio_nodes.core.wan.taehv import TAEHV, TAEHVConfig, load_taehv
from inspatio_nodes.core.wan.vae import WanVAE, WanVAEConfig
from safetensors import safe_open
from safetensors.torch import load_file, save_file

TAEHV_CASES = fixture_cases("*taehv*_io*.safetensors")
ATOL = 1e-4  # fixtures/README.md §9: a float64 run differs by at most 2.7e-6
STREAM_ATOL = 1e-5  # chunked convolutions may round differently from one pass, never more


@functools.lru_cache(maxsize=2)
def _fixture_weights(case_path):
    return load_file(str(require_fixture(sibling(case_path, "io", "weights"))))


# TAEHVConfig fields, recorded under the same names in the fixture's info["config"].
CONFIG_FIELDS = (
    "latent_channels",
    "encoder_time_downscale",
    "decoder_time_upscale",
    "decoder_space_upscale",
    "patch_size",
)


def _fixture_config(case_path) -> TAEHVConfig:
    with safe_open(str(require_fixture(case_path)), "pt") as tensors:
        recorded = json.loads(tensors.metadata()["info"])["config"]
    missing = [field for field in CONFIG_FIELDS if field not in recorded]
    if missing:
        pytest.fail(
            f"{case_path.name}: info['config'] lacks {missing}; the fixture must record every "
            f"TAEHV constructor option ({', '.join(CONFIG_FIELDS)})"
        )
    # JSON gives the per-stage flags as lists; the frozen config holds tuples.
    return TAEHVConfig(
        **{
            field: tuple(recorded[field]) if isinstance(recorded[field], list) else recorded[field]
            for field in CONFIG_FIELDS
        }
    )


def _fixture_model(case_path):
    io = load_file(str(require_fixture(case_path)))
    return load_taehv(_fixture_weights(case_path), config=_fixture_config(case_path)), io


@functools.lru_cache(maxsize=1)
def _random_model() -> TAEHV:
    torch.manual_seed(0)
    return TAEHV().eval()


def _video(frames: int, size: int = 16, seed: int = 2) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(1, frames, 3, size, size, generator=generator) * 2 - 1


@pytest.mark.parametrize("case_path", TAEHV_CASES)
def test_encode_video_matches_upstream_including_end_padding(case_path):
    model, io = _fixture_model(case_path)
    with torch.no_grad():
        latents = model.encode_video(io["video"])
    assert latents.shape == io["latent"].shape
    torch.testing.assert_close(latents, io["latent"], atol=ATOL, rtol=0)


@pytest.mark.parametrize("case_path", TAEHV_CASES)
def test_raw_decode_matches_upstream_including_the_dropped_start_up_frames(case_path):
    model, io = _fixture_model(case_path)
    with torch.no_grad():
        raw = model.decode_raw(io["latent"], {})
    trimmed = io["decoded_trimmed_frames"]
    assert trimmed.shape[1] == model.config.frames_to_trim
    torch.testing.assert_close(raw[:, : trimmed.shape[1]], trimmed, atol=ATOL, rtol=0)
    kept = raw[:, trimmed.shape[1] :]
    assert kept.shape == io["decoded"].shape
    torch.testing.assert_close(kept, io["decoded"], atol=ATOL, rtol=0)


@pytest.mark.parametrize("case_path", TAEHV_CASES)
def test_codec_encode_of_1_plus_4k_frames_is_upstream_encode_video_in_minus_one_one(case_path):
    model, io = _fixture_model(case_path)
    usable = 1 + 4 * ((io["video"].shape[1] - 1) // 4)
    video = io["video"][:, :usable]
    latents = model.encode(video * 2 - 1, model.new_state())
    assert latents.shape[1] == 1 + (usable - 1) // 4  # as many latents as the Wan VAE gives
    with torch.no_grad():
        torch.testing.assert_close(latents, model.encode_video(video), atol=STREAM_ATOL, rtol=0)


@pytest.mark.parametrize("case_path", TAEHV_CASES)
def test_codec_decode_gives_the_wan_frame_layout_in_minus_one_one(case_path):
    model, io = _fixture_model(case_path)
    frames = model.decode(io["latent"], model.new_state())
    assert frames.shape[1] == 1 + 4 * (io["latent"].shape[1] - 1)
    torch.testing.assert_close(frames, io["decoded"] * 2 - 1, atol=2 * ATOL, rtol=0)


def test_streamed_latents_inside_a_chunk_are_the_whole_encode_and_its_last_is_the_prefix_encode():
    model = _random_model()
    video = _video(21)
    state = model.new_state()
    whole = model.encode(video, model.new_state())
    chunk_ends, start, latents_so_far = [9, 13, 21], 0, 0
    for end in chunk_ends:
        piece = model.encode(video[:, start:end], state)
        prefix = model.encode(video[:, :end], model.new_state())
        assert latents_so_far + piece.shape[1] == prefix.shape[1]
        # Latents whose look-ahead frames are all in the stream so far are the whole encode's...
        inside = whole[:, latents_so_far : prefix.shape[1] - 1]
        torch.testing.assert_close(piece[:, :-1], inside, atol=STREAM_ATOL, rtol=0)
        # ...the chunk's last one reads its last frame held 4 times: the prefix encode's last.
        torch.testing.assert_close(piece[:, -1], prefix[:, -1], atol=STREAM_ATOL, rtol=0)
        start, latents_so_far = end, prefix.shape[1]
    assert latents_so_far == whole.shape[1]


def test_a_single_first_frame_then_a_group_of_four_streams_like_the_whole_video():
    model = _random_model()
    video = _video(5, seed=3)
    state = model.new_state()
    first, second = model.encode(video[:, :1], state), model.encode(video[:, 1:], state)
    assert (first.shape[1], second.shape[1]) == (1, 1)
    whole = model.encode(video, model.new_state())
    torch.testing.assert_close(
        first[:, 0], model.encode(video[:, :1], model.new_state())[:, 0], atol=0, rtol=0
    )
    torch.testing.assert_close(second, whole[:, 1:], atol=STREAM_ATOL, rtol=0)


def test_streamed_decode_equals_the_whole_decode_up_to_convolution_rounding():
    model = _random_model()
    latents = torch.randn(1, 4, 16, 2, 2, generator=torch.Generator().manual_seed(5))
    whole = model.decode(latents, model.new_state())
    state = model.new_state()
    pieces = [
        model.decode(latents[:, :1], state),
        model.decode(latents[:, 1:3], state),
        model.decode(latents[:, 3:], state),
    ]
    assert [piece.shape[1] for piece in pieces] == [1, 8, 4]
    # Not bit-identical: chunked convolutions round differently (about 3.5e-6 here).
    torch.testing.assert_close(torch.cat(pieces, dim=1), whole, atol=STREAM_ATOL, rtol=0)


@pytest.mark.parametrize("case_path", TAEHV_CASES)
def test_a_tgrow_kernel_larger_in_the_file_keeps_its_last_rows(case_path):
    weights = _fixture_weights(case_path)
    full = _fixture_config(case_path)
    # A preview decoder: every temporal upscale but the last one switched off.
    fewer = (False,) * (len(full.decoder_time_upscale) - 1) + full.decoder_time_upscale[-1:]
    preview = dataclasses.replace(full, decoder_time_upscale=fewer)
    model = load_taehv(weights, config=preview)
    patched = 0
    for key, kept in model.state_dict().items():
        if kept.shape != weights[key].shape:
            torch.testing.assert_close(kept, weights[key][-kept.shape[0] :].float(), atol=0, rtol=0)
            patched += 1
    assert patched == sum(
        ours != theirs
        for ours, theirs in zip(preview.decoder_time_upscale, full.decoder_time_upscale)
    )
    latents = torch.zeros(1, 2, preview.latent_channels, 2, 2)
    decoded = model.decode(latents, model.new_state())
    assert decoded.shape[1] == 2 * preview.decoded_frames_per_latent - preview.frames_to_trim


def test_patch_size_and_space_upscale_set_the_pixel_grid_as_upstream():
    torch.manual_seed(0)
    patched = TAEHV(TAEHVConfig(patch_size=2)).eval()
    video = _video(5, size=32)
    latents = patched.encode(video, patched.new_state())
    assert latents.shape[-2:] == (2, 2)  # 8 pixels per cell from the convs, times the patch
    assert patched.decode(latents, patched.new_state()).shape[-2:] == (32, 32)
    with pytest.raises(CodecInputError, match="multiples of 16"):
        patched.encode(_video(5, size=24), patched.new_state())
    half = TAEHV(TAEHVConfig(decoder_space_upscale=(False, True, True))).eval()
    assert half.decode(latents, half.new_state()).shape[-2:] == (8, 8)


@pytest.mark.parametrize("case_path", TAEHV_CASES)
def test_every_accepted_file_layout_loads_the_same_model(case_path, tmp_path):
    weights = _fixture_weights(case_path)
    reference, _ = _fixture_model(case_path)
    pth = tmp_path / "taew2_1.pth"
    torch.save(dict(weights), pth)
    comfy = {
        key.replace("encoder.", "taehv_encoder.", 1).replace("decoder.", "taehv_decoder.", 1): value
        for key, value in weights.items()
    }
    comfy_file = tmp_path / "taew2_1.safetensors"
    save_file(comfy, str(comfy_file))
    for source in (pth, comfy_file, reference.state_dict()):
        loaded = load_taehv(source, config=reference.config)
        for key, value in reference.state_dict().items():
            assert torch.equal(loaded.state_dict()[key], value), key


def test_wan_vae_weights_given_as_taehv_are_refused():
    with pytest.raises(CheckpointError, match="Wan2.1 VAE"):
        load_taehv(WanVAE(WanVAEConfig(base_dim=4)).state_dict())


def test_a_taehv_for_another_latent_space_is_refused():
    weights = _random_model().state_dict()
    patched = {**weights, "encoder.0.weight": torch.zeros(64, 12, 3, 3)}
    with pytest.raises(CheckpointError, match="taew2_2"):
        load_taehv(patched)
    wide = {**weights, "decoder.1.weight": torch.zeros(256, 48, 3, 3)}
    with pytest.raises(CheckpointError, match="48-channel"):
        load_taehv(wide)


def test_bad_frames_are_refused_with_the_fix():
    model = _random_model()
    with pytest.raises(CodecInputError, match="1 \\+ 4k"):
        model.encode(_video(14), model.new_state())
    with pytest.raises(CodecInputError, match="multiples of 8"):
        model.encode(_video(5, size=12), model.new_state())
    nan_video = _video(1)
    nan_video[..., 0] = float("nan")
    with pytest.raises(CodecInputError, match="NaN"):
        model.encode(nan_video, model.new_state())
