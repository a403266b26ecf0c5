"""Benchmark: the fused RoPE + KV-cache attention kernel against SDPA and flash-attn, side by side.

Run on a CUDA machine: ``python bench/attention.py``. Shapes are the released model's denoise
call (SPEC-inspatio-world.md §4): a 3-frame block of 30×52 tokens (Lq = 4680) attending to a
6-frame cache plus itself (Lk = 14040), 12 heads of 128 channels, bf16. Prints, from one run:

- the full self-attention call (RoPE, cache, attention) of every usable backend;
- the bare attention of every plain backend on keys already rotated and concatenated;
- one block of the DiT (prefill + 4 denoising steps) per backend, when the core is importable;

each with its time, TFLOP/s, fraction of the GPU's bf16 peak (``--peak-tflops``, default the
H100 SXM's dense 989) and its ratio to the fused kernel. Attention counts 4·Lq·Lk·Dh per head;
the DiT block counts every matrix product of the prefill and the denoising calls
(:func:`dit_call_flops`). On a machine without CUDA it says so and exits 0.
"""

from __future__ import annotations

import argparse
import statistics
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
LINEAR_FLOPS = 2  # one multiply-add per weight and token
SELF_ATTENTION_PROJECTIONS = 4  # q, k, v, o
CROSS_ATTENTION_PROJECTIONS = 2  # q, o (the text k/v are computed once per session)
FFN_PROJECTIONS = 2  # dim → ffn_dim → dim
WARMUP_MS, REPEAT_MS = 100, 500
DIT_WARMUP_BLOCKS, DIT_TIMED_BLOCKS = 3, 10
H100_SXM_BF16_DENSE_TFLOPS = 989.0


def attention_flops(query_tokens: int, key_tokens: int) -> float:
    return FLOPS_PER_QK_PAIR * BATCH * HEADS * query_tokens * key_tokens * HEAD_DIM


def report(
    title: str, timings: dict[str, float], baseline: str, flops: float, peak_tflops: float
) -> None:
    print(f"\n{title}")
    for name, milliseconds in timings.items():
        rate = flops / (milliseconds * 1e-3) / 1e12
        ratio = timings[baseline] / milliseconds if baseline in timings else float("nan")
        print(
            f"  {name:<14} {milliseconds:9.3f} ms  {rate:7.1f} TFLOP/s  "
            f"{rate / peak_tflops:6.1%} of peak  speed vs {baseline}: {ratio:5.2f}x"
        )


def bench_attention(do_bench, device: torch.device, peak_tflops: float) -> None:
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
        attention_flops(query_tokens, key_tokens),
        peak_tflops,
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
        attention_flops(query_tokens, key_tokens),
        peak_tflops,
    )

    if "triton" in usable:
        fused = backends.dispatch(q, k, v, call, cache_k, cache_v, backend="triton")
        unfused = backends.dispatch(q, k, v, call, cache_k, cache_v, backend="sdpa")
        print(
            f"\n  max |triton − sdpa| = {(fused.float() - unfused.float()).abs().max().item():.2e}"
        )


def dit_call_flops(config, query_tokens: int, key_tokens: int) -> float:
    """FLOPs of one DiT forward over ``query_tokens`` tokens attending to ``key_tokens`` keys.

    Counts the matrix products (2 FLOPs per multiply-add): per layer the self-attention q/k/v/o
    projections and attention, the cross-attention q/o projections and attention over the text
    (its k/v are computed once per session, not per call), the FFN; plus the patch embedding and
    the head. Norms, modulation and RoPE are elementwise: left out, as FLOP counts usually do.
    """
    dim, ffn_dim, text_tokens = config.dim, config.ffn_dim, config.text_len
    square_projection = LINEAR_FLOPS * query_tokens * dim * dim
    per_layer = (
        SELF_ATTENTION_PROJECTIONS * square_projection
        + FLOPS_PER_QK_PAIR * query_tokens * key_tokens * dim  # heads × head dim = dim
        + CROSS_ATTENTION_PROJECTIONS * square_projection
        + FLOPS_PER_QK_PAIR * query_tokens * text_tokens * dim
        + FFN_PROJECTIONS * LINEAR_FLOPS * query_tokens * dim * ffn_dim
    )
    patch_channels = (config.in_dim + config.out_dim) * config.patch_volume
    embedding_and_head = LINEAR_FLOPS * query_tokens * dim * patch_channels
    return BATCH * (config.num_layers * per_layer + embedding_and_head)


