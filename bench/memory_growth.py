"""Memory growth: peak memory of a 10-block vs a 100-block streamed rollout (tiny config).

The KV cache has a fixed capacity and is overwritten every block, so a session's memory must not
grow with the video length: target ratio within 5 %. Each rollout runs in a fresh process and
reports its peak resident set size, and the part of it added once the model and inputs exist
(the session: cache, text K/V, activations), which is the part that must stay flat; blocks are streamed through ``Session.step`` and dropped, as
a node that decodes block by block does. Prints the ratio.

    python bench/memory_growth.py
"""

from __future__ import annotations

import multiprocessing
import resource
import sys

ROLLOUTS = (10, 100)
LATENT_HEIGHT, LATENT_WIDTH = 16, 24
FRAMES_PER_BLOCK = 3
KIB = 1024


def peak_rss_bytes() -> int:
    # ru_maxrss is in KiB on Linux and in bytes on macOS.
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * KIB


def rollout(blocks: int, report) -> None:
    import torch
    from inspatio_nodes.core.wan.dit import (
        LATENT_CHANNELS,
        MASK_CHANNELS,
        CausalWanDiT,
        WanDiTConfig,
    )
    from inspatio_nodes.core.world import SeededNoise, Session

    torch.set_num_threads(1)
    torch.manual_seed(0)
    config = WanDiTConfig(
        dim=128, ffn_dim=256, freq_dim=32, num_heads=2, num_layers=2, text_dim=64, text_len=32
    )
    model = CausalWanDiT(config).eval()
    shape = (1, FRAMES_PER_BLOCK, LATENT_CHANNELS, LATENT_HEIGHT, LATENT_WIDTH)
    reference, render = torch.randn(shape), torch.randn(shape)
    mask = torch.sign(torch.randn(1, FRAMES_PER_BLOCK, MASK_CHANNELS, LATENT_HEIGHT, LATENT_WIDTH))
    before_session = peak_rss_bytes()
    session = Session(
        model,
        torch.randn(1, 16, config.text_dim),
        latent_height=LATENT_HEIGHT,
        latent_width=LATENT_WIDTH,
        noise=SeededNoise(0),
    )
    for _ in range(blocks):
        session.step(reference, render, mask)
    report.send((before_session, peak_rss_bytes()))


def main() -> None:
    context = multiprocessing.get_context("spawn")
    peaks = {}
    for blocks in ROLLOUTS:
        receiver, sender = context.Pipe(duplex=False)
        process = context.Process(target=rollout, args=(blocks, sender))
        process.start()
        before_session, peak = receiver.recv()
        process.join()
        peaks[blocks] = (peak, peak - before_session)
        print(
            f"{blocks:4d} blocks: peak RSS {peak / 2**20:.1f} MiB, of which the session "
            f"(cache, text K/V, activations) {(peak - before_session) / 2**20:.2f} MiB"
        )
    short, long = ROLLOUTS
    print(
        f"peak process memory {long} blocks / {short} blocks = {peaks[long][0] / peaks[short][0]:.4f}"
    )
    print(
        f"peak session memory {long} blocks / {short} blocks = {peaks[long][1] / peaks[short][1]:.4f} "
        "(target within 1.05)"
    )


if __name__ == "__main__":
    main()
