"""Parity of the soft z-buffer renderer with the official v1 / v1.5 renders (fixtures §4, §6, §8).

Three kinds of file share the ``render_warp*_io`` prefix and are told apart by their keys:
``warp_in.*`` (v1 ``DepthWarper.forward_warp``), ``warp.z`` (v1.5 video scene) and
``overlap_pixels`` (v1.5 4-image scene). Every size, pose and constant comes from the file.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from conftest import fixture_cases, require_fixture
from inspatio_nodes.core.point_render import render_points_v1
from inspatio_nodes.core.scene import decode_depth_u16, scene_from_images, scene_from_video
from inspatio_nodes.core.soft_splat import V1_SPLAT, V15_SPLAT, project_pixels
from inspatio_nodes.core.splat import (
    BYTE_SCALE,
    frames_from_u8,
    mask_u8,
    render_image_scene,
    render_u8,
    render_video_scene,
)
from safetensors.torch import load_file

RENDER_ATOL = 1e-5  # off the fragile pixels the float32 port matches exactly (measured 0.0)
DISTANCE_RTOL = 1e-5
BYTE_TOLERANCE = 1  # truncation of (x + 1)·127.5


def _load(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(require_fixture(path)))


def _kind(tensors: dict[str, torch.Tensor]) -> str:
    if "warp_in.frame" in tensors:
        return "v1"
    if "overlap_pixels" in tensors:
        return "v15_multiview"
    if "warp.z" in tensors:
        return "v15_video"
    pytest.fail(f"render fixture with unknown keys {sorted(tensors)[:6]}...: cannot interpret it")


def _quiet(build, *args, **kwargs):
    # Fixture depth has deliberate holes (code 0); the warning that counts them is tested elsewhere.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return build(*args, **kwargs)


def _source_bytes(frames: torch.Tensor) -> torch.Tensor:
    """The bytes of the pack's source frames: the inverse of ``frames_from_u8``.

    Upstream sends source.mp4 the bytes it read; ``render_u8``'s truncation (the render writer's
    quirk) would turn e.g. 26 into 25, because ``26 / 127.5 - 1`` comes back as 25.99998.
    """
    return render_u8(frames + 0.5 / BYTE_SCALE)


def _max_abs_off_fragile(
    actual: torch.Tensor, expected: torch.Tensor, steady: torch.Tensor
) -> float:
    return float(((actual - expected).abs() * steady).max())


@pytest.mark.parametrize("case_path", fixture_cases("*render_warp*_io*.safetensors"))
def test_render_matches_official_splat(case_path):
    tensors = _load(case_path)
    kind = _kind(tensors)
    if kind == "v1":
        _check_v1(tensors)
    elif kind == "v15_video":
        _check_v15_video(tensors)
    else:
        _check_v15_multiview(tensors)


def _check_v1(tensors):
    """v1 batched forward_warp (depth max over the whole batch, target K = each frame's K), and
    the v1 "ply" point backend."""
    frames, depth = tensors["warp_in.frame"], tensors["warp_in.depth"][:, 0]
    intrinsics = tensors["warp_in.K"]
    scene = scene_from_video(
        frames, depth, intrinsics, tensors["warp_in.source_tcw"], resolution=None
    )
    render = render_video_scene(scene, tensors["warp_in.target_tcw"], intrinsics, config=V1_SPLAT)
    assert float((render.frames - tensors["render"]).abs().max()) <= RENDER_ATOL
    assert torch.equal(render.mask, tensors["mask"])
    assert torch.equal(mask_u8(render.mask)[..., :1], tensors["mask_u8"])
    byte_error = (render_u8(render.frames).int() - tensors["render_u8"].int()).abs()
    assert int(byte_error.max()) <= BYTE_TOLERANCE

    # The "ply" backend draws frame 0's point cloud with the same K (scaled) and target poses.
    height, width = tensors["ply_out.mask_u8"].shape[-2:]
    rgb, mask = render_points_v1(
        tensors["ply_in.points"],
        tensors["ply_in.colors"],
        tensors["warp_in.target_tcw"],
        intrinsics[0],
        height,
        width,
    )
    assert torch.equal(rgb, tensors["ply_out.rgb_u8"])
    assert torch.equal(mask, tensors["ply_out.mask_u8"])


def _v15_scene(tensors, build_scene, prefix: str):
    """The v1.5 source scene from the fixture's bytes and 16-bit depth (``{prefix}_*`` keys)."""
    depth = decode_depth_u16(tensors[f"{prefix}_depth_u16"], *tensors["depth_range"].tolist())
    assert torch.equal(depth, tensors[f"{prefix}_depth"])
    return _quiet(
        build_scene,
        frames_from_u8(tensors[f"{prefix}_rgb_u8"]),
        depth,
        tensors["source_k"],
        tensors["source_tcw"],
        resolution=None,
    )


def _check_v15_video(tensors):
    scene = _v15_scene(tensors, scene_from_video, "src")
    steady = (tensors["render_fragile"] == 0).float()
    projection = project_pixels(
        scene.depth,
        scene.intrinsics,
        scene.world_to_camera,
        tensors["target_tcw"],
        tensors["target_k"],
    )
    assert _max_abs_off_fragile(projection.z, tensors["warp.z"], steady) <= RENDER_ATOL
    assert torch.equal(projection.valid, tensors["warp.valid"].bool())

    render = render_video_scene(scene, tensors["target_tcw"], tensors["target_k"], config=V15_SPLAT)
    assert _max_abs_off_fragile(render.frames, tensors["render"], steady[:, None]) <= RENDER_ATOL
    assert torch.equal(render.mask[:, 0].bool(), tensors["project.known"].bool())
    known = tensors["project.known"].bool()
    rgb_off_fragile = torch.where(known[:, None], render.frames, 0.0)
    assert (
        _max_abs_off_fragile(rgb_off_fragile, tensors["project.rgb"], steady[:, None])
        <= RENDER_ATOL
    )
    assert _max_abs_off_fragile(render.distance, tensors["project.distance"], steady) <= RENDER_ATOL
    assert torch.equal(mask_u8(render.mask), tensors["mask_u8"])
    byte_error = (render_u8(render.frames).int() - tensors["render_u8"].int()).abs()
    assert int((byte_error * steady[..., None].int()).max()) <= BYTE_TOLERANCE
    # The bytes the pack writes for the source video: its scene's frames through the writer.
    assert torch.equal(_source_bytes(scene.frames), tensors["source_u8"])


def _check_v15_multiview(tensors):
    scene = _v15_scene(tensors, scene_from_images, "view")
    result = render_image_scene(scene, tensors["target_tcw"], tensors["target_k"], config=V15_SPLAT)
    steady = (tensors["render_fragile"] == 0).float()

    assert (
        _max_abs_off_fragile(result.render.frames, tensors["render"], steady[:, None])
        <= RENDER_ATOL
    )
    assert torch.equal(result.view_known, tensors["project.known"].bool())
    assert torch.equal(result.overlap_pixels, tensors["overlap_pixels"])
    assert torch.equal(result.source_indices, tensors["source_indices"])
    assert torch.equal(result.chunk_views, tensors["chunk_views"])
    assert torch.equal(mask_u8(result.render.mask), tensors["mask_u8"])
    source_frames = scene.frames[result.source_view_of_frames()]
    assert torch.equal(_source_bytes(source_frames), tensors["source_u8"])
    byte_error = (render_u8(result.render.frames).int() - tensors["render_u8"].int()).abs()
    assert int((byte_error * steady[..., None].int()).max()) <= BYTE_TOLERANCE

    # Splatted depth of the view that wins each pixel (first index on ties), off-fragile.
    expected_distance = tensors["project.distance"]
    winner = torch.where(tensors["project.known"].bool(), expected_distance, torch.inf).argmin(
        dim=1
    )
    wins = steady.bool() & tensors["project.known"].bool().any(dim=1)
    actual = torch.gather(result.view_distance, 1, winner[:, None])[:, 0][wins]
    expected = torch.gather(expected_distance, 1, winner[:, None])[:, 0][wins]
    torch.testing.assert_close(actual, expected, rtol=DISTANCE_RTOL, atol=0)
