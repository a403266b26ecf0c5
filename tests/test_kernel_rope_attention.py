"""The fused RoPE + KV-cache attention kernel equals its PyTorch reference and the SDPA backend.

The kernel runs on Triton's CPU interpreter here (tiny shapes: the interpreter is slow). Token
and cache lengths are chosen so they are not multiples of the 32-token interpreter tile: every
key range ends in a partial, masked tile, and most also have whole, unmasked ones.
"""

from __future__ import annotations

import math
import os

# Must be set before Triton decorates the kernels (at import of rope_attention_triton).
os.environ["TRITON_INTERPRET"] = "1"

import pytest
import torch

pytest.importorskip("triton", reason="the fused attention kernel needs triton (pip install triton)")

from inspatio_nodes.kernels.attention_backends import (
    attend,
    backend_runs_on,
    backend_usable,
    dispatch,
    kernel_available,
    select_backend,
)
from inspatio_nodes.kernels.rope import (
    RopeInputError,
    RopeTable,
    apply_rope,
)
from inspatio_nodes.kernels.rope_attention import (
    AttentionCall,
    AttentionCallError,
    rope_cached_attention_reference,
)
from inspatio_nodes.kernels.rope_attention_triton import (
    rope_cached_attention_triton,
)

FP32_ATOL = 1e-5
# bf16/fp16: the kernel rounds probabilities to the value dtype (flash-attention style), the
# reference keeps them in fp32; RoPE rounding may differ by one ulp at a rounding boundary.
HALF_ATOL = {torch.float16: 4e-3, torch.bfloat16: 3e-2}
DENOISE_FRAME_OFFSET = 6  # official noisy-block frame positions 6, 7, 8
OFFICIAL_THETA, OFFICIAL_POSITIONS = 10000.0, 1024  # rope_params(1024, dim, theta=10000)
HEADS = 2


