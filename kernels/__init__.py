"""Triton kernels, each beside the plain PyTorch reference of the same function.

The Triton modules (``rope_attention_triton``, ``rope_triton``) import Triton, an optional
dependency, so they are not re-exported: :func:`dispatch` loads them when the kernel is used.
"""

from .attention_backends import attend, dispatch, kernel_available, rope_table, select_backend
from .rope import RopeTable, apply_rope
from .rope_attention import AttentionCall, AttentionCallError, rope_cached_attention_reference

__all__ = [
    "AttentionCall",
    "AttentionCallError",
    "RopeTable",
    "apply_rope",
    "attend",
    "dispatch",
    "kernel_available",
    "rope_cached_attention_reference",
    "rope_table",
    "select_backend",
]
