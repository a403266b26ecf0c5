"""Depth from any depth node: each reading mode recovers an analytic depth map through Scene from Video.

A tilted plane z(x, y) is encoded the way each kind of depth node writes it (metric values in
millimetres, normalised inverse depth, normalised linear depth, as an IMAGE or a MASK); the scene
built from it must hold z again. The reading itself is ``core/depth.py``, the node ``nodes/scene.py``.
"""

from __future__ import annotations

import math

import pytest
import torch
from inspatio_nodes.nodes.scene import InSpatioSceneFromVideo

HEIGHT, WIDTH, FRAMES = 32, 48, 2
NEAR, FAR = 1.0, 8.0
MILLIMETRES = 0.001


def _plane() -> torch.Tensor:
    """z from NEAR at the top row to FAR at the bottom, a little tilted sideways, per frame."""
    rows = torch.linspace(0.0, 1.0, HEIGHT)[:, None]
    columns = torch.linspace(0.0, 1.0, WIDTH)[None, :]
    depth = NEAR + (FAR - NEAR) * (0.9 * rows + 0.1 * columns)
    return depth.expand(FRAMES, HEIGHT, WIDTH).double()


def _encoded(encoding: str, depth: torch.Tensor) -> torch.Tensor:
    if encoding == "metric":
        return depth / MILLIMETRES  # a MASK of millimetres, as an EXR loader gives
    if encoding == "inverse":
        grey = (1 / depth - 1 / FAR) / (1 / NEAR - 1 / FAR)
    else:
        grey = (depth - NEAR) / (FAR - NEAR)
    return grey[..., None].expand(-1, -1, -1, 3)  # a grey IMAGE


def _scene(encoding: str, depth_map: torch.Tensor, fov_degrees: float = 60.0):
    frames = torch.rand(FRAMES, HEIGHT, WIDTH, 3, generator=torch.Generator().manual_seed(0))
    (scene,) = InSpatioSceneFromVideo().build(
        frames,
        depth_map.float(),
        encoding,
        NEAR,
        FAR,
        MILLIMETRES,
        16.0,
        fov_degrees,
        WIDTH,
        HEIGHT,
        "pad_v1.5",
    )
    return scene


@pytest.mark.parametrize("encoding", ["metric", "inverse", "normalized"])
def test_each_reading_mode_recovers_the_analytic_depth(encoding):
    depth = _plane()
    scene = _scene(encoding, _encoded(encoding, depth))
    torch.testing.assert_close(scene.depth.double(), depth, rtol=2e-6, atol=2e-6)


def test_field_of_view_sets_the_focal_length():
    scene = _scene("normalized", _encoded("normalized", _plane()), fov_degrees=90.0)
    focal = WIDTH / 2 / math.tan(math.radians(90.0) / 2)
    torch.testing.assert_close(scene.intrinsics[0, 0, 0].item(), focal)
    assert scene.intrinsics[0, :2, 2].tolist() == [WIDTH / 2, HEIGHT / 2]


def test_without_source_cameras_the_camera_is_static():
    scene = _scene("inverse", _encoded("inverse", _plane()))
    torch.testing.assert_close(scene.world_to_camera, torch.eye(4).expand(FRAMES, 4, 4))
