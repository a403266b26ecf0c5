"""The spatiotemporal cache: its size, the memory estimate, and text K/V computed once per prompt."""

from __future__ import annotations

import pytest
import torch
from inspatio_nodes.core.wan.dit import WanDiTConfig
from inspatio_nodes.core.world import (
    SeededNoise,
    Session,
    WorldInputError,
    prepare_cache,
    session_memory_bytes,
)
from test_dit import tiny_dit
from test_world import TINY_LATENT, tiny_inputs, tiny_session

RELEASED_LATENT = (60, 104)  # 480×832 pixels
GIB = 2**30


def test_memory_estimate_equals_the_bytes_a_session_allocates():
    model = tiny_dit()
    text, *_ = tiny_inputs(blocks=1)
    session = tiny_session(model, text)
    allocated = sum(b.nbytes for b in session.cache.buffers()) + sum(
        kv.nbytes for kv in session.cache.text
    )
    assert session_memory_bytes(model.config, *TINY_LATENT, dtype=torch.float32) == allocated


def test_released_model_cache_holds_two_blocks_of_1560_tokens():
    config = WanDiTConfig()
    self_attention = config.num_layers * 2 * 9360 * config.dim * 2  # K and V, bf16
    text = config.num_layers * 2 * config.text_len * config.dim * 2
    assert (
        session_memory_bytes(config, *RELEASED_LATENT, dtype=torch.bfloat16)
        == self_attention + text
    )
    assert round(self_attention / GIB, 2) == 1.61


def test_text_kv_is_computed_once_per_prompt():
    model = tiny_dit()
    text, reference, render, mask = tiny_inputs(blocks=1)
    projections = []
    handle = model.blocks[0].cross_attn.k.register_forward_hook(lambda *_: projections.append(1))
    session = tiny_session(model, text)
    for _ in range(3):
        session.step(reference, render, mask)
    handle.remove()
    assert len(projections) == 1


def test_prefill_overwrites_from_row_zero_every_block():
    model = tiny_dit()
    text, reference, render, mask = tiny_inputs(blocks=1)
    session = tiny_session(model, text)
    tokens_per_frame = model.config.tokens_per_frame(*TINY_LATENT)

    session.step(reference, render, mask)
    assert session.cache.context_tokens == 3 * tokens_per_frame
    first_reference_rows = session.cache.keys[0][:, : 3 * tokens_per_frame].clone()
    session.step(reference, render, mask)
    assert session.cache.context_tokens == 6 * tokens_per_frame
    # The reference block sits at the same RoPE frames every block, so its rows are rewritten equal.
    assert torch.equal(session.cache.keys[0][:, : 3 * tokens_per_frame], first_reference_rows)
    assert session.cache.capacity_tokens == 6 * tokens_per_frame


def test_a_released_cache_drops_its_buffers_and_no_session_takes_it():
    model = tiny_dit()
    text, *_ = tiny_inputs(blocks=1)
    height, width = TINY_LATENT
    cache = prepare_cache(model, text, latent_height=height, latent_width=width)

    cache.release()

    assert cache.released and cache.buffers() == [] and cache.text == []
    with pytest.raises(WorldInputError, match="the cache was released"):
        Session(
            model, text, latent_height=height, latent_width=width, noise=SeededNoise(0), cache=cache
        )
