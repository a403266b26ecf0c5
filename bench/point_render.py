"""Hard z-buffer speed: every frame in one call against one call per frame, side by side.

Both point renderers of ``core/point_render.py`` (WorldFM's ``render_points_hard`` and v1's
"ply" ``render_points_v1``) batch the frames of a call into z-buffer passes of a bounded size.
One call per frame (a single-frame pass each) runs here on the same inputs, alternately with
the one call for all frames (best of ``--repeats`` each). The script prints frames per second of
both and their ratio (> 1: the batched call is faster), and checks that the outputs are identical.

Usage: ``python bench/point_render.py [--points 200000] [--frames 8] [--size 256]
[--repeats 3] [--device cpu|cuda]``
"""

from __future__ import annotations

import argparse
import math
import time

import torch
from inspatio_nodes.core.point_render import half_point_cloud, render_points_hard, render_points_v1

SCENE_DEPTH = 4.0  # the cloud sits this far in front of the first camera
SCENE_SPREAD = (1.5, 1.0, 0.5)  # standard deviation of the cloud along x, y, z
ORBIT_DEGREES = 15.0  # total turn of the cameras about the vertical axis
U8_MAX = 255


def orbit_poses(count: int) -> torch.Tensor:
    """World-to-camera poses turning about y around the cloud's centre."""
    poses = torch.eye(4, dtype=torch.float64).repeat(count, 1, 1)
    for index, angle in enumerate(torch.linspace(0.0, math.radians(ORBIT_DEGREES), count)):
        cos, sin = math.cos(angle), math.sin(angle)
        poses[index, :3, :3] = torch.tensor(
            [[cos, 0.0, sin], [0.0, 1.0, 0.0], [-sin, 0.0, cos]], dtype=torch.float64
        )
        # Rotate about the centre (0, 0, SCENE_DEPTH): t = c - R c.
        centre = torch.tensor([0.0, 0.0, SCENE_DEPTH], dtype=torch.float64)
        poses[index, :3, 3] = centre - poses[index, :3, :3] @ centre
    return poses


def best_seconds(call, repeats: int, device: torch.device) -> float:
    best = math.inf
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        call()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best


def compare(name: str, batched, per_frame, frames: int, repeats: int, device) -> None:
    together, alone = batched(), per_frame()
    identical = all(torch.equal(a, b) for a, b in zip(together, alone))
    batched_time = best_seconds(batched, repeats, device)
    loop_time = best_seconds(per_frame, repeats, device)
    print(
        f"{name}: one call {frames / batched_time:8.1f} frames/s, per-frame calls "
        f"{frames / loop_time:8.1f} frames/s, ratio {loop_time / batched_time:5.2f}x, "
        f"identical outputs: {identical}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=200_000)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)

    generator = torch.Generator().manual_seed(0)
    spread = torch.tensor(SCENE_SPREAD)
    points = torch.randn(args.points, 3, generator=generator) * spread
    points = (points + torch.tensor([0.0, 0.0, SCENE_DEPTH])).to(device)
    colours = torch.rand(args.points, 3, generator=generator).to(device)
    poses = orbit_poses(args.frames).to(device)
    focal, centre = float(args.size), (args.size - 1) / 2
    intrinsics = torch.tensor(
        [[focal, 0.0, centre], [0.0, focal, centre], [0.0, 0.0, 1.0]], dtype=torch.float64
    ).to(device)
    size = args.size
    print(f"{args.points} points, {args.frames} frames of {size}x{size} on {device}")

    cloud = half_point_cloud(points, (colours * U8_MAX).to(torch.uint8))

    def worldfm_per_frame():
        pieces = [render_points_hard(cloud, intrinsics, pose, size, size) for pose in poses]
        return tuple(torch.cat(outputs) for outputs in zip(*pieces))

    compare(
        "WorldFM render_points_hard",
        lambda: render_points_hard(cloud, intrinsics, poses, size, size),
        worldfm_per_frame,
        args.frames,
        args.repeats,
        device,
    )

    poses32, intrinsics32 = poses.float(), intrinsics.float()

    def v1_per_frame():
        pieces = [
            render_points_v1(points, colours, pose[None], intrinsics32, size, size)
            for pose in poses32
        ]
        return tuple(torch.cat(outputs) for outputs in zip(*pieces))

    compare(
        "v1 render_points_v1",
        lambda: render_points_v1(points, colours, poses32, intrinsics32, size, size),
        v1_per_frame,
        args.frames,
        args.repeats,
        device,
    )


if __name__ == "__main__":
    main()
