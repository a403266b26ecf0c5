"""Attention for the causal Wan DiT: 3-axis RoPE, the cached self-attention and the dispatch point.

Place in the data flow: every self-attention call of :mod:`core.wan.dit` (the KV-cache prefill of
the context and the four denoising steps of a block) goes through :func:`rope_cached_attention`,
and every cross-attention call over the text through :func:`attention`. Nothing else in the pack
computes attention for the DiT, so a faster backend (a fused Triton kernel, flash-attn,
SageAttention) plugs in here as one more :class:`Backend` in ``_BACKENDS``; the DiT does not change.

Follows ``wan/modules/causal_model.py`` (``causal_rope_apply``, ``CausalWanSelfAttention``) and
``wan/modules/model.py`` (``rope_params``) of the official InSpatio-World v1 code: adjacent channel
pairs rotate as complex numbers, in float64, with per-axis frequency ladders split
``c − 2⌊c/3⌋ / ⌊c/3⌋ / ⌊c/3⌋`` over (frame, row, column).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import Tensor

from .types import Keys, Queries, RopeAngles, Values

ROPE_THETA = 10_000.0
ROPE_MAX_POSITIONS = 1024  # the official tables cover 1024 positions per axis
AXES_SHARING_PAIRS = 3  # frame, row and column split the complex pairs of a head
ANGLE_GRIDS_REMEMBERED = 8  # context of 1 or 2 blocks, the noisy block, and a few latent sizes


class AttentionBackendError(ValueError):
    """An attention backend that does not exist or cannot run here."""


@dataclass(frozen=True, eq=False)  # compared and hashed by identity: angles() is memoised per table
class RopeTable:
    """Per-axis RoPE rotations of one head dim, built once per model (complex128, CPU or device).

    ``frame``, ``row`` and ``col`` are ``[ROPE_MAX_POSITIONS, pairs]``: entry ``[p, i]`` is
    ``exp(i·p·θ^(−2i/axis_dim))``. Each axis has its own frequency ladder: the official code builds
    three separate tables (``rope_params(1024, dt)``, ``rope_params(1024, dh)`` twice) and
    concatenates them, so the row ladder restarts at frequency 1 instead of continuing the frame's.
    """

    frame: Tensor
    row: Tensor
    col: Tensor

    @classmethod
    def for_head_dim(cls, head_dim: int, max_positions: int = ROPE_MAX_POSITIONS) -> RopeTable:
        if head_dim % 2:
            raise ValueError(f"RoPE needs an even head dim (channel pairs), got head_dim={head_dim}")
        pairs = head_dim // 2
        spatial_pairs = pairs // AXES_SHARING_PAIRS
        frame_pairs = pairs - 2 * spatial_pairs
        if spatial_pairs == 0:
            raise ValueError(
                f"head_dim={head_dim} is too small for 3-axis RoPE: use at least "
                f"{2 * AXES_SHARING_PAIRS} channels per head"
            )
        return cls(
            frame=_rotation_ladder(max_positions, 2 * frame_pairs),
            row=_rotation_ladder(max_positions, 2 * spatial_pairs),
            col=_rotation_ladder(max_positions, 2 * spatial_pairs),
        )

    @property
    def max_positions(self) -> int:
        return self.frame.shape[0]

    def to(self, device: torch.device | str) -> RopeTable:
        return RopeTable(self.frame.to(device), self.row.to(device), self.col.to(device))

    @functools.lru_cache(maxsize=ANGLE_GRIDS_REMEMBERED)
    def angles(self, grid: tuple[int, int, int], frame_offset: int) -> RopeAngles:
        """Rotation of every token of a ``(frames, rows, cols)`` grid in raster order ``(f, h, w)``.

        Memoised: a block uses the same few grids in every layer of every call.
        """
        frames, rows, cols = grid
        if frame_offset < 0 or frame_offset + frames > self.max_positions:
            raise ValueError(
                f"RoPE frame positions {frame_offset}..{frame_offset + frames - 1} are outside the "
                f"table of {self.max_positions} positions"
            )
        if rows > self.max_positions or cols > self.max_positions:
            raise ValueError(
                f"latent grid {rows}x{cols} tokens exceeds the RoPE table of {self.max_positions} "
                "positions per axis: use a smaller resolution"
            )
        frame = repeat(self.frame[frame_offset : frame_offset + frames], "f c -> f h w c", h=rows, w=cols)
        row = repeat(self.row[:rows], "h c -> f h w c", f=frames, w=cols)
        col = repeat(self.col[:cols], "w c -> f h w c", f=frames, h=rows)
        return rearrange(torch.cat([frame, row, col], dim=-1), "f h w c -> (f h w) c")


def _rotation_ladder(max_positions: int, axis_dim: int) -> Tensor:
    frequencies = 1.0 / torch.pow(
        ROPE_THETA, torch.arange(0, axis_dim, 2, dtype=torch.float64, device="cpu") / axis_dim
    )
    phases = torch.outer(torch.arange(max_positions, dtype=torch.float64, device="cpu"), frequencies)
    return torch.polar(torch.ones_like(phases), phases)


def apply_rope(x: Queries, rope: RopeTable, grid: tuple[int, int, int], frame_offset: int) -> Queries:
    """Rotate ``x`` ``[B, N, Hd, Dh]`` at positions ``(frame_offset + f, row, col)``."""
    if x.shape[1] != grid[0] * grid[1] * grid[2]:
        raise ValueError(f"{x.shape[1]} tokens do not fill the RoPE grid {grid} (frames, rows, cols)")
    return rotate(x, rope.angles(grid, frame_offset))


def rotate(x: Queries, angles: RopeAngles) -> Queries:
    """Multiply the channel pairs of ``x`` by per-token rotations ``[N, Dh/2]``.

    Computed in float64 and cast back, like the official ``causal_rope_apply``: in bf16 the
    rotation of the high-frequency pairs would lose most of its mantissa.
    """
    pairs = rearrange(x.to(torch.float64), "b n hd (c two) -> b n hd c two", two=2).contiguous()
    rotated = torch.view_as_real(torch.view_as_complex(pairs) * rearrange(angles.to(x.device), "n c -> 1 n 1 c"))
    return rearrange(rotated, "b n hd c two -> b n hd (c two)").to(x.dtype)


# --- backends -------------------------------------------------------------------------------------


def _sdpa_attention(q: Queries, k: Keys, v: Values) -> Queries:
    out = F.scaled_dot_product_attention(
        rearrange(q, "b n hd dh -> b hd n dh"),
        rearrange(k, "b n hd dh -> b hd n dh"),
        rearrange(v, "b n hd dh -> b hd n dh"),
    )
    return rearrange(out, "b hd n dh -> b n hd dh")


def _sdpa_rope_cached_attention(
    q: Queries,
    k: Keys,
    v: Values,
    *,
    rope: RopeTable,
    grid: tuple[int, int, int],
    frame_offset: int,
    cache_k: Tensor | None,
    cache_v: Tensor | None,
    read_len: int,
    write_offset: int | None,
) -> Queries:
    angles = rope.angles(grid, frame_offset)
    rotated_q = rotate(q, angles)
    rotated_k = rotate(k, angles)
    if read_len > 0:
        # Read before writing: a write may land inside the rows being read.
        keys = torch.cat([cache_k[:, :read_len], rotated_k], dim=1)
        values = torch.cat([cache_v[:, :read_len], v], dim=1)
    else:
        keys, values = rotated_k, v
    out = _sdpa_attention(rotated_q, keys, values)
    if write_offset is not None:
        cache_k[:, write_offset : write_offset + k.shape[1]] = rotated_k
        cache_v[:, write_offset : write_offset + v.shape[1]] = v
    return out


@dataclass(frozen=True)
class Backend:
    """One way to compute attention: both entry points, and where it can run."""

    name: str
    rope_cached_attention: Callable[..., Tensor]
    attention: Callable[[Tensor, Tensor, Tensor], Tensor]
    installed: Callable[[], bool]
    runs_on: Callable[[torch.device, torch.dtype], bool]


SDPA = Backend(
    name="sdpa",
    rope_cached_attention=_sdpa_rope_cached_attention,
    attention=_sdpa_attention,
    installed=lambda: True,
    runs_on=lambda device, dtype: True,
)
_BACKENDS: tuple[Backend, ...] = (SDPA,)  # preference order of "auto": fastest first
AUTO = "auto"

_selected_backend: str = AUTO


def available_backends() -> list[str]:
    """Backend names a user may pick on this installation (``"auto"`` first), for the loader widget."""
    return [AUTO, *(backend.name for backend in _BACKENDS if backend.installed())]


def set_backend(name: str) -> None:
    """Select the attention backend for every DiT in the process (the loader node calls this)."""
    if name not in available_backends():
        raise AttentionBackendError(
            f"attention backend {name!r} is not available; choose one of {available_backends()}"
        )
    global _selected_backend
    _selected_backend = name


def resolve_backend(device: torch.device, dtype: torch.dtype) -> Backend:
    """The backend that runs for tensors on ``device`` in ``dtype``: ``"auto"`` picks the fastest."""
    if _selected_backend == AUTO:
        return next(b for b in _BACKENDS if b.installed() and b.runs_on(device, dtype))
    backend = next(b for b in _BACKENDS if b.name == _selected_backend)
    if not backend.runs_on(device, dtype):
        raise AttentionBackendError(
            f"attention backend {backend.name!r} cannot run on {device} in {dtype}: choose 'auto'"
        )
    return backend


def attention(q: Queries, k: Keys, v: Values) -> Queries:
    """Plain attention, no mask, no RoPE (cross-attention over the text). ``[B, N, Hd, Dh]`` in and out."""
    return resolve_backend(q.device, q.dtype).attention(q, k, v)


def rope_cached_attention(
    q: Queries,
    k: Keys,
    v: Values,
    *,
    rope: RopeTable,
    grid: tuple[int, int, int],
    frame_offset: int,
    cache_k: Tensor | None,
    cache_v: Tensor | None,
    read_len: int,
    write_offset: int | None,
) -> Queries:
    """Self-attention of one DiT call through the fixed-capacity KV cache.

    q, k, v: ``[B, N, Hd, Dh]`` (q/k after RMSNorm, BEFORE RoPE). ``grid`` = (frames, rows, cols)
    of the N tokens in raster order; RoPE positions are ``(frame_offset + f, row, col)``.
    Keys/values attended = ``cat(cache[:, :read_len], rotated own k / own v)``, read BEFORE
    writing. If ``write_offset`` is not None, the rotated k and the v are written to
    ``cache[:, write_offset : write_offset + N]``. No mask; softmax scale ``1/sqrt(Dh)``.
    Returns ``[B, N, Hd, Dh]``.

    Prefill: ``read_len=0, write_offset=0``. Denoise: ``read_len=n_ctx, write_offset=None``.
    """
    if q.shape[1] != grid[0] * grid[1] * grid[2]:
        raise ValueError(f"{q.shape[1]} tokens do not fill the RoPE grid {grid} (frames, rows, cols)")
    uses_cache = read_len > 0 or write_offset is not None
    if uses_cache and (cache_k is None or cache_v is None):
        raise ValueError("rope_cached_attention reads or writes the KV cache but got no cache buffers")
    if uses_cache:
        capacity = cache_k.shape[1]
        write_end = 0 if write_offset is None else write_offset + k.shape[1]
        if read_len > capacity or write_end > capacity:
            raise ValueError(
                f"KV cache of {capacity} tokens cannot serve read_len={read_len}, "
                f"write up to {write_end}: allocate the cache for the context length"
            )
    return resolve_backend(q.device, q.dtype).rope_cached_attention(
        q,
        k,
        v,
        rope=rope,
        grid=grid,
        frame_offset=frame_offset,
        cache_k=cache_k,
        cache_v=cache_v,
        read_len=read_len,
        write_offset=write_offset,
    )