def dit_block_flops(config, tokens_per_frame: int, denoise_calls: int) -> float:
    """One steady-state block: prefill of the 6-frame context, then the denoising calls."""
    context_tokens = CONTEXT_FRAMES * tokens_per_frame
    block_tokens = BLOCK_GRID[0] * tokens_per_frame
    prefill = dit_call_flops(config, context_tokens, context_tokens)
    denoise = dit_call_flops(config, block_tokens, context_tokens + block_tokens)
    return prefill + denoise_calls * denoise


def time_repeated(run, warmup: int, repeats: int) -> float:
    """Median milliseconds of ``run`` over ``repeats`` calls, after ``warmup`` untimed ones."""
    for _ in range(warmup):
        run()
    milliseconds = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        run()
        end.record()
        end.synchronize()
        milliseconds.append(start.elapsed_time(end))
    return statistics.median(milliseconds)


def bench_dit_block(device: torch.device, peak_tflops: float) -> None:
    try:
        from inspatio_nodes.core import attention as core_attention
        from inspatio_nodes.core.wan.dit import CausalWanDiT, WanDiTConfig
        from inspatio_nodes.core.world import SamplerConfig, SeededNoise, Session
    except ImportError as error:
        print(f"\nDiT block: skipped, the core is not importable ({error})")
        return
    config = WanDiTConfig()
    with device:  # random weights straight on the GPU: 1.4 B parameters
        model = CausalWanDiT(config).to(dtype=DTYPE).eval()
    text = torch.randn(BATCH, TEXT_TOKENS, TEXT_DIM, device=device, dtype=DTYPE)
    frames = BLOCK_GRID[0]
    latents = [
        torch.randn(BATCH, frames, channels, *LATENT_SIZE, device=device, dtype=DTYPE)
        for channels in (16, 16, 4)
    ]
    denoise_calls = len(SamplerConfig().schedule.warped_timesteps)
    flops = dit_block_flops(config, config.tokens_per_frame(*LATENT_SIZE), denoise_calls)
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
            timings[name] = time_repeated(
                lambda session=session: session.step(*latents), DIT_WARMUP_BLOCKS, DIT_TIMED_BLOCKS
            )
        except (ValueError, RuntimeError) as error:
            print(f"  DiT block with {name}: not run ({error})")
    core_attention.set_backend("auto")
    report(
        f"one DiT block (prefill + {denoise_calls} steps, 6-frame context), "
        f"{flops / 1e12:.1f} TFLOP, median of {DIT_TIMED_BLOCKS} after {DIT_WARMUP_BLOCKS} warmup",
        timings,
        "triton",
        flops,
        peak_tflops,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--peak-tflops",
        type=float,
        default=H100_SXM_BF16_DENSE_TFLOPS,
        help="the GPU's dense bf16 peak, for the fraction-of-peak column (default: H100 SXM)",
    )
    arguments = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA GPU: bench/attention.py measures GPU kernels; nothing to do here")
        return 0
    try:
        from triton.testing import do_bench
    except ImportError:
        print("triton is not installed (pip install triton): the fused kernel cannot run")
        return 0
    print(f"{torch.cuda.get_device_name()}  torch {torch.__version__}  {DTYPE}")
    print(f"peak: {arguments.peak_tflops:.0f} TFLOP/s (--peak-tflops)")
    device = torch.device("cuda")
    bench_attention(do_bench, device, arguments.peak_tflops)
    bench_dit_block(device, arguments.peak_tflops)
    return 0


if __name__ == "__main__":
    sys.exit(main())
