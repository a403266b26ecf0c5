"""Wan2.1 3-axis rotary position embedding: the table, the token positions, the float64 reference.

Self-attention of the causal Wan DiT rotates q and k after their RMSNorm and before attention
(SPEC-inspatio-world.md §3 "RoPE"). This module holds the one description of that rotation that
every attention backend shares: the Triton kernel gathers cos/sin from :class:`RopeTable` by
token position, and the other backends rotate with :func:`apply_rope` first. It follows the
official ``rope_params`` / ``causal_rope_apply`` (``wan/modules/model.py`` and
``wan/modules/causal_model.py``, v1 and v1.5).

Convention: with head dim ``d`` there are ``c = d/2`` complex pairs made of adjacent channels
(2i, 2i+1). The pairs split as [c − 2⌊c/3⌋ frame, ⌊c/3⌋ row, ⌊c/3⌋ col] (22/21/21 for d=128).
Each axis has its own frequency ladder ``θ^(−arange(0, n, 2)/n)`` with n = d − 4⌊d/6⌋ for the
frame axis and n = 2⌊d/6⌋ for rows and columns. A token at raster index (f, h, w) of its call
sits at positions (frame_offset + f, h, w).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import Annotated

import torch
from einops import rearrange
from torch import Tensor

from ..core.types import Keys, Queries

ROPE_THETA = 10_000.0
# Official `init_freqs` builds every axis table with 1024 positions.
ROPE_MAX_POSITIONS = 1024
AXES = 3  # frame, row, column
# Grids a model meets per block: context of 1 or 2 blocks, the noisy block, a few latent sizes.
GRIDS_REMEMBERED = 8

RopeCos = Annotated[Tensor, "P Dh/2 float64 cos(position × frequency) per complex pair"]
RopeSin = Annotated[Tensor, "P Dh/2 float64 sin(position × frequency) per complex pair"]
TokenPositions = Annotated[Tensor, "N Dh/2 int64 position of each token on each pair's axis"]
TokenRotations = Annotated[Tensor, "N Dh/2 complex128 rotation of each token's pairs"]
TokenGrid = tuple[int, int, int]  # (frames, rows, cols) of a call's tokens, raster order (f, h, w)


class RopeInputError(ValueError):
    """A RoPE argument that cannot describe the tokens it is applied to."""


def axis_pair_counts(head_dim: int) -> tuple[int, int, int]:
    """Complex pairs given to the (frame, row, col) axes: [c − 2⌊c/3⌋, ⌊c/3⌋, ⌊c/3⌋]."""
    if head_dim <= 0 or head_dim % 2:
        raise RopeInputError(
            f"head_dim={head_dim}: RoPE pairs adjacent channels, so the head dim must be a "
            "positive even number (128 for the released model)"
        )
    pairs = head_dim // 2
    spatial = pairs // AXES
    return pairs - 2 * spatial, spatial, spatial


def axis_frequencies(pair_count: int) -> Tensor:
    """``θ^(−arange(0, n, 2)/n)`` with n = 2·pair_count, in float64 like ``rope_params``."""
    ladder_width = 2 * pair_count
    exponents = torch.arange(0, ladder_width, 2, dtype=torch.float64) / ladder_width
    return 1.0 / torch.pow(ROPE_THETA, exponents)


@dataclass(frozen=True, eq=False)  # hashed by identity: per-grid rotations are memoised per table
class RopeTable:
    """cos and sin of ``position × frequency`` for every position and complex pair, float64.

    Column i belongs to the axis that owns pair i (frame pairs first, then row, then column),
    exactly the official ``freqs`` table as real and imaginary parts. Build it with
    :meth:`for_head_dim`; move it once with :meth:`to` so no call copies it across devices.
    """

    cos: RopeCos
    sin: RopeSin
    axis_pairs: tuple[int, int, int]

    @classmethod
    def for_head_dim(cls, head_dim: int, max_positions: int = ROPE_MAX_POSITIONS) -> RopeTable:
        axis_pairs = axis_pair_counts(head_dim)
        frequencies = torch.cat([axis_frequencies(pairs) for pairs in axis_pairs])
        positions = torch.arange(max_positions, dtype=torch.float64)
        angles = torch.outer(positions, frequencies)
        return cls(cos=torch.cos(angles), sin=torch.sin(angles), axis_pairs=axis_pairs)

    @property
    def head_dim(self) -> int:
        return 2 * sum(self.axis_pairs)

    @property
    def max_positions(self) -> int:
        return self.cos.shape[0]

    def to(self, device: torch.device | str) -> RopeTable:
        return RopeTable(self.cos.to(device), self.sin.to(device), self.axis_pairs)

    @cached_property
    def float32_tables(self) -> tuple[Tensor, Tensor]:
        """(cos, sin) cast to float32 once, for the kernel's gathers."""
        return self.cos.float(), self.sin.float()


