"""The v1 "ply" render semantics of ``render_condition`` against the official ``render_batch``.

The v1 render-warp fixture (fixtures/README.md §4) holds the v1 source video, its depth, K and
poses, and the bytes the ply backend wrote for each target pose; the whole product path (frame 0
unprojected, drawn, converted to the render condition's range) must give those bytes back.
"""

from __future__ import annotations

import pytest
import torch
from conftest import fixture_cases_holding, require_fixture
from inspatio_nodes.core.paths import CameraPath
from inspatio_nodes.core.render import V1_PLY, render_condition
from inspatio_nodes.core.scene import scene_from_video
from inspatio_nodes.core.splat import BYTE_SCALE, mask_u8
from safetensors.torch import load_file


@pytest.mark.parametrize(
    "case_path", fixture_cases_holding("*render_warp*_io*.safetensors", "ply_out.")
)
def test_v1_ply_semantics_reproduce_the_official_point_cloud_render(case_path):
    tensors = load_file(str(require_fixture(case_path)))
    scene = scene_from_video(
        tensors["warp_in.frame"],
        tensors["warp_in.depth"][:, 0],
        tensors["warp_in.K"],
        tensors["warp_in.source_tcw"],
        resolution=None,
    )
    condition = render_condition(scene, CameraPath(tensors["warp_in.target_tcw"]), semantics=V1_PLY)

    # The render holds bytes / 127.5 - 1 exactly, so rounding recovers them.
    render_bytes = torch.round((condition.render + 1) * BYTE_SCALE).to(torch.uint8)
    assert torch.equal(render_bytes.permute(0, 2, 3, 1), tensors["ply_out.rgb_u8"])
    assert torch.equal(mask_u8(condition.mask)[..., 0], tensors["ply_out.mask_u8"])
    assert torch.equal(condition.source_frames, scene.frames)
