"""Fused Triton kernel for :func:`kernels.rope_attention.rope_cached_attention_reference`.

Same function as the reference beside it (3-axis RoPE, KV-cache read and write, unmasked block
attention; SPEC-inspatio-world.md §3), computed in two launches:

1. :func:`kernels.rope_triton.write_rotated_keys` rotates the call's own keys once. For a
   prefill it writes the rotated keys and the values straight into the cache rows at
   ``write_offset``; otherwise into a scratch buffer. Rotating keys once there, not inside the
   attention loop, keeps the inner loop a plain flash-attention loop: each key would otherwise be
   rotated again by every query tile.
2. ``_rope_cached_attention_kernel`` rotates its query tile on load, then runs an online softmax
   (flash-attention style, fp32 accumulation) over two key ranges, ``cache[0:read_len]`` and the
   own rotated keys, as one logical sequence: the concatenation is never materialised.

Tiles span ``BLOCK_D`` channels, the head dim padded to a power of two of at least 16 (what
``tl.arange`` and ``tl.dot`` need): masked loads read the padded channels as zeros, which add
nothing to ``q·kᵀ`` and leave zero output channels, and the store skips them. Any even head dim
runs (24, 40, 48 as well as the released model's 128).

Rotated q and k are rounded to the input dtype before the dot products, as the official code
casts the float64 RoPE result back (``type_as``) before attention, and the probabilities are
rounded to the value dtype before ``p·v``, as flash attention does.

This module imports Triton at import time; import it through ``attention_backends`` only.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..core.types import Keys, Queries, Values
from .rope_attention import (
    AttentionCall,
    AttentionCallError,
    AttentionOutput,
    CacheBuffer,
    check_attention_call,
)
from .rope_triton import (
    padded_head_dim,
    program_tokens,
    rotated_tile,
    token_strides,
    write_rotated_keys,
)

LOG2_E = 1.4426950408889634  # softmax via exp2: e^x = 2^(x·log2 e)
# The CPU interpreter pays per program and per loop step, so bigger tiles run faster there.
INTERPRETER_TILE = 32
TRITON_DTYPES = {torch.float16: tl.float16, torch.bfloat16: tl.bfloat16, torch.float32: tl.float32}
FLOAT_DTYPES = tuple(TRITON_DTYPES)

# Tiles for a GPU, tuned per (tokens, read_len, head dim); configurations that do not fit the
# shared memory are skipped by the autotuner.
ATTENTION_CONFIGS = [
    triton.Config({"BLOCK_M": block_m, "BLOCK_N": block_n}, num_warps=warps, num_stages=stages)
    for block_m, block_n, warps, stages in [
        (128, 64, 4, 3),
        (128, 64, 8, 3),
        (128, 128, 8, 2),
        (128, 128, 8, 3),
        (64, 64, 4, 3),
        (64, 128, 4, 3),
    ]
]


@triton.jit
def _attend_key_range(
    acc, row_max, row_sum, q, k_ptr, v_ptr, k_stride_n, v_stride_n, start, end, scale_log2,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
    DOT_DTYPE: tl.constexpr, DOT_PRECISION: tl.constexpr, MASKED: tl.constexpr,
):  # fmt: skip
    """Online-softmax update of (acc, row_max, row_sum) with keys/values [start, end).

    Unmasked (MASKED=False) the range must be whole tiles: the steady-state loop then has no
    bounds checks. The masked variant handles the last, partial tile of a range. Channels past
    HEAD_DIM (padding up to BLOCK_D) are masked on every load.
    """
    channel = tl.arange(0, BLOCK_D)
    channel_valid = channel < HEAD_DIM
    for tile_start in range(start, end, BLOCK_N):
        key_index = tile_start + tl.arange(0, BLOCK_N)
        key_offsets = key_index[None, :] * k_stride_n + channel[:, None]
        value_offsets = key_index[:, None] * v_stride_n + channel[None, :]
        # Both conditions are compile-time: an unpadded whole tile loads without any mask.
        if MASKED or HEAD_DIM < BLOCK_D:
            key_valid = key_index < end
            key_mask = key_valid[None, :] & channel_valid[:, None]
            value_mask = key_valid[:, None] & channel_valid[None, :]
            keys_t = tl.load(k_ptr + key_offsets, mask=key_mask, other=0.0)
            values = tl.load(v_ptr + value_offsets, mask=value_mask, other=0.0)
        else:
            keys_t = tl.load(k_ptr + key_offsets)
            values = tl.load(v_ptr + value_offsets)
        scores = tl.dot(q.to(DOT_DTYPE), keys_t.to(DOT_DTYPE), input_precision=DOT_PRECISION)
        scores = scores * scale_log2
        if MASKED:
            scores = tl.where(key_valid[None, :], scores, float("-inf"))
        new_max = tl.maximum(row_max, tl.max(scores, axis=1))
        rescale = tl.math.exp2(row_max - new_max)
        probabilities = tl.math.exp2(scores - new_max[:, None])
        row_sum = row_sum * rescale + tl.sum(probabilities, axis=1)
        # Probabilities are rounded to the value dtype, as flash attention does.
        probabilities = probabilities.to(values.dtype).to(DOT_DTYPE)
        # Accumulating inside tl.dot lets the matrix unit add into acc directly.
        acc = tl.dot(
            probabilities, values.to(DOT_DTYPE), acc * rescale[:, None],
            input_precision=DOT_PRECISION,
        )  # fmt: skip
        row_max = new_max
    return acc, row_max, row_sum


@triton.jit
def _attend_keys(
    acc, row_max, row_sum, q, k_ptr, v_ptr, k_stride_n, v_stride_n, length, scale_log2,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
    DOT_DTYPE: tl.constexpr, DOT_PRECISION: tl.constexpr,
):  # fmt: skip
    """Keys/values [0, length): whole tiles unmasked, then the partial tail tile masked."""
    whole_tiles_end = (length // BLOCK_N) * BLOCK_N
    acc, row_max, row_sum = _attend_key_range(
        acc, row_max, row_sum, q, k_ptr, v_ptr, k_stride_n, v_stride_n, 0, whole_tiles_end,
        scale_log2, HEAD_DIM, BLOCK_D, BLOCK_N, DOT_DTYPE, DOT_PRECISION, False,
    )  # fmt: skip
    return _attend_key_range(
        acc, row_max, row_sum, q, k_ptr, v_ptr, k_stride_n, v_stride_n, whole_tiles_end, length,
        scale_log2, HEAD_DIM, BLOCK_D, BLOCK_N, DOT_DTYPE, DOT_PRECISION, True,
    )  # fmt: skip


@triton.jit
def _rope_cached_attention_kernel(
    q_ptr, q_stride_b, q_stride_n, q_stride_h,
    cache_k_ptr, ck_stride_b, ck_stride_n, ck_stride_h,
    cache_v_ptr, cv_stride_b, cv_stride_n, cv_stride_h,
    own_k_ptr, ok_stride_b, ok_stride_n, ok_stride_h,
    own_v_ptr, ov_stride_b, ov_stride_n, ov_stride_h,
    out_ptr, o_stride_b, o_stride_n, o_stride_h,
    cos_ptr, sin_ptr, heads, tokens, read_len, frame_offset, rows, cols, scale_log2,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, FRAME_PAIRS: tl.constexpr,
    ROW_PAIRS: tl.constexpr, DOT_DTYPE: tl.constexpr, DOT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    b, h, query_index, query_valid = program_tokens(heads, tokens, BLOCK_M)

    q = rotated_tile(
        q_ptr + b * q_stride_b + h * q_stride_h, q_stride_n, query_index, query_valid,
        cos_ptr, sin_ptr, frame_offset, rows, cols, HEAD_DIM, BLOCK_D, FRAME_PAIRS, ROW_PAIRS,
    ).to(q_ptr.dtype.element_ty)  # fmt: skip

    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    row_max = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    row_sum = tl.zeros([BLOCK_M], dtype=tl.float32)
    # The cached context first, then the call's own keys: one logical key sequence.
    acc, row_max, row_sum = _attend_keys(
        acc, row_max, row_sum, q,
        cache_k_ptr + b * ck_stride_b + h * ck_stride_h,
        cache_v_ptr + b * cv_stride_b + h * cv_stride_h,
        ck_stride_n, cv_stride_n, read_len, scale_log2,
        HEAD_DIM, BLOCK_D, BLOCK_N, DOT_DTYPE, DOT_PRECISION,
    )  # fmt: skip
    acc, row_max, row_sum = _attend_keys(
        acc, row_max, row_sum, q,
        own_k_ptr + b * ok_stride_b + h * ok_stride_h,
        own_v_ptr + b * ov_stride_b + h * ov_stride_h,
        ok_stride_n, ov_stride_n, tokens, scale_log2,
        HEAD_DIM, BLOCK_D, BLOCK_N, DOT_DTYPE, DOT_PRECISION,
    )  # fmt: skip

    output = acc / row_sum[:, None]
    channel = tl.arange(0, BLOCK_D)[None, :]
    out = out_ptr + b * o_stride_b + h * o_stride_h + query_index[:, None] * o_stride_n + channel
    in_bounds = query_valid[:, None] & (channel < HEAD_DIM)
    tl.store(out, output.to(out_ptr.dtype.element_ty), mask=in_bounds)


_tuned_attention_kernel = triton.autotune(
    configs=ATTENTION_CONFIGS, key=["tokens", "read_len", "HEAD_DIM"]
)(_rope_cached_attention_kernel)


def kernel_supports(head_dim: int, dtype: torch.dtype) -> bool:
    """Head dims the kernel tiles (any positive even one: RoPE pairs channels) and its dtypes."""
    return head_dim > 0 and head_dim % 2 == 0 and dtype in FLOAT_DTYPES


def _dot_operand_dtype(dtype: torch.dtype, on_gpu: bool) -> tl.dtype:
    """Operand dtype of the two tl.dot calls: the input dtype, except bf16 on the interpreter.

    Triton's CPU interpreter multiplies through numpy, which has no bfloat16 and returns garbage
    for bf16 dots. The operands are already rounded to bf16, so an fp32 dot of them gives the
    same products a GPU bf16 dot accumulates in fp32.
    """
    if dtype == torch.bfloat16 and not on_gpu:
        return tl.float32
    return TRITON_DTYPES[dtype]


def _with_contiguous_channels(x: torch.Tensor) -> torch.Tensor:
    return x if x.stride(-1) == 1 else x.contiguous()


def rope_cached_attention_triton(
    q: Queries,
    k: Keys,
    v: Values,
    call: AttentionCall,
    cache_k: CacheBuffer | None = None,
    cache_v: CacheBuffer | None = None,
) -> AttentionOutput:
    """Fused RoPE + KV-cache write + two-range flash attention; the reference's contract."""
    check_attention_call(q, k, v, call, cache_k, cache_v)
    batch, tokens, heads, head_dim = q.shape
    if not kernel_supports(head_dim, q.dtype):
        raise AttentionCallError(
            f"the Triton kernel takes fp16/bf16/fp32 and positive even head dims; got "
            f"head_dim={head_dim}, {q.dtype}: use another backend"
        )
    for name, cache in (("cache_k", cache_k), ("cache_v", cache_v)):
        if cache is not None and cache.stride(-1) != 1:
            raise AttentionCallError(f"{name} must have contiguous channels (stride 1 on Dh)")
    q, k, v = (_with_contiguous_channels(x) for x in (q, k, v))

    rope, grid, frame_offset, read_len = call.rope, call.grid, call.frame_offset, call.read_len
    written = call.written_rows(tokens)
    # Writing in place is only safe when the rows written are not among the rows read.
    writes_in_place = written is not None and written.start >= read_len
    if writes_in_place:
        own_k, own_v = cache_k[:, written], cache_v[:, written]
        write_rotated_keys(k, rope, grid, frame_offset, keys_out=own_k, v=v, values_out=own_v)
    else:
        own_k, own_v = torch.empty_like(k), v
        write_rotated_keys(k, rope, grid, frame_offset, keys_out=own_k)

    # With nothing to read, the cache pointers are never dereferenced; own_k stands in.
    read_k = cache_k if read_len > 0 else own_k
    read_v = cache_v if read_len > 0 else own_v
    output = torch.empty_like(q)
    cos, sin = (table.to(q.device) for table in rope.float32_tables)
    _frames, rows, cols = grid
    frame_pairs, row_pairs, _ = rope.axis_pairs
    dot_dtype = _dot_operand_dtype(q.dtype, q.is_cuda)
    arguments = (
        q, *token_strides(q), read_k, *token_strides(read_k), read_v, *token_strides(read_v),
        own_k, *token_strides(own_k), own_v, *token_strides(own_v),
        output, *token_strides(output),
        cos, sin, heads, tokens, read_len, frame_offset, rows, cols, LOG2_E / head_dim**0.5,
    )  # fmt: skip
    constants = {
        "HEAD_DIM": head_dim,
        "BLOCK_D": padded_head_dim(head_dim),
        "FRAME_PAIRS": frame_pairs,
        "ROW_PAIRS": row_pairs,
        "DOT_DTYPE": dot_dtype,
        # fp32 operands are the parity path: no TF32 rounding of the dot products.
        "DOT_PRECISION": "ieee" if dot_dtype == tl.float32 else "tf32",
    }
    if q.is_cuda:
        launch_grid = lambda meta: (triton.cdiv(tokens, meta["BLOCK_M"]), batch * heads)
        _tuned_attention_kernel[launch_grid](*arguments, **constants)
    else:
        launch_grid = (triton.cdiv(tokens, INTERPRETER_TILE), batch * heads)
        _rope_cached_attention_kernel[launch_grid](
            *arguments, **constants, BLOCK_M=INTERPRETER_TILE, BLOCK_N=INTERPRETER_TILE
        )

    if written is not None and not writes_in_place:
        cache_k[:, written] = own_k
        cache_v[:, written] = v
    return output
