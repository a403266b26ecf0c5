"""Sampler overhead: whole-sampler time over the summed time of its bare DiT forwards, same run.

Everything the sampler does around the model (noise, x0 and re-noise in float64/float32, the
context padding and concatenations, input checks) must stay small next to the DiT itself:
target ratio ≤ 1.03. Runs on the CPU with a small config; prints the ratio.

    python bench/sampler_overhead.py
"""

from __future__ import annotations

import time

import torch
from inspatio_nodes.core.wan.dit import LATENT_CHANNELS, MASK_CHANNELS, CausalWanDiT, WanDiTConfig
from inspatio_nodes.core.world import SeededNoise, generate

CONFIG = WanDiTConfig(
    dim=256, ffn_dim=1024, freq_dim=64, num_heads=2, num_layers=4, text_dim=128, text_len=64
)
LATENT_HEIGHT, LATENT_WIDTH = 16, 24
BLOCKS = 4
FRAMES_PER_BLOCK = 3
REPEATS = 3


def main() -> None:
    torch.manual_seed(0)
    model = CausalWanDiT(CONFIG).eval()
    frames = BLOCKS * FRAMES_PER_BLOCK
    latent_shape = (1, frames, LATENT_CHANNELS, LATENT_HEIGHT, LATENT_WIDTH)
    text = torch.randn(1, CONFIG.text_len // 2, CONFIG.text_dim)
    reference, render = torch.randn(latent_shape), torch.randn(latent_shape)
    mask = torch.sign(torch.randn(1, frames, MASK_CHANNELS, LATENT_HEIGHT, LATENT_WIDTH))

    forward_seconds: list[float] = []
    started: list[float] = []
    model.register_forward_pre_hook(lambda *_: started.append(time.perf_counter()))
    model.register_forward_hook(
        lambda *_: forward_seconds.append(time.perf_counter() - started[-1])
    )

    generate(model, text, reference, render, mask, noise=SeededNoise(0))  # warm-up
    ratios = []
    for repeat in range(REPEATS):
        forward_seconds.clear()
        begin = time.perf_counter()
        generate(model, text, reference, render, mask, noise=SeededNoise(repeat))
        total = time.perf_counter() - begin
        ratios.append(total / sum(forward_seconds))
        print(
            f"run {repeat}: sampler {total * 1e3:.1f} ms, DiT forwards {sum(forward_seconds) * 1e3:.1f} ms "
            f"({len(forward_seconds)} calls)"
        )
    print(f"sampler / bare DiT forwards = {min(ratios):.4f} (best of {REPEATS}; target <= 1.03)")


if __name__ == "__main__":
    main()
