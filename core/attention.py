"""Attention for the causal Wan DiT: the one entry point of its self- and cross-attention.

Place in the data flow: every self-attention call of :mod:`core.wan.dit` (the KV-cache prefill of
the context and the denoising steps of a block) goes through :func:`rope_cached_attention`, and
every cross-attention call over the text through :func:`attention`. Nothing else in the pack
computes attention for the DiT. Which backend runs is chosen here, once per process
(:func:`set_backend`, called by the loader node), among those of ``kernels/``: the fused Triton
kernel (RoPE + KV-cache write + attention in one pass), FlashAttention 3/2, SageAttention and
SDPA. ``"auto"`` takes the fastest that runs on the tensors' device and dtype.

The RoPE table and the float64 rotation are those of ``kernels/rope.py`` (official
``rope_params`` / ``causal_rope_apply`` of ``wan/modules/model.py`` and
``wan/modules/causal_model.py``): adjacent channel pairs rotate as complex numbers, the pairs
split ``c − 2⌊c/3⌋ / ⌊c/3⌋ / ⌊c/3⌋`` over (frame, row, column), each axis with its own ladder.
"""

from __future__ import annotations

import torch

from ..kernels import AttentionCall, RopeTable, apply_rope, attend, dispatch, rope_table
from ..kernels.attention_backends import BACKEND_PREFERENCE, backend_installed, backend_runs_on
from ..kernels.rope import ROPE_MAX_POSITIONS
from .types import Keys, Queries, Values

__all__ = [
    "AttentionBackendError",
    "AttentionCall",
    "RopeTable",
    "apply_rope",
    "attention",
    "available_backends",
    "model_rope_table",
    "resolve_backend",
    "rope_cached_attention",
    "set_backend",
]

AUTO = "auto"

_selected_backend: str = AUTO


class AttentionBackendError(ValueError):
    """An attention backend that does not exist here or cannot run on the model's device/dtype."""


def model_rope_table(head_dim: int, device: torch.device) -> RopeTable:
    """The RoPE table of a model with this head dim, built once per device (official 1024 positions)."""
    return rope_table(head_dim, ROPE_MAX_POSITIONS, device)


def available_backends() -> list[str]:
    """Backend names a user may pick on this installation (``"auto"`` first), for the loader widget."""
    return [AUTO, *(name for name in BACKEND_PREFERENCE if backend_installed(name))]


def set_backend(name: str) -> None:
    """Select the attention backend for every DiT in the process (the loader node calls this)."""
    if name not in available_backends():
        raise AttentionBackendError(
            f"attention backend {name!r} is not available; choose one of {available_backends()}"
        )
    global _selected_backend
    _selected_backend = name


def resolve_backend(device: torch.device, dtype: torch.dtype) -> str | None:
    """The backend name handed to ``kernels`` (None: the kernels pick the fastest for each call)."""
    if _selected_backend == AUTO:
        return None
    if not backend_runs_on(_selected_backend, device, dtype):
        raise AttentionBackendError(
            f"attention backend {_selected_backend!r} cannot run on {device} in {dtype}: "
            "choose 'auto' or another backend"
        )
    return _selected_backend


def attention(q: Queries, k: Keys, v: Values) -> Queries:
    """Plain attention, no mask, no RoPE (cross-attention over the text). ``[B, N, Hd, Dh]`` in and out."""
    return attend(q, k, v, backend=resolve_backend(q.device, q.dtype))


def rope_cached_attention(
    q: Queries,
    k: Keys,
    v: Values,
    call: AttentionCall,
    cache_k: Keys | None = None,
    cache_v: Values | None = None,
) -> Queries:
    """Self-attention of one DiT call through the layer's fixed-capacity KV cache.

    q, k, v: ``[B, N, Hd, Dh]`` (q/k after RMSNorm, BEFORE RoPE). ``call.grid`` = (frames, rows,
    cols) of the N tokens in raster order; RoPE positions are ``(call.frame_offset + f, row, col)``.
    Keys/values attended = ``cat(cache[:, :read_len], rotated own k / own v)``, read BEFORE
    writing. If ``call.write_offset`` is not None, the rotated k and the v are written to
    ``cache[:, write_offset : write_offset + N]``. No mask; softmax scale ``1/sqrt(Dh)``.
    Returns ``[B, N, Hd, Dh]``.

    Prefill: ``read_len=0, write_offset=0``. Denoise: ``read_len=n_ctx, write_offset=None``.
    """
    backend = resolve_backend(q.device, q.dtype)
    return dispatch(q, k, v, call, cache_k, cache_v, backend=backend)
