"""Benchmark: the fused RoPE + KV-cache attention kernel against SDPA and flash-attn, side by side.

Run on a CUDA machine: ``python bench/attention.py``. Shapes are the released model's denoise
call (SPEC-inspatio-world.md §4): a 3-frame block of 30×52 tokens (Lq = 4680) attending to a
6-frame cache plus itself (Lk = 14040), 12 heads of 128 channels, bf16. Prints, from one run:

- the full self-attention call (RoPE, cache, attention) of every usable backend;
- the bare attention of every plain backend on keys already rotated and concatenated;
- one block of the DiT (prefill + 4 denoising steps) per backend, when the core is importable;

each with its time, TFLOP/s (4·Lq·Lk·Dh per head) and its ratio to the fused kernel. On a machine
without CUDA it says so and exits 0.
"""

from __future__ import annotations

import sys

import torch

BATCH, HEADS, HEAD_DIM = 1, 12, 128
BLOCK_GRID = (3, 30, 52)  # latent frames, token rows, token cols of one denoised block
CONTEXT_FRAMES = 6  # reference block + previous block
DENOISE_FRAME_OFFSET = 6  # the noisy block sits at frame positions 6, 7, 8
ROPE_POSITIONS = 1024
LATENT_SIZE = (60, 104)  # 480×832 pixels / 8
TEXT_TOKENS, TEXT_DIM = 512, 4096
DTYPE = torch.bfloat16
FLOPS_PER_QK_PAIR = 4  # 2 for q·k, 2 for p·v, per channel
WARMUP_MS, REPEAT_MS = 100, 500


def tflops(milliseconds: float, query_tokens: int, key_tokens: int) -> float:
    flops = FLOPS_PER_QK_PAIR * BATCH * HEADS * query_tokens * key_tokens * HEAD_DIM
    return flops / (milliseconds * 1e-3) / 1e12


def report(title: str, timings: dict[str, float], baseline: str, work: tuple[int, int] | None):
    print(f"\n{title}")
    for name, milliseconds in timings.items():
        rate = f"{tflops(milliseconds, *work):7.1f} TFLOP/s" if work else ""
        ratio = timings[baseline] / milliseconds if baseline in timings else float("nan")
        print(f"  {name:<14} {milliseconds:9.3f} ms  {rate}  speed vs {baseline}: {ratio:5.2f}x")


def bench_attention(do_bench, device: torch.device) -> None:
    from inspatio_nodes.kernels import attention_backends as backends
    from inspatio_nodes.kernels.rope import apply_rope
    from inspatio_nodes.kernels.rope_attention import AttentionCall

    frames, rows, cols = BLOCK_GRID
    query_tokens = frames * rows * cols
    read_len = CONTEXT_FRAMES * rows * cols
    key_tokens = read_len + query_tokens
    rope = backends.rope_table(HEAD_DIM, ROPE_POSITIONS, device)
    q, k, v = (
        torch.randn(BATCH, query_tokens, HEADS, HEAD_DIM, device=device, dtype=DTYPE)
        for _ in range(3)
    )
    cache_k, cache_v = (
        torch.randn(BATCH, read_len, HEADS, HEAD_DIM, device=device, dtype=DTYPE) for _ in range(2)
    )
    call = AttentionCall(
        rope=rope,
        grid=BLOCK_GRID,
        frame_offset=DENOISE_FRAME_OFFSET,
        read_len=read_len,
        write_offset=None,
    )
    usable = [
        name
        for name in backends.BACKEND_PREFERENCE
        if backends.backend_usable(name, device, DTYPE, HEAD_DIM)
    ]

    full = {
        name: do_bench(
            lambda name=name: backends.dispatch(q, k, v, call, cache_k, cache_v, backend=name),
            warmup=WARMUP_MS,
            rep=REPEAT_MS,
        )
        for name in usable
    }
    report(
        f"full call (RoPE + cache + attention), Lq={query_tokens}, Lk={key_tokens}",
        full,
        "triton",
        (query_tokens, key_tokens),
    )

    keys = torch.cat([cache_k, apply_rope(k, rope, BLOCK_GRID, DENOISE_FRAME_OFFSET)], dim=1)
    values = torch.cat([cache_v, v], dim=1)
    rotated_q = apply_rope(q, rope, BLOCK_GRID, DENOISE_FRAME_OFFSET)
    bare = {
        name: do_bench(
            lambda name=name: backends.ATTEND_FUNCTIONS[name](rotated_q, keys, values),
            warmup=WARMUP_MS,
            rep=REPEAT_MS,
        )
        for name in usable
        if name != "triton"
    }
    bare = {"triton (full)": full["triton"], **bare} if "triton" in full else bare
    report(
        "bare attention on pre-rotated, pre-concatenated keys",
        bare,
        "triton (full)",
        (query_tokens, key_tokens),
    )

    if "triton" in usable:
        fused = backends.dispatch(q, k, v, call, cache_k, cache_v, backend="triton")
        unfused = backends.dispatch(q, k, v, call, cache_k, cache_v, backend="sdpa")
        print(
            f"\n  max |triton − sdpa| = {(fused.float() - unfused.float()).abs().max().item():.2e}"
        )


def bench_dit_block(do_bench, device: torch.device) -> None:
    try:
        from inspatio_nodes.core import attention as core_attention
        from inspatio_nodes.core.wan.dit import CausalWanDiT, WanDiTConfig
        from inspatio_nodes.core.world import SeededNoise, Session
    except ImportError as error:
        print(f"\nDiT block: skipped, the core is not importable ({error})")
        return
    with device:  # random weights straight on the GPU: 1.4 B parameters
        model = CausalWanDiT(WanDiTConfig()).to(dtype=DTYPE).eval()
    text = torch.randn(BATCH, TEXT_TOKENS, TEXT_DIM, device=device, dtype=DTYPE)
    frames = BLOCK_GRID[0]
    latents = [
        torch.randn(BATCH, frames, channels, *LATENT_SIZE, device=device, dtype=DTYPE)
        for channels in (16, 16, 4)
    ]
    timings = {}
    for name in core_attention.available_backends():
        if name == "auto":
            continue
        try:
            core_attention.set_backend(name)
            session = Session(
                model,
                text,
                latent_height=LATENT_SIZE[0],
                latent_width=LATENT_SIZE[1],
                noise=SeededNoise(0),
            )
            # Block 0 first: afterwards the context is 6 frames, as in the steady state.
            session.step(*latents)
            timings[name] = do_bench(
                lambda session=session: session.step(*latents), warmup=1, rep=1
            )
        except (ValueError, RuntimeError) as error:
            print(f"  DiT block with {name}: not run ({error})")
    core_attention.set_backend("auto")
    report("one DiT block (prefill + 4 steps, 6-frame context)", timings, "triton", None)


def main() -> int:
    if not torch.cuda.is_available():
        print("no CUDA GPU: bench/attention.py measures GPU kernels; nothing to do here")
        return 0
    try:
        from triton.testing import do_bench
    except ImportError:
        print("triton is not installed (pip install triton): the fused kernel cannot run")
        return 0
    print(f"{torch.cuda.get_device_name()}  torch {torch.__version__}  {DTYPE}")
    device = torch.device("cuda")
    bench_attention(do_bench, device)
    bench_dit_block(do_bench, device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