def check_rope_call(
    rope: RopeTable, head_dim: int, grid: TokenGrid, frame_offset: int, tokens: int
) -> None:
    """Raise :class:`RopeInputError` unless ``rope`` can rotate ``tokens`` laid out as ``grid``."""
    if rope.head_dim != head_dim:
        raise RopeInputError(
            f"rope table was built for head_dim={rope.head_dim} but q/k have head_dim={head_dim}: "
            "build it with RopeTable.for_head_dim(q.shape[-1])"
        )
    frames, rows, cols = grid
    if min(grid) <= 0 or frames * rows * cols != tokens:
        raise RopeInputError(
            f"grid={grid} describes {frames * rows * cols} tokens but q/k have {tokens}: pass "
            "(latent frames, latent rows / 2, latent cols / 2) of the tokens in this call"
        )
    if frame_offset < 0:
        raise RopeInputError(f"frame_offset={frame_offset} must be >= 0")
    largest = max(frame_offset + frames, rows, cols)
    if largest > rope.max_positions:
        raise RopeInputError(
            f"positions up to {largest - 1} exceed the rope table ({rope.max_positions} "
            "positions): build the table with a larger max_positions"
        )


def token_positions(
    rope: RopeTable, grid: TokenGrid, frame_offset: int, device: torch.device
) -> TokenPositions:
    """Row of the table each (token, pair) reads: its frame, row or column, by the pair's axis."""
    frames, rows, cols = grid
    frame = torch.arange(frame_offset, frame_offset + frames, device=device)
    row = torch.arange(rows, device=device)
    col = torch.arange(cols, device=device)
    per_axis = torch.stack(torch.meshgrid(frame, row, col, indexing="ij"), dim=-1)
    per_axis = rearrange(per_axis, "f h w position_axis -> (f h w) position_axis")
    pair_axis = torch.repeat_interleave(
        torch.arange(AXES, device=device), torch.tensor(rope.axis_pairs, device=device)
    )
    return per_axis[:, pair_axis]


@lru_cache(maxsize=GRIDS_REMEMBERED)
def token_rotations(rope: RopeTable, grid: TokenGrid, frame_offset: int) -> TokenRotations:
    """``cos + i·sin`` of every token's pairs, on the table's device; memoised per grid."""
    positions = token_positions(rope, grid, frame_offset, rope.cos.device)
    pair_index = torch.arange(rope.head_dim // 2, device=rope.cos.device)
    return torch.complex(rope.cos[positions, pair_index], rope.sin[positions, pair_index])


def apply_rope(
    x: Queries | Keys, rope: RopeTable, grid: TokenGrid, frame_offset: int
) -> Queries | Keys:
    """Rotate ``x [B, N, Hd, Dh]`` in float64 and cast back to its dtype, as the official code.

    The cast back (``type_as``) matters: attention then sees bf16 keys in a bf16 model, and the
    KV cache stores exactly these rounded values.
    """
    _batch, tokens, _heads, head_dim = x.shape
    check_rope_call(rope, head_dim, grid, frame_offset, tokens)
    rotation = token_rotations(rope, tuple(grid), frame_offset).to(x.device)
    rotation = rearrange(rotation, "n c -> 1 n 1 c")
    pairs = rearrange(x.to(torch.float64), "b n hd (c two) -> b n hd c two", two=2)
    rotated = torch.view_as_real(torch.view_as_complex(pairs.contiguous()) * rotation)
    return rearrange(rotated, "b n hd c two -> b n hd (c two)").to(x.dtype)
