"""Command line of the pack: ``python -m inspatio_nodes demo [options]``.

``demo`` renders the bundled procedural room along a preset camera path and writes the render, the
mask, a contact sheet and the camera-path preview (``demo.py``); given weight files it also runs
the full world-model generation. Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .demo import (
    DEFAULT_FOV_DEGREES,
    DEFAULT_FPS,
    DEFAULT_FRAMES,
    DEFAULT_HEIGHT,
    DEFAULT_OUT,
    DEFAULT_PRESET,
    DEFAULT_WIDTH,
    DemoOptions,
    run_demo,
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m inspatio_nodes", description=__doc__.splitlines()[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo", help="render the procedural room along a camera path (no download)"
    )
    demo.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help="output folder (default: %(default)s)"
    )
    demo.add_argument(
        "--preset", default=DEFAULT_PRESET, help="camera preset of core/path_presets.py"
    )
    demo.add_argument(
        "--strength", type=float, default=1.0, help="multiplier of the preset's amplitude"
    )
    demo.add_argument("--frames", type=int, default=DEFAULT_FRAMES, help="frames to render")
    demo.add_argument(
        "--width", type=int, default=DEFAULT_WIDTH, help="frame width (multiple of 16)"
    )
    demo.add_argument(
        "--height", type=int, default=DEFAULT_HEIGHT, help="frame height (multiple of 16)"
    )
    demo.add_argument(
        "--fov",
        type=float,
        default=DEFAULT_FOV_DEGREES,
        dest="fov_degrees",
        help="horizontal field of view in degrees",
    )
    demo.add_argument("--fps", type=float, default=DEFAULT_FPS, help="frame rate of the room video")
    demo.add_argument(
        "--checkpoint", type=Path, help="InSpatio-World DiT weights (full generation)"
    )
    demo.add_argument("--vae", type=Path, help="Wan2.1 VAE weights, e.g. wan_2.1_vae.safetensors")
    demo.add_argument("--taehv", type=Path, help="optional TAEHV weights (taew2_1) as the decoder")
    demo.add_argument(
        "--prompt-embeds",
        type=Path,
        dest="prompt_embeds",
        help="safetensors with umT5 embeddings under 'embeddings' ([tokens, 4096])",
    )
    demo.add_argument("--seed", type=int, default=0, help="noise seed of the generation")
    return parser


def main(argv: list[str] | None = None) -> int:
    arguments = vars(_parser().parse_args(argv))
    arguments.pop("command")
    try:
        written = run_demo(DemoOptions(**arguments))
    except ValueError as error:  # DemoError and the core's input errors
        print(f"demo: {error}", file=sys.stderr)
        return 2
    for role, path in written.items():
        print(f"{role:>14}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