def official_style_rope(
    x: torch.Tensor, head_dim: int, grid: tuple[int, int, int], frame_offset: int
) -> torch.Tensor:
    """Independent RoPE in the official layout: per-axis complex tables expanded over (f, h, w)."""
    pairs = head_dim // 2
    split = [pairs - 2 * (pairs // 3), pairs // 3, pairs // 3]
    frame_dim, spatial_dim = head_dim - 4 * (head_dim // 6), 2 * (head_dim // 6)

    def table(dim: int) -> torch.Tensor:
        exponents = torch.arange(0, dim, 2, dtype=torch.float64) / dim
        positions = torch.arange(OFFICIAL_POSITIONS, dtype=torch.float64)
        angles = torch.outer(positions, 1.0 / torch.pow(OFFICIAL_THETA, exponents))
        return torch.polar(torch.ones_like(angles), angles)

    frame_table, row_table, col_table = table(frame_dim), table(spatial_dim), table(spatial_dim)
    assert [frame_table.shape[1], row_table.shape[1], col_table.shape[1]] == split
    f, h, w = grid
    rotation = torch.cat(
        [
            frame_table[frame_offset : frame_offset + f].view(f, 1, 1, -1).expand(f, h, w, -1),
            row_table[:h].view(1, h, 1, -1).expand(f, h, w, -1),
            col_table[:w].view(1, 1, w, -1).expand(f, h, w, -1),
        ],
        dim=-1,
    ).reshape(f * h * w, 1, -1)
    b, n, heads, _ = x.shape
    complex_x = torch.view_as_complex(x.to(torch.float64).reshape(b, n, heads, -1, 2))
    return torch.view_as_real(complex_x * rotation).flatten(3).to(x.dtype)


def random_call(
    head_dim: int,
    grid: tuple[int, int, int],
    context_frames: int,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
) -> dict:
    """q, k, v for `grid`, and caches holding `context_frames` frames of random rotated K/V."""
    generator = torch.Generator().manual_seed(seed)
    frames, rows, cols = grid
    tokens, per_frame = frames * rows * cols, rows * cols
    capacity = (context_frames + frames) * per_frame + per_frame  # spare rows stay untouched

    def normal(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator).to(dtype)

    return {
        "q": normal(1, tokens, HEADS, head_dim),
        "k": normal(1, tokens, HEADS, head_dim),
        "v": normal(1, tokens, HEADS, head_dim),
        "cache_k": normal(1, capacity, HEADS, head_dim),
        "cache_v": normal(1, capacity, HEADS, head_dim),
        "read_len": context_frames * per_frame,
        "rope": RopeTable.for_head_dim(head_dim),
        "grid": grid,
    }


def run(function, call: dict, frame_offset: int, write_offset: int | None):
    """`function` on a private copy of the caches; returns (output, cache_k, cache_v)."""
    cache_k, cache_v = call["cache_k"].clone(), call["cache_v"].clone()
    placement = AttentionCall(
        rope=call["rope"],
        grid=call["grid"],
        frame_offset=frame_offset,
        read_len=call["read_len"],
        write_offset=write_offset,
    )
    output = function(call["q"], call["k"], call["v"], placement, cache_k, cache_v)
    return output, cache_k, cache_v


@pytest.mark.parametrize("head_dim", [16, 32, 128])
def test_apply_rope_equals_official_per_axis_complex_rotation(head_dim):
    grid = (3, 2, 5)
    x = torch.randn(2, math.prod(grid), HEADS, head_dim)
    rope = RopeTable.for_head_dim(head_dim)
    expected = official_style_rope(x, head_dim, grid, DENOISE_FRAME_OFFSET)
    actual = apply_rope(x, rope, grid, DENOISE_FRAME_OFFSET)
    torch.testing.assert_close(actual, expected, atol=0, rtol=0)


@pytest.mark.parametrize(
    "head_dim, grid, context_frames",
    [
        (16, (3, 3, 5), 0),  # 45 tokens: prefill-sized call without a context
        (32, (3, 4, 6), 3),  # the fixture's 24 tokens per frame, block-0 denoise
        (32, (3, 4, 6), 6),  # later blocks: 6 cached frames
        (64, (2, 3, 3), 6),  # 18 tokens, cache of 54 rows: both ranges end inside a tile
        (24, (2, 3, 3), 2),  # head dims that are not powers of two: channels padded to 32, 64
        (40, (1, 3, 4), 3),
        (8, (1, 2, 3), 1),  # below tl.dot's minimum of 16: padded to 16
    ],
)
def test_kernel_equals_reference(head_dim, grid, context_frames):
    call = random_call(head_dim, grid, context_frames)
    expected, *_ = run(rope_cached_attention_reference, call, DENOISE_FRAME_OFFSET, None)
    actual, *_ = run(rope_cached_attention_triton, call, DENOISE_FRAME_OFFSET, None)
    torch.testing.assert_close(actual, expected, atol=FP32_ATOL, rtol=0)


def test_kernel_reads_strided_views_and_batches():
    """q/k/v as views of one fused projection [B, N, 3, Hd, Dh]: token strides are not Hd·Dh."""
    head_dim, grid = 16, (2, 3, 4)
    tokens = math.prod(grid)
    fused = torch.randn(2, tokens, 3, HEADS, head_dim)
    q, k, v = fused.unbind(dim=2)
    cache = torch.randn(2, 2 * tokens, HEADS, head_dim)
    call = {
        "q": q,
        "k": k,
        "v": v,
        "cache_k": cache,
        "cache_v": cache.flip(1).contiguous(),
        "read_len": tokens,
        "rope": RopeTable.for_head_dim(head_dim),
        "grid": grid,
    }
    expected = run(rope_cached_attention_reference, call, DENOISE_FRAME_OFFSET, tokens)
    actual = run(rope_cached_attention_triton, call, DENOISE_FRAME_OFFSET, tokens)
    for actual_tensor, expected_tensor in zip(actual, expected):
        torch.testing.assert_close(actual_tensor, expected_tensor, atol=FP32_ATOL, rtol=0)


def test_kernel_equals_sdpa_with_explicit_rope():
    call = random_call(32, (3, 4, 6), context_frames=3, seed=1)
    sdpa = lambda *args, **kwargs: dispatch(*args, **kwargs, backend="sdpa")
    expected, *_ = run(sdpa, call, DENOISE_FRAME_OFFSET, None)
    actual, *_ = run(rope_cached_attention_triton, call, DENOISE_FRAME_OFFSET, None)
    torch.testing.assert_close(actual, expected, atol=FP32_ATOL, rtol=0)


@pytest.mark.parametrize("head_dim", [32, 40])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_kernel_equals_reference(dtype, head_dim):
    call = random_call(head_dim, (3, 4, 6), context_frames=3, dtype=dtype, seed=2)
    expected, *_ = run(rope_cached_attention_reference, call, DENOISE_FRAME_OFFSET, None)
    actual, *_ = run(rope_cached_attention_triton, call, DENOISE_FRAME_OFFSET, None)
    assert actual.dtype == dtype
    torch.testing.assert_close(actual.float(), expected.float(), atol=HALF_ATOL[dtype], rtol=0)


@pytest.mark.parametrize("head_dim", [32, 24])
def test_prefill_writes_rotated_keys_and_values_at_the_row_offset(head_dim):
    call = random_call(head_dim, (3, 4, 6), context_frames=0, seed=3)
    tokens, write_offset = call["q"].shape[1], 10
    before_k, before_v = call["cache_k"], call["cache_v"]
    output, cache_k, cache_v = run(rope_cached_attention_triton, call, 0, write_offset)

    written = slice(write_offset, write_offset + tokens)
    rotated_k = official_style_rope(call["k"], head_dim, call["grid"], frame_offset=0)
    torch.testing.assert_close(cache_k[:, written], rotated_k, atol=FP32_ATOL, rtol=0)
    assert torch.equal(cache_v[:, written], call["v"])
    untouched = torch.ones(cache_k.shape[1], dtype=torch.bool)
    untouched[written] = False
    assert torch.equal(cache_k[:, untouched], before_k[:, untouched])
    assert torch.equal(cache_v[:, untouched], before_v[:, untouched])
    expected, *_ = run(rope_cached_attention_reference, call, 0, write_offset)
    torch.testing.assert_close(output, expected, atol=FP32_ATOL, rtol=0)


def test_write_over_the_rows_read_attends_to_the_cache_from_before_the_call():
    call = random_call(16, (1, 4, 5), context_frames=3, seed=4)
    overlapping_offset = call["read_len"] // 2
    expected = run(rope_cached_attention_reference, call, 0, overlapping_offset)
    actual = run(rope_cached_attention_triton, call, 0, overlapping_offset)
    for actual_tensor, expected_tensor in zip(actual, expected):
        torch.testing.assert_close(actual_tensor, expected_tensor, atol=FP32_ATOL, rtol=0)


def test_denoise_after_prefill_equals_one_pass_over_context_and_block():
    """SPEC §10.3 at the attention level: cached attention == attention over [context | block]."""
    head_dim, per_frame_grid, context_frames, block_frames = 32, (4, 6), 6, 3
    rope = RopeTable.for_head_dim(head_dim)
    per_frame = math.prod(per_frame_grid)
    generator = torch.Generator().manual_seed(5)
    context_k, context_v = (
        torch.randn(1, context_frames * per_frame, HEADS, head_dim, generator=generator)
        for _ in range(2)
    )
    q, k, v = (
        torch.randn(1, block_frames * per_frame, HEADS, head_dim, generator=generator)
        for _ in range(3)
    )
    capacity = context_frames * per_frame
    cache_k, cache_v = (
        torch.zeros(1, capacity, HEADS, head_dim),
        torch.zeros(1, capacity, HEADS, head_dim),
    )
    prefill = AttentionCall(
        rope=rope,
        grid=(context_frames, *per_frame_grid),
        frame_offset=0,
        read_len=0,
        write_offset=0,
    )
    rope_cached_attention_triton(context_k, context_k, context_v, prefill, cache_k, cache_v)
    denoise = AttentionCall(
        rope=rope,
        grid=(block_frames, *per_frame_grid),
        frame_offset=DENOISE_FRAME_OFFSET,
        read_len=capacity,
        write_offset=None,
    )
    cached = rope_cached_attention_triton(q, k, v, denoise, cache_k, cache_v)

    keys = torch.cat(
        [
            official_style_rope(context_k, head_dim, (context_frames, *per_frame_grid), 0),
            official_style_rope(k, head_dim, (block_frames, *per_frame_grid), DENOISE_FRAME_OFFSET),
        ],
        dim=1,
    )
    queries = official_style_rope(
        q, head_dim, (block_frames, *per_frame_grid), DENOISE_FRAME_OFFSET
    )
    full = torch.nn.functional.scaled_dot_product_attention(
        queries.transpose(1, 2), keys.transpose(1, 2), torch.cat([context_v, v], 1).transpose(1, 2)
    ).transpose(1, 2)
    torch.testing.assert_close(cached, full, atol=FP32_ATOL, rtol=0)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"grid": (3, 4, 5)}, "grid"),
        ({"cache_k": None}, "cache_k or cache_v is None"),
        ({"write_offset": 70}, "does not fit the cache capacity"),
        ({"rope": RopeTable.for_head_dim(16)}, "head_dim"),
        ({"frame_offset": 1023}, "exceed the rope table"),
    ],
)
def test_inconsistent_arguments_raise_errors_naming_them(change, message):
    call = random_call(32, (3, 4, 6), context_frames=0)
    arguments = {
        "rope": call["rope"],
        "grid": call["grid"],
        "frame_offset": 0,
        "cache_k": call["cache_k"],
        "cache_v": call["cache_v"],
        "read_len": 0,
        "write_offset": 0,
    } | change
    cache_k, cache_v = arguments.pop("cache_k"), arguments.pop("cache_v")
    for function in (rope_cached_attention_reference, rope_cached_attention_triton):
        with pytest.raises((AttentionCallError, RopeInputError), match=message):
            function(call["q"], call["k"], call["v"], AttentionCall(**arguments), cache_k, cache_v)


