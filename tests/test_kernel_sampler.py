"""The block sampler gives the same video with the fused kernel (CPU interpreter) as with SDPA.

Every self-attention call of the DiT goes through :func:`core.attention.rope_cached_attention`,
which hands ``kernels.attention_backends.dispatch`` the backend that ``resolve_backend`` names.
The core never offers the kernel on the CPU (Triton's interpreter is for tests), so the test
makes ``resolve_backend`` name it. The public ``dit_sampler`` fixture is small enough for the
interpreter (20 kernel calls).
"""

from __future__ import annotations

import os

# Must be set before Triton decorates the kernels (at their first import).
os.environ["TRITON_INTERPRET"] = "1"

import pytest
import torch
from conftest import fixture_cases, require_fixture

pytest.importorskip("triton", reason="the fused attention kernel needs triton (pip install triton)")

from inspatio_nodes.core import attention as core_attention
from test_world import DIT_ATOL, SamplerCase

SAMPLER_CASES = fixture_cases("*dit_sampler*_io*.safetensors")


def generate_with(case: SamplerCase, backend: str, monkeypatch) -> torch.Tensor:
    monkeypatch.setattr(core_attention, "resolve_backend", lambda device, dtype: backend)
    return case.generate()


@pytest.mark.parametrize("case_path", SAMPLER_CASES)
def test_sampler_with_the_fused_kernel_equals_the_sampler_with_sdpa(case_path, monkeypatch):
    case = SamplerCase(require_fixture(case_path))
    with_sdpa = generate_with(case, "sdpa", monkeypatch)
    with_kernel = generate_with(case, "triton", monkeypatch)
    torch.testing.assert_close(with_kernel, with_sdpa, atol=DIT_ATOL, rtol=0)
    torch.testing.assert_close(with_kernel, case.io["output"], atol=DIT_ATOL, rtol=0)
