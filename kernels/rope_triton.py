"""Triton 3-axis RoPE: a rotated tile of q or k, and the pass that writes rotated keys.

Part of the fused self-attention kernel (``rope_attention_triton.py``), which shares the program
layout of :func:`program_tokens`, rotates its query tile with :func:`rotated_tile` and rotates
the call's own keys once with :func:`write_rotated_keys`, straight into the KV cache during a
prefill. The plain PyTorch
definition of the rotation is :func:`kernels.rope.apply_rope` (official ``causal_rope_apply``).

Pairs of adjacent channels (2i, 2i+1) rotate as complex numbers. The kernel keeps the natural
channel order and reads each channel's partner (``d ^ 1``) with a second load, so a rotated tile
is ``x·cos + sign·partner·sin`` over the full head dim and feeds one ``tl.dot``. Tiles span
``BLOCK_D`` channels, the head dim padded to a power of two (``tl.arange`` needs one); every load
and store masks ``channel < HEAD_DIM``, so the padded channels read as zero and are never
written, and they add nothing to a dot product. cos and sin are
gathered from the :class:`RopeTable` (cast to float32) at the position of each (token, pair):
``frame_offset + f``, ``h`` or ``w`` by the pair's axis, computed from the raster token index.
The rotation runs in float32 where the official one runs in float64; the difference is below
one float32 ulp before the result is rounded to the input dtype, as the official code does.

This module imports Triton at import time; import it through ``attention_backends`` only.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..core.types import Keys, Values
from .rope import RopeTable, TokenGrid

ROPE_TILE = 64  # tokens per program of the key pass (memory bound: any size works)
MIN_DOT_SIZE = 16  # tl.dot needs every dimension >= 16, the padded head dim included


@triton.jit
def program_tokens(heads, tokens, BLOCK: tl.constexpr):
    """(batch, head, token indices, token validity) of this program.

    Launch grids put token tiles of BLOCK on axis 0 and batch × heads on axis 1.
    """
    batch_head = tl.program_id(1)
    token_index = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    return batch_head // heads, batch_head % heads, token_index, token_index < tokens


@triton.jit
def rotated_tile(
    x_ptr, stride_token, token_index, token_valid, cos_ptr, sin_ptr, frame_offset, rows, cols,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, FRAME_PAIRS: tl.constexpr,
    ROW_PAIRS: tl.constexpr,
):  # fmt: skip
    """[tile, BLOCK_D] rows of x rotated by their (frame_offset + f, h, w) positions, fp32.

    Channels from HEAD_DIM to BLOCK_D (padding) are zero.
    """
    channel = tl.arange(0, BLOCK_D)
    pair = channel // 2
    # Even channel = real part: re·cos − im·sin; odd = imaginary part: im·cos + re·sin.
    partner_sign = tl.where(channel % 2 == 0, -1.0, 1.0)
    row_offsets = token_index[:, None] * stride_token
    # HEAD_DIM is even, so a real channel's partner (d ^ 1) is a real channel too.
    load_mask = token_valid[:, None] & (channel < HEAD_DIM)[None, :]
    x = tl.load(x_ptr + row_offsets + channel[None, :], mask=load_mask, other=0.0)
    partner = tl.load(x_ptr + row_offsets + (channel ^ 1)[None, :], mask=load_mask, other=0.0)

    frame = frame_offset + token_index // (rows * cols)
    row = (token_index // cols) % rows
    col = token_index % cols
    position = tl.where(
        pair[None, :] < FRAME_PAIRS,
        frame[:, None],
        tl.where(pair[None, :] < FRAME_PAIRS + ROW_PAIRS, row[:, None], col[:, None]),
    )
    table_offsets = position * (HEAD_DIM // 2) + pair[None, :]
    cos = tl.load(cos_ptr + table_offsets, mask=load_mask, other=1.0)
    sin = tl.load(sin_ptr + table_offsets, mask=load_mask, other=0.0)
    return x.to(tl.float32) * cos + partner_sign[None, :] * partner.to(tl.float32) * sin


@triton.jit
def _rope_keys_kernel(
    k_ptr, k_stride_b, k_stride_n, k_stride_h,
    v_ptr, v_stride_b, v_stride_n, v_stride_h,
    k_out_ptr, ko_stride_b, ko_stride_n, ko_stride_h,
    v_out_ptr, vo_stride_b, vo_stride_n, vo_stride_h,
    cos_ptr, sin_ptr, heads, tokens, frame_offset, rows, cols,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, FRAME_PAIRS: tl.constexpr,
    ROW_PAIRS: tl.constexpr, BLOCK: tl.constexpr, COPY_VALUES: tl.constexpr,
):  # fmt: skip
    b, h, token_index, token_valid = program_tokens(heads, tokens, BLOCK)
    rows_out = token_index[:, None]
    channel = tl.arange(0, BLOCK_D)[None, :]
    in_bounds = token_valid[:, None] & (channel < HEAD_DIM)

    rotated = rotated_tile(
        k_ptr + b * k_stride_b + h * k_stride_h, k_stride_n, token_index, token_valid,
        cos_ptr, sin_ptr, frame_offset, rows, cols, HEAD_DIM, BLOCK_D, FRAME_PAIRS, ROW_PAIRS,
    )  # fmt: skip
    k_out = k_out_ptr + b * ko_stride_b + h * ko_stride_h + rows_out * ko_stride_n + channel
    tl.store(k_out, rotated.to(k_out_ptr.dtype.element_ty), mask=in_bounds)
    if COPY_VALUES:
        v_in = v_ptr + b * v_stride_b + h * v_stride_h + rows_out * v_stride_n + channel
        v_out = v_out_ptr + b * vo_stride_b + h * vo_stride_h + rows_out * vo_stride_n + channel
        tl.store(v_out, tl.load(v_in, mask=in_bounds), mask=in_bounds)


def padded_head_dim(head_dim: int) -> int:
    """``BLOCK_D``: the head dim rounded up to a power of two, at least :data:`MIN_DOT_SIZE`."""
    return max(MIN_DOT_SIZE, triton.next_power_of_2(head_dim))


def token_strides(x: torch.Tensor) -> tuple[int, int, int]:
    """(batch, token, head) strides of a ``[B, N, Hd, Dh]`` tensor with contiguous channels."""
    return x.stride(0), x.stride(1), x.stride(2)


def write_rotated_keys(
    k: Keys,
    rope: RopeTable,
    grid: TokenGrid,
    frame_offset: int,
    *,
    keys_out: Keys,
    v: Values | None = None,
    values_out: Values | None = None,
) -> None:
    """Rotate ``k`` into ``keys_out`` (e.g. cache rows), and copy ``v`` into ``values_out`` if given.

    Every tensor is ``[B, N, Hd, Dh]`` with contiguous channels; ``keys_out`` may be a row slice
    of a larger buffer. The rotated keys are rounded to ``keys_out``'s dtype.
    """
    batch, tokens, heads, head_dim = k.shape
    copy_values = values_out is not None
    cos, sin = (table.to(k.device) for table in rope.float32_tables)
    frame_pairs, row_pairs, _ = rope.axis_pairs
    _frames, rows, cols = grid
    # Without values to copy, the value pointers are never read; the keys stand in for them.
    v, values_out = (v, values_out) if copy_values else (k, keys_out)
    _rope_keys_kernel[(triton.cdiv(tokens, ROPE_TILE), batch * heads)](
        k, *token_strides(k), v, *token_strides(v),
        keys_out, *token_strides(keys_out), values_out, *token_strides(values_out),
        cos, sin, heads, tokens, frame_offset, rows, cols,
        HEAD_DIM=head_dim, BLOCK_D=padded_head_dim(head_dim), FRAME_PAIRS=frame_pairs,
        ROW_PAIRS=row_pairs, BLOCK=ROPE_TILE, COPY_VALUES=copy_values,
    )  # fmt: skip
