"""RoPE + KV-cache self-attention of one causal Wan DiT layer: the contract and its reference.

Every self-attention call of the DiT goes through :func:`rope_cached_attention_reference` semantics
(SPEC-inspatio-world.md §3 "Self-attention with the cache", official ``CausalWanSelfAttention``
in ``wan/modules/causal_model.py``):

- q and k (after RMSNorm) are rotated with the 3-axis RoPE at positions (frame_offset + f, h, w);
- keys and values attended are ``cat(cache[:, :read_len], rotated own k / own v)``, the cache
  read *before* this call writes anything;
- when ``write_offset`` is given the rotated k and the v go to ``cache[:, write_offset:+N]``;
- no mask, softmax scale 1/sqrt(Dh).

An :class:`AttentionCall` holds the placement and cache use of one call. The prefill of a block is
``read_len=0, write_offset=0`` (context attends to itself and fills the cache); the denoise steps
are ``read_len=n_ctx, write_offset=None``. The Triton kernel (``rope_attention_triton.py``)
computes the same function fused; the flash/sage/SDPA backends (``attention_backends.py``) run
:func:`rope_cached_attention_reference` with their own attention core.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

import torch
from einops import einsum
from torch import Tensor

from ..core.types import Keys, Queries, Values
from .rope import RopeTable, TokenGrid, apply_rope, check_rope_call

CacheBuffer = Annotated[Tensor, "B Nc Hd Dh fixed-capacity rotated keys or values of one layer"]
AttentionOutput = Annotated[Tensor, "B N Hd Dh attention output per head, q's dtype"]
AttendFunction = Callable[[Queries, Keys, Values], AttentionOutput]


class AttentionCallError(ValueError):
    """Arguments of a self-attention call that do not fit together."""


@dataclass(frozen=True)
class AttentionCall:
    """Where one call's tokens sit on the RoPE axes and which KV-cache rows it reads and writes.

    Every layer of one DiT call shares it; only the layer's cache buffers differ. ``grid`` is
    (frames, rows, cols) of the call's tokens in raster order, placed at RoPE positions
    ``(frame_offset + f, row, col)``. The keys attended are ``cache[:, :read_len]`` then the call's
    own; ``write_offset`` (None: no write) is the first cache row the rotated keys and the values
    go to.
    """

    rope: RopeTable
    grid: TokenGrid
    frame_offset: int
    read_len: int
    write_offset: int | None

    @property
    def uses_cache(self) -> bool:
        return self.read_len > 0 or self.write_offset is not None

    def written_rows(self, tokens: int) -> slice | None:
        """The cache rows this call's ``tokens`` keys and values are written to (None: no write)."""
        if self.write_offset is None:
            return None
        return slice(self.write_offset, self.write_offset + tokens)


def check_attention_call(
    q: Queries,
    k: Keys,
    v: Values,
    call: AttentionCall,
    cache_k: CacheBuffer | None,
    cache_v: CacheBuffer | None,
) -> None:
    """Raise :class:`AttentionCallError` (or ``RopeInputError``) naming the argument at fault."""
    if q.dim() != 4 or q.shape != k.shape or q.shape != v.shape:
        raise AttentionCallError(
            f"q, k, v must share the shape [B, N, Hd, Dh]; got {tuple(q.shape)}, "
            f"{tuple(k.shape)}, {tuple(v.shape)}"
        )
    if not (q.dtype == k.dtype == v.dtype):
        raise AttentionCallError(f"q, k, v dtypes differ: {q.dtype}, {k.dtype}, {v.dtype}")
    batch, tokens, heads, head_dim = q.shape
    check_rope_call(call.rope, head_dim, call.grid, call.frame_offset, tokens)
    read_len, write_offset = call.read_len, call.write_offset
    if read_len < 0:
        raise AttentionCallError(f"read_len={read_len} must be >= 0")
    if not call.uses_cache:
        return
    if cache_k is None or cache_v is None:
        raise AttentionCallError(
            f"read_len={read_len}, write_offset={write_offset} use the KV cache but cache_k or "
            "cache_v is None: pass the layer's fixed-capacity buffers"
        )
    expected = (batch, heads, head_dim)
    for name, cache in (("cache_k", cache_k), ("cache_v", cache_v)):
        if cache.dim() != 4 or (cache.shape[0], cache.shape[2], cache.shape[3]) != expected:
            raise AttentionCallError(
                f"{name} has shape {tuple(cache.shape)}; expected [B={batch}, capacity, "
                f"Hd={heads}, Dh={head_dim}] to match q"
            )
        if cache.dtype != q.dtype or cache.device != q.device:
            raise AttentionCallError(
                f"{name} is {cache.dtype} on {cache.device} but q is {q.dtype} on {q.device}: "
                "allocate the cache in the model's dtype on its device"
            )
    capacity = cache_k.shape[1]
    if cache_v.shape[1] != capacity:
        raise AttentionCallError(
            f"cache_k holds {capacity} rows but cache_v {cache_v.shape[1]}: allocate them alike"
        )
    if read_len > capacity:
        raise AttentionCallError(f"read_len={read_len} exceeds the cache capacity {capacity}")
    if write_offset is not None and not 0 <= write_offset <= capacity - tokens:
        raise AttentionCallError(
            f"write_offset={write_offset} with {tokens} tokens does not fit the cache capacity "
            f"{capacity}: the rows written must lie in [0, {capacity})"
        )


def attend_float32(q: Queries, k: Keys, v: Values) -> AttentionOutput:
    """Unmasked softmax attention, math in float32 whatever the input dtype; output in q's dtype."""
    scale = 1.0 / math.sqrt(q.shape[-1])
    scores = einsum(q.float(), k.float(), "b n hd dh, b m hd dh -> b hd n m") * scale
    weights = torch.softmax(scores, dim=-1)
    return einsum(weights, v.float(), "b hd n m, b m hd dh -> b n hd dh").to(q.dtype)


def rope_cached_attention_reference(
    q: Queries,
    k: Keys,
    v: Values,
    call: AttentionCall,
    cache_k: CacheBuffer | None = None,
    cache_v: CacheBuffer | None = None,
    *,
    attend: AttendFunction = attend_float32,
) -> AttentionOutput:
    """The contract step by step: float64 RoPE, concatenated keys, ``attend``, then the write.

    With the default float32 ``attend`` this is the plain PyTorch definition the fused kernel is
    tested against; the flash/sage/SDPA backends pass their own attention core.
    """
    check_attention_call(q, k, v, call, cache_k, cache_v)
    rotated_q = apply_rope(q, call.rope, call.grid, call.frame_offset)
    rotated_k = apply_rope(k, call.rope, call.grid, call.frame_offset)
    keys, values = rotated_k, v
    if call.read_len > 0:
        keys = torch.cat([cache_k[:, : call.read_len], rotated_k], dim=1)
        values = torch.cat([cache_v[:, : call.read_len], v], dim=1)
    output = attend(rotated_q, keys, values)
    written = call.written_rows(q.shape[1])
    if written is not None:
        # After attending: the cache rows read above are the ones from before this call.
        cache_k[:, written] = rotated_k
        cache_v[:, written] = v
    return output
