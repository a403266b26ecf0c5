"""Soft z-buffer splatting speed at 832×480: the pack's renderer against a plain reference.

The reference, written here, is the straightforward loop-free formulation: broadcast 3×3 / 4×4
matmuls per pixel (``[N, H, W, 3, 3] @ [H, W, 3, 1]``) and one ``index_put_(accumulate=True)``
per bilinear corner and per canvas (colour, weight), as the official ``DepthWarper`` is laid
out. Both run side by side in this process on the same inputs, alternately (best call of each);
the script prints frames per second and their ratio, and checks that the two renders agree.

Usage: ``python bench/splat.py [--frames 8] [--repeats 3] [--device cpu|cuda]``
"""

from __future__ import annotations

import argparse
import time

import torch
from inspatio_nodes.core.scene import MODEL_RESOLUTION, Scene
from inspatio_nodes.core.soft_splat import (
    CANVAS_BORDER,
    DEPTH_SATURATION,
    DEPTH_WEIGHT_SHARPNESS,
    LOG_DEPTH_PEAK_FLOOR,
    PROJECTION_DEPTH_FLOOR,
)
from inspatio_nodes.core.splat import render_video_scene

FOCAL = 500.0
AGREEMENT = 1e-4


def reference_render(
    frames: torch.Tensor,
    depth: torch.Tensor,
    intrinsics: torch.Tensor,
    source_world_to_camera: torch.Tensor,
    target_world_to_camera: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-frame-normalised soft z-buffer splat, written plainly with broadcast matmuls."""
    n, channels, height, width = frames.shape
    device = frames.device
    rows, cols = torch.meshgrid(
        torch.arange(height, device=device, dtype=torch.float32),
        torch.arange(width, device=device, dtype=torch.float32),
        indexing="ij",
    )
    pixels = torch.stack([cols, rows, torch.ones_like(cols)], dim=-1)[..., None]  # H W 3 1
    rays = torch.linalg.inv(intrinsics)[:, None, None] @ pixels  # N H W 3 1
    points = torch.cat([rays * depth[..., None, None], torch.ones_like(rays[..., :1, :])], dim=-2)
    transform = torch.bmm(target_world_to_camera, torch.linalg.inv(source_world_to_camera))
    camera = (transform[:, None, None] @ points)[..., :3, :]
    image = (intrinsics[:1, None, None] @ camera)[..., 0]  # N H W 3
    z = image[..., 2]
    position = image[..., :2] / z.clamp_min(PROJECTION_DEPTH_FLOOR)[..., None] + CANVAS_BORDER
    limit = torch.tensor([width + 1, height + 1], device=device, dtype=torch.float32)
    position = torch.minimum(position.clamp_min(0), limit)
    low, high = position.floor(), position.ceil()
    log_depth = torch.log(1 + z.clamp(0, DEPTH_SATURATION))
    peak = log_depth.amax(dim=(1, 2), keepdim=True).clamp_min(LOG_DEPTH_PEAK_FLOOR)
    depth_weight = torch.exp(log_depth / peak * DEPTH_WEIGHT_SHARPNESS)
    valid = ((depth > 0) & (z > 0)).float()

    colour_canvas = torch.zeros(n, height + 2, width + 2, channels, device=device)
    weight_canvas = torch.zeros(n, height + 2, width + 2, device=device)
    batch = torch.arange(n, device=device)[:, None, None]
    colours = frames.permute(0, 2, 3, 1)
    x, y = position[..., 0], position[..., 1]
    for corner_y, corner_x in ((low, low), (high, low), (low, high), (high, high)):
        weight_y = 1 - (y - corner_y[..., 1]).abs()
        weight_x = 1 - (x - corner_x[..., 0]).abs()
        weight = weight_y * weight_x * valid / depth_weight
        index = (batch, corner_y[..., 1].long(), corner_x[..., 0].long())
        colour_canvas.index_put_(index, colours * weight[..., None], accumulate=True)
        weight_canvas.index_put_(index, weight, accumulate=True)
    colour = colour_canvas[:, 1:-1, 1:-1].permute(0, 3, 1, 2)
    weight = weight_canvas[:, 1:-1, 1:-1]
    known = weight > 0
    render = torch.where(known[:, None], colour / weight[:, None], -1.0).clamp(-1, 1)
    return render, known


def make_scene(frames: int, device: str) -> tuple[Scene, torch.Tensor]:
    height, width = MODEL_RESOLUTION
    generator = torch.Generator().manual_seed(0)
    colours = torch.rand(frames, 3, height, width, generator=generator) * 2 - 1
    coarse = torch.rand(frames, 1, 12, 20, generator=generator)
    depth = (
        1 + 4 * torch.nn.functional.interpolate(coarse, size=(height, width), mode="bilinear")[:, 0]
    )
    intrinsics = torch.tensor([[FOCAL, 0, width / 2], [0, FOCAL, height / 2], [0, 0, 1.0]]).expand(
        frames, 3, 3
    )
    source = torch.eye(4).repeat(frames, 1, 1)
    target = torch.eye(4).repeat(frames, 1, 1)
    angle = torch.linspace(0, 0.15, frames)
    target[:, 0, 0], target[:, 0, 2] = torch.cos(angle), torch.sin(angle)
    target[:, 2, 0], target[:, 2, 2] = -torch.sin(angle), torch.cos(angle)
    target[:, 0, 3] = torch.linspace(0, 0.3, frames)
    scene = Scene(
        colours.to(device), depth.to(device), intrinsics.to(device), source.to(device), fps=16.0
    )
    return scene, target.to(device)


def elapsed_seconds(render, device: str) -> float:
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    render()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    scene, targets = make_scene(args.frames, args.device)

    def pack() -> torch.Tensor:
        return render_video_scene(scene, targets, frames_per_call=args.frames).frames

    def reference() -> torch.Tensor:
        return reference_render(
            scene.frames, scene.depth, scene.intrinsics, scene.world_to_camera, targets
        )[0]

    difference = float((pack() - reference()).abs().max())  # also the warm-up
    # Alternate the two and keep each one's fastest call: the CPU may be shared with other work.
    pack_seconds, reference_seconds = float("inf"), float("inf")
    for _ in range(args.repeats):
        pack_seconds = min(pack_seconds, elapsed_seconds(pack, args.device))
        reference_seconds = min(reference_seconds, elapsed_seconds(reference, args.device))
    pack_fps, reference_fps = args.frames / pack_seconds, args.frames / reference_seconds
    height, width = MODEL_RESOLUTION
    print(
        f"device {args.device}, {args.frames} frames of {width}x{height} per call, {torch.get_num_threads()} threads"
    )
    print(f"pack renderer      {pack_fps:8.2f} frames/s")
    print(f"plain reference    {reference_fps:8.2f} frames/s")
    print(
        f"ratio pack/reference {pack_fps / reference_fps:.2f}x   (max |render difference| {difference:.2e})"
    )
    if difference > AGREEMENT:
        raise SystemExit(
            f"renders disagree by {difference:.2e} > {AGREEMENT}: the benchmark compares different things"
        )


if __name__ == "__main__":
    main()
