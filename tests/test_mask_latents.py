"""Mask-to-latent packing: v1 ``convert_mask_video`` and v1.5's streamed ``iter_mask_latents``."""

from __future__ import annotations

import pytest
import torch
from conftest import fixture_cases, load_json, require_fixture
from einops import rearrange
from inspatio_nodes.core.frame_counts import iter_video_chunks, padded_frame_count
from inspatio_nodes.core.mask_latents import (
    MASK_THRESHOLD,
    MaskLatentError,
    iter_mask_latents,
    pack_mask_latents,
)
from inspatio_nodes.core.splat import mask_u8
from safetensors.torch import load_file


@pytest.mark.parametrize("case_path", fixture_cases("*mask_latent*.safetensors"))
def test_packed_mask_latents_equal_convert_mask_video(case_path):
    tensors = load_file(str(require_fixture(case_path)))
    mask_video, expected = (
        tensors["mask_video"],
        tensors["mask_latent"],
    )  # [B, 3, T, H, W], [B, G, 4, h, w]
    for batch in range(mask_video.shape[0]):
        packed = pack_mask_latents(mask_video[batch, 0])
        assert torch.equal(packed[0], expected[batch])


def _mask_cases(case_path):
    cases = load_json(require_fixture(case_path))["iter_mask_latents"]["cases"]
    for case in cases:
        channels = [torch.tensor(case[f"mask_{name}"], dtype=torch.uint8) for name in "rgb"]
        yield case, torch.stack(channels, dim=1)  # [T, 3, H, W] uint8


@pytest.mark.parametrize("case_path", fixture_cases("*scene_frames*.json"))
def test_streamed_mask_latents_equal_official(case_path):
    for case, frames in _mask_cases(case_path):
        chunks = iter_video_chunks(frames, case["padded"])
        streamed = torch.cat(list(iter_mask_latents(chunks)), dim=1)
        assert torch.equal(streamed, torch.tensor(case["output"], dtype=torch.float32)), case[
            "valid"
        ]


@pytest.mark.parametrize("case_path", fixture_cases("*scene_frames*.json"))
def test_streamed_mask_latents_equal_whole_video_packing(case_path):
    for case, frames in _mask_cases(case_path):
        padded = torch.cat(list(iter_video_chunks(frames, case["padded"])))
        signed = (padded[:, 0] > MASK_THRESHOLD).float() * 2 - 1
        streamed = torch.cat(
            list(iter_mask_latents(iter_video_chunks(frames, case["padded"]))), dim=1
        )
        assert torch.equal(pack_mask_latents(signed), streamed)


def test_latent_frame_j_holds_pixel_frames_4j_minus_3_to_4j():
    frames, height, width = 9, 16, 24
    signed = torch.arange(frames, dtype=torch.float32)[:, None, None].expand(frames, height, width)
    packed = pack_mask_latents(signed)
    expected_frames = [[0, 0, 0, 0], [1, 2, 3, 4], [5, 6, 7, 8]]
    assert packed[0, :, :, 0, 0].tolist() == expected_frames


def test_mask_chunks_of_the_wrong_length_are_refused():
    chunk = torch.zeros(2, 3, 16, 16, dtype=torch.uint8)
    with pytest.raises(MaskLatentError, match="chunks of 1, then 4"):
        list(iter_mask_latents([chunk]))


def test_mask_size_not_a_multiple_of_the_latent_stride_is_refused():
    with pytest.raises(MaskLatentError, match="multiples of 8"):
        pack_mask_latents(torch.ones(5, 20, 16))


def test_render_mask_bytes_streamed_equal_the_packed_signed_mask():
    generator = torch.Generator().manual_seed(3)
    valid, height, width = 10, 16, 24
    render_mask = (torch.rand(valid, 1, height, width, generator=generator) > 0.4).float()
    mask_video = rearrange(mask_u8(render_mask), "f h w c -> f c h w")
    padded = padded_frame_count(valid)
    streamed = torch.cat(list(iter_mask_latents(iter_video_chunks(mask_video, padded))), dim=1)
    held = render_mask[[min(index, valid - 1) for index in range(padded)], 0]
    assert torch.equal(streamed, pack_mask_latents(held * 2 - 1))
