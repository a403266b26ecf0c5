"""Benchmark: Wan2.1 VAE against TAEHV, encode and decode time per frame, side by side.

Both codecs at full size with random weights (the VAE at base width 96, TAEHV's fixed widths),
float32 on the CPU, on a small video so the run takes about a minute. Each codec streams the same
frames through its :class:`~core.codec.LatentCodec` interface (1 + 4k frames, one state per
stream); the best of a few repeats is kept after a warm-up. Prints milliseconds per pixel frame
and the VAE / TAEHV ratio, measured in this run.

    python bench/codecs.py [--height 64] [--width 64] [--frames 9] [--repeats 3] [--device cpu]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
from inspatio_nodes.core.codec import LatentCodec
from inspatio_nodes.core.wan.taehv import TAEHV
from inspatio_nodes.core.wan.vae import WanVAE, WanVAEConfig

RELEASED_BASE_DIM = 96


def best_seconds(run: Callable[[], object], repeats: int, device: torch.device) -> float:
    run()  # warm-up: allocator, kernel selection
    timings = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        run()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        timings.append(time.perf_counter() - start)
    return min(timings)


def measure(codec: LatentCodec, frames: torch.Tensor, repeats: int) -> tuple[float, float]:
    """Milliseconds per pixel frame to encode, then to decode, a whole stream."""
    latents = codec.encode(frames, codec.new_state())
    encode = best_seconds(lambda: codec.encode(frames, codec.new_state()), repeats, frames.device)
    decode = best_seconds(lambda: codec.decode(latents, codec.new_state()), repeats, frames.device)
    per_frame = 1000.0 / frames.shape[1]
    return encode * per_frame, decode * per_frame


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--frames", type=int, default=9, help="1 + 4k")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    device = torch.device(args.device)
    torch.manual_seed(0)
    frames = torch.rand(1, args.frames, 3, args.height, args.width, device=device) * 2 - 1
    codecs = {
        "Wan2.1 VAE": WanVAE(WanVAEConfig(base_dim=RELEASED_BASE_DIM)).eval().to(device),
        "TAEHV": TAEHV().eval().to(device),
    }
    print(
        f"{args.frames} frames of {args.height}x{args.width}, float32 on {device}, "
        f"{torch.get_num_threads()} threads, best of {args.repeats}"
    )
    results = {name: measure(codec, frames, args.repeats) for name, codec in codecs.items()}
    print(f"{'codec':<12}{'encode ms/frame':>18}{'decode ms/frame':>18}")
    for name, (encode, decode) in results.items():
        print(f"{name:<12}{encode:>18.1f}{decode:>18.1f}")
    (vae_encode, vae_decode), (tae_encode, tae_decode) = results["Wan2.1 VAE"], results["TAEHV"]
    print(f"{'VAE / TAEHV':<12}{vae_encode / tae_encode:>17.1f}x{vae_decode / tae_decode:>17.1f}x")


if __name__ == "__main__":
    main()
