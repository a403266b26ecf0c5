"""Attention backend selection for the DiT's RoPE + KV-cache self-attention: the one entry point.

``core/attention.py`` calls :func:`dispatch`, which runs the contract of
:func:`kernels.rope_attention.rope_cached_attention_reference` on the best backend available:

1. ``triton``: the fused kernel (``rope_attention_triton.py``), on CUDA;
2. ``flash3``: FlashAttention-3 (``flash_attn_interface``), Hopper and newer (SM >= 9);
3. ``flash2``: FlashAttention-2 (``flash_attn``);
4. ``sage``: SageAttention (``sageattention``);
5. ``sdpa``: ``torch.nn.functional.scaled_dot_product_attention``, always available.

Backends 2-5 only attend: RoPE (float64, as the official code), the concatenation with the cache
and the cache write come from :func:`kernels.rope_attention.rope_cached_attention_reference`.
:func:`attend` runs plain attention (the cross-attention over the text) on the same backends;
the fused kernel has RoPE built in, so there it falls back to the best of the others.
The official code prefers SageAttention, then FA3, then FA2 (``wan/modules/attention.py``); here
the exact backends come before the quantised one. Optional packages are imported lazily, on the
first call that could use them.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from functools import cache
from types import ModuleType

import torch
import torch.nn.functional as F
from einops import rearrange

from ..core.types import Keys, Queries, Values
from .rope import RopeTable
from .rope_attention import (
    AttendFunction,
    AttentionCall,
    AttentionCallError,
    AttentionOutput,
    CacheBuffer,
    rope_cached_attention_reference,
)

BACKEND_PREFERENCE = ("triton", "flash3", "flash2", "sage", "sdpa")
# The package each optional backend needs (sdpa needs none).
BACKEND_PACKAGES = {
    "triton": "triton",
    "flash3": "flash_attn_interface",
    "flash2": "flash_attn",
    "sage": "sageattention",
}
HALF_DTYPES = (torch.float16, torch.bfloat16)
HOPPER_MAJOR = 9  # FA3 kernels exist for SM 9.x and newer
# Compute capability the fused kernel needs: Triton's oldest target is Volta (7.0); bf16 tensor-core
# dots need Ampere (8.0), where older GPUs fail to compile or emulate it slowly.
TRITON_MIN_CAPABILITY = (7, 0)
BF16_MIN_CAPABILITY = (8, 0)
FLASH_MAX_HEAD_DIM = 256


@cache
def _optional_module(name: str) -> ModuleType | None:
    """The module, or None when it is missing or fails to import (e.g. built for another CUDA)."""
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def _check_name(name: str) -> None:
    if name not in BACKEND_PREFERENCE:
        raise AttentionCallError(
            f"unknown attention backend {name!r}; choose from {BACKEND_PREFERENCE}"
        )


def kernel_available(device: torch.device | str, dtype: torch.dtype) -> bool:
    """Whether the fused Triton kernel can run here: CUDA, or Triton's CPU interpreter (tests).

    On CUDA the GPU must be Volta or newer, Ampere or newer for bf16.
    """
    device = torch.device(device)
    interpreting = os.environ.get("TRITON_INTERPRET") == "1"
    if not (device.type == "cuda" or (interpreting and device.type == "cpu")):
        return False
    if _optional_module("triton") is None:
        return False
    from .rope_attention_triton import FLOAT_DTYPES

    if dtype not in FLOAT_DTYPES:
        return False
    if device.type == "cpu":
        return True
    needed = BF16_MIN_CAPABILITY if dtype == torch.bfloat16 else TRITON_MIN_CAPABILITY
    return torch.cuda.get_device_capability(device) >= needed


def _is_hopper_or_newer(device: torch.device) -> bool:
    return torch.cuda.get_device_capability(device)[0] >= HOPPER_MAJOR


def backend_installed(name: str) -> bool:
    """Whether the backend's package is installed: found, not imported (cheap, for a UI list)."""
    _check_name(name)
    package = BACKEND_PACKAGES.get(name)
    return package is None or importlib.util.find_spec(package) is not None


def backend_runs_on(name: str, device: torch.device | str, dtype: torch.dtype) -> bool:
    """Whether the backend is offered for tensors on ``device`` in ``dtype``.

    Everything but SDPA needs CUDA. The fused kernel also runs on Triton's CPU interpreter, but
    that is for tests, which ask :func:`dispatch` for it by name; it is never offered.
    """
    _check_name(name)
    device = torch.device(device)
    if name == "sdpa":
        return True
    if device.type != "cuda":
        return False
    if name == "triton":
        return kernel_available(device, dtype)
    if dtype not in HALF_DTYPES or _optional_module(BACKEND_PACKAGES[name]) is None:
        return False
    return name != "flash3" or _is_hopper_or_newer(device)


