"""The implicit spatiotemporal cache: fixed-capacity self-attention K/V and the per-prompt text K/V.

Place in the data flow: :func:`core.world.prepare_cache` allocates a cache once per prompt and
latent size (the Initialize World Cache node does it ahead of sampling), and every session of the
block sampler (:mod:`core.world`) on that prompt reuses it.
Every block, the context prefill overwrites rows ``[0, n_ctx)`` of each layer with the post-RoPE
keys and the (unrotated) values of the reference block and the previous block's clean prediction;
the four denoising calls then read those rows. The cross-attention K/V of the text are computed
once per prompt and reused by every call.

Follows ``pipeline/causal_inference.py`` (``_initialize_kv_cache``) of the official code: the cache
holds ``CONTEXT_BLOCKS`` blocks of tokens (9360 rows for the released 60×104 latents) and is never
grown. The block being denoised is attended from its own K/V and never stored, so a third block of
rows would only cost memory (0.8 GiB in bf16 for the 1.3B model).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .types import Keys, TextKV, Values

CONTEXT_BLOCKS = 2  # the reference block and the previous block's clean prediction
KEYS_AND_VALUES = 2


@dataclass(frozen=True)
class CacheShape:
    """What fixes the size of a cache: the model's attention geometry and the token budget."""

    num_layers: int
    num_heads: int
    head_dim: int
    batch: int
    capacity_tokens: int
    text_tokens: int

    def self_attention_bytes(self, dtype: torch.dtype) -> int:
        return self._keys_and_values_bytes(self.capacity_tokens, dtype)

    def text_bytes(self, dtype: torch.dtype) -> int:
        return self._keys_and_values_bytes(self.text_tokens, dtype)

    def total_bytes(self, dtype: torch.dtype) -> int:
        return self.self_attention_bytes(dtype) + self.text_bytes(dtype)

    def _keys_and_values_bytes(self, tokens: int, dtype: torch.dtype) -> int:
        """K and V of ``tokens`` rows in every layer: ``[2, B, tokens, Hd, Dh]`` per layer."""
        elements = self.num_layers * KEYS_AND_VALUES * self.batch * tokens
        element_size = torch.empty((), dtype=dtype).element_size()
        return elements * self.num_heads * self.head_dim * element_size


class SpatiotemporalCache:
    """Per-layer K/V buffers ``[B, capacity, Hd, Dh]``, allocated once, plus the prompt's text K/V.

    ``context_tokens`` is the number of valid rows written by the latest prefill; rows past it are
    stale and never read.
    """

    def __init__(
        self, shape: CacheShape, *, dtype: torch.dtype, device: torch.device | str
    ) -> None:
        self.shape = shape
        self.dtype = dtype
        self.device = torch.device(device)
        buffer_shape = (shape.batch, shape.capacity_tokens, shape.num_heads, shape.head_dim)
        self.keys: list[Keys] = [
            torch.zeros(buffer_shape, dtype=dtype, device=device) for _ in range(shape.num_layers)
        ]
        self.values: list[Values] = [
            torch.zeros(buffer_shape, dtype=dtype, device=device) for _ in range(shape.num_layers)
        ]
        self.text: list[TextKV] = []
        self.context_tokens = 0
        self.released = False

    @property
    def capacity_tokens(self) -> int:
        return self.shape.capacity_tokens

    def set_text(self, text_kv: list[TextKV]) -> None:
        """Store the cross-attention K/V of the prompt, one ``[2, B, L, Hd, Dh]`` per layer."""
        if len(text_kv) != self.shape.num_layers:
            raise ValueError(
                f"text K/V for {len(text_kv)} layers given to a {self.shape.num_layers}-layer cache"
            )
        self.text = text_kv

    def mark_prefilled(self, context_tokens: int) -> None:
        if context_tokens > self.capacity_tokens:
            raise ValueError(
                f"a context of {context_tokens} tokens does not fit the cache of {self.capacity_tokens}"
            )
        self.context_tokens = context_tokens

    def release(self) -> None:
        """Drop every buffer and the text K/V now, even while something still refers to the cache
        (a traceback, a host's output cache): a released cache cannot serve a session."""
        self.keys, self.values, self.text = [], [], []
        self.context_tokens = 0
        self.released = True

    def buffers(self) -> list[Tensor]:
        """Every self-attention buffer (to check that none is ever re-allocated)."""
        return [*self.keys, *self.values]