def test_cpu_offers_sdpa_and_runs_the_kernel_only_when_asked_by_name():
    assert kernel_available("cpu", torch.float32)
    assert not kernel_available("cpu", torch.int64)
    assert not backend_runs_on("triton", "cpu", torch.float32)
    assert backend_usable("triton", "cpu", torch.float32, 32)
    assert select_backend("cpu", torch.float32, 32) == "sdpa"


@pytest.mark.parametrize("backend, message", [("flash2", "cannot run"), ("xformers", "unknown")])
def test_a_backend_that_cannot_run_here_is_refused_by_name(backend, message):
    call = random_call(16, (1, 4, 5), context_frames=0)
    with pytest.raises(AttentionCallError, match=message):
        run(lambda *args, **kwargs: dispatch(*args, **kwargs, backend=backend), call, 0, None)


def test_plain_attention_asked_of_the_kernel_runs_on_the_next_backend():
    q, k, v = (torch.randn(1, 20, HEADS, 16) for _ in range(3))
    expected = torch.softmax(torch.einsum("bnhd,bmhd->bhnm", q, k) / math.sqrt(16), dim=-1)
    expected = torch.einsum("bhnm,bmhd->bnhd", expected, v)
    torch.testing.assert_close(attend(q, k, v, backend="triton"), expected, atol=FP32_ATOL, rtol=0)


def test_kernel_is_unavailable_on_cpu_without_the_interpreter(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET")
    assert not backend_usable("triton", "cpu", torch.float32, 32)
    assert not kernel_available("cpu", torch.float32)


@pytest.mark.parametrize(
    "capability, dtype, offered",
    [
        ((7, 5), torch.bfloat16, False),  # Turing: no bf16 tensor cores
        ((7, 5), torch.float16, True),
        ((8, 0), torch.bfloat16, True),  # Ampere
        ((9, 0), torch.bfloat16, True),
        ((6, 1), torch.float16, False),  # Pascal: older than Triton's oldest target
    ],
)
def test_kernel_needs_ampere_for_bf16_and_volta_otherwise(monkeypatch, capability, dtype, offered):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    assert kernel_available("cuda", dtype) is offered