def backend_usable(
    name: str, device: torch.device | str, dtype: torch.dtype, head_dim: int
) -> bool:
    """Whether :func:`dispatch` can run backend ``name`` on these inputs when asked by name."""
    if name == "triton":
        from .rope_attention_triton import kernel_supports

        return kernel_available(device, dtype) and kernel_supports(head_dim, dtype)
    if not backend_runs_on(name, device, dtype):
        return False
    return name == "sdpa" or head_dim <= FLASH_MAX_HEAD_DIM


@cache  # asked on every attention call of every layer; the answer depends only on these three
def select_backend(device: torch.device | str, dtype: torch.dtype, head_dim: int) -> str:
    """The first backend of :data:`BACKEND_PREFERENCE` offered here that takes this head dim."""
    return next(
        name
        for name in BACKEND_PREFERENCE
        if backend_runs_on(name, device, dtype) and backend_usable(name, device, dtype, head_dim)
    )


def _attend_flash3(q: Queries, k: Keys, v: Values) -> AttentionOutput:
    result = _optional_module("flash_attn_interface").flash_attn_func(q, k, v, causal=False)
    # Some FA3 releases return (output, log-sum-exp), others the output alone.
    return result[0] if isinstance(result, tuple) else result


def _attend_flash2(q: Queries, k: Keys, v: Values) -> AttentionOutput:
    return _optional_module("flash_attn").flash_attn_func(q, k, v, causal=False)


def _attend_sage(q: Queries, k: Keys, v: Values) -> AttentionOutput:
    return _optional_module("sageattention").sageattn(q, k, v, tensor_layout="NHD", is_causal=False)


def _attend_sdpa(q: Queries, k: Keys, v: Values) -> AttentionOutput:
    heads_first = [rearrange(x, "b n hd dh -> b hd n dh") for x in (q, k, v)]
    output = F.scaled_dot_product_attention(*heads_first)
    return rearrange(output, "b hd n dh -> b n hd dh")


ATTEND_FUNCTIONS: dict[str, AttendFunction] = {
    "flash3": _attend_flash3,
    "flash2": _attend_flash2,
    "sage": _attend_sage,
    "sdpa": _attend_sdpa,
}


@cache
def rope_table(head_dim: int, max_positions: int, device: torch.device) -> RopeTable:
    """The table :func:`dispatch` takes, built once per (head dim, positions, device)."""
    return RopeTable.for_head_dim(head_dim, max_positions).to(device)


def _checked_backend(backend: str | None, q: Queries, *, rotates: bool) -> str:
    """``backend`` if it can run q's device/dtype/head dim, or the selected one when None."""
    device, dtype, head_dim = q.device, q.dtype, q.shape[-1]
    if backend is None:
        backend = select_backend(device, dtype, head_dim)
    elif not backend_usable(backend, device, dtype, head_dim):
        raise AttentionCallError(
            f"attention backend {backend!r} cannot run {dtype} head_dim={head_dim} on {device}: "
            f"choose another from {BACKEND_PREFERENCE}"
        )
    if backend == "triton" and not rotates:
        return next(
            name for name in BACKEND_PREFERENCE[1:] if backend_usable(name, device, dtype, head_dim)
        )
    return backend


def attend(q: Queries, k: Keys, v: Values, *, backend: str | None = None) -> AttentionOutput:
    """Plain unmasked attention ``[B, N, Hd, Dh]`` (no RoPE, no cache): the cross-attention."""
    return ATTEND_FUNCTIONS[_checked_backend(backend, q, rotates=False)](q, k, v)


def dispatch(
    q: Queries,
    k: Keys,
    v: Values,
    call: AttentionCall,
    cache_k: CacheBuffer | None = None,
    cache_v: CacheBuffer | None = None,
    *,
    backend: str | None = None,
) -> AttentionOutput:
    """RoPE + KV-cache self-attention (contract of ``rope_cached_attention_reference``).

    ``backend`` names one of :data:`BACKEND_PREFERENCE`; None selects with
    :func:`select_backend`. ``call.rope`` comes from :func:`rope_table` (or
    ``RopeTable.for_head_dim(Dh, max_positions).to(device)``, the same thing).
    """
    backend = _checked_backend(backend, q, rotates=True)
    if backend == "triton":
        from .rope_attention_triton import rope_cached_attention_triton

        return rope_cached_attention_triton(q, k, v, call, cache_k, cache_v)
    attend_core = ATTEND_FUNCTIONS[backend]
    return rope_cached_attention_reference(q, k, v, call, cache_k, cache_v, attend=attend_core)
