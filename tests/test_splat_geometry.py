"""Soft z-buffer renderer: analytic geometry, view fusion, source-view selection, config."""

from __future__ import annotations

import math

import pytest
import torch
from inspatio_nodes.core.scene import Scene
from inspatio_nodes.core.soft_splat import (
    V1_SPLAT,
    V15_SPLAT,
    SoftSplatConfig,
    SplatInputError,
    pixel_grid,
    project_pixels,
)
from inspatio_nodes.core.splat import (
    fuse_nearest_view,
    render_image_scene,
    render_u8,
    render_video_scene,
    select_chunk_top3,
)

HEIGHT, WIDTH = 24, 32
FOCAL = 30.0


def _intrinsics() -> torch.Tensor:
    return torch.tensor([[FOCAL, 0.0, 15.3], [0.0, FOCAL * 1.02, 11.7], [0.0, 0.0, 1.0]])


def _rotation(yaw_degrees: float, pitch_degrees: float) -> torch.Tensor:
    yaw, pitch = math.radians(yaw_degrees), math.radians(pitch_degrees)
    about_y = torch.tensor(
        [[math.cos(yaw), 0, math.sin(yaw)], [0, 1, 0], [-math.sin(yaw), 0, math.cos(yaw)]]
    )
    about_x = torch.tensor(
        [[1, 0, 0], [0, math.cos(pitch), -math.sin(pitch)], [0, math.sin(pitch), math.cos(pitch)]]
    )
    return (about_y @ about_x).float()


def _pose(rotation: torch.Tensor, translation: tuple[float, float, float]) -> torch.Tensor:
    pose = torch.eye(4)
    pose[:3, :3] = rotation
    pose[:3, 3] = torch.tensor(translation)
    return pose


def _scene(
    frames: int, depth: torch.Tensor, poses: torch.Tensor, seed: int = 0, kind: str = "video"
) -> Scene:
    generator = torch.Generator().manual_seed(seed)
    colours = torch.rand(frames, 3, HEIGHT, WIDTH, generator=generator) * 2 - 1
    return Scene(colours, depth, _intrinsics().expand(frames, 3, 3), poses, fps=16.0, kind=kind)


def _smooth_depth(frames: int, low: float, high: float, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(frames, 1, 4, 5, generator=generator)
    smooth = torch.nn.functional.interpolate(
        coarse, size=(HEIGHT, WIDTH), mode="bilinear", align_corners=False
    )
    return low + (high - low) * smooth[:, 0]


def test_identity_target_reproduces_the_source_with_a_full_mask():
    poses = torch.stack(
        [_pose(_rotation(10, -5), (0.1, 0.2, -0.3)), _pose(_rotation(-20, 3), (0.0, -0.1, 0.5))]
    )
    scene = _scene(2, _smooth_depth(2, 2.0, 2.2), poses)
    render = render_video_scene(scene, poses, scene.intrinsics)
    assert bool(render.mask.bool().all())
    torch.testing.assert_close(render.frames, scene.frames, atol=1e-4, rtol=0)
    torch.testing.assert_close(render.distance, scene.depth, atol=1e-4, rtol=0)


def test_pure_rotation_follows_the_homography_at_any_depth():
    source = torch.eye(4)[None]
    target = _pose(_rotation(4, -3), (0.0, 0.0, 0.0))[None]
    k = _intrinsics()
    for depth in (_smooth_depth(1, 1.0, 9.0), torch.full((1, HEIGHT, WIDTH), 3.0)):
        projection = project_pixels(depth, k, source, target, k)
        pixels = torch.cat([pixel_grid(HEIGHT, WIDTH), torch.ones(1, HEIGHT, WIDTH)])
        mapped = torch.einsum("ij,jhw->ihw", k @ target[0, :3, :3] @ torch.linalg.inv(k), pixels)
        torch.testing.assert_close(projection.coords[0], mapped[:2] / mapped[2:], atol=1e-3, rtol=0)


def test_fronto_parallel_plane_under_sideways_translation_shifts_by_focal_times_baseline_over_depth():
    depth_value, shift_pixels = 2.0, 2.5
    baseline = shift_pixels * depth_value / FOCAL  # camera moves +x: the image moves -x
    source = torch.eye(4)[None]
    target = _pose(torch.eye(3), (-baseline, 0.0, 0.0))[None]
    scene = _scene(1, torch.full((1, HEIGHT, WIDTH), depth_value), source)
    projection = project_pixels(scene.depth, scene.intrinsics, source, target, scene.intrinsics[0])
    torch.testing.assert_close(
        projection.coords[0, 0], pixel_grid(HEIGHT, WIDTH)[0] - shift_pixels, atol=1e-4, rtol=0
    )
    torch.testing.assert_close(projection.z, scene.depth)

    render = render_video_scene(scene, target, scene.intrinsics[0])
    # Target column u receives source columns u+2 and u+3, each landing half a pixel away.
    columns = WIDTH - 3
    expected = (scene.frames[..., 2 : 2 + columns] + scene.frames[..., 3 : 3 + columns]) / 2
    torch.testing.assert_close(render.frames[..., :columns], expected, atol=1e-5, rtol=0)
    assert bool(render.mask[..., : WIDTH - 2].bool().all())
    assert not bool(render.mask[..., WIDTH - 2 :].bool().any())
    assert bool((render.frames[..., WIDTH - 2 :] == -1).all())


def test_points_behind_or_on_the_camera_plane_and_pixels_without_depth_are_not_splatted():
    depth = torch.full((1, HEIGHT, WIDTH), 2.0)
    depth[:, :, : WIDTH // 2] = 0.0
    target = _pose(torch.eye(3), (0.0, 0.0, -5.0))[None]  # the plane is now 3 units behind
    scene = _scene(1, depth, torch.eye(4)[None])
    behind = render_video_scene(scene, target, scene.intrinsics[0])
    assert not bool(behind.mask.bool().any())
    # v1 keeps z >= 0 but divides by z: its z == 0 points get inf/NaN coordinates that land on
    # the cropped border. The plane exactly in the target camera's plane renders nothing here too.
    on_plane = _pose(torch.eye(3), (0.0, 0.0, -2.0))[None]
    assert not bool(render_video_scene(scene, on_plane, scene.intrinsics[0]).mask.bool().any())
    same = render_video_scene(scene, torch.eye(4)[None], scene.intrinsics[0])
    assert not bool(same.mask[..., : WIDTH // 2 - 1].bool().any())
    assert bool(same.mask[..., WIDTH // 2 :].bool().all())


def test_nearer_surface_wins_the_soft_z_buffer():
    # A near strip in front of a far plane; moving sideways makes the strip overlap the plane.
    depth = torch.full((1, HEIGHT, WIDTH), 8.0)
    depth[:, :, 10:14] = 1.0
    scene = _scene(1, depth, torch.eye(4)[None])
    scene = Scene(
        torch.where(depth[:, None] < 2, 1.0, -0.5).expand(1, 3, HEIGHT, WIDTH),
        depth,
        scene.intrinsics,
        scene.world_to_camera,
        scene.fps,
    )
    target = _pose(torch.eye(3), (-0.1, 0.0, 0.0))[
        None
    ]  # the strip moves 3 px left, the plane 0.375
    render = render_video_scene(scene, target, scene.intrinsics[0])
    strip_columns = render.frames[0, 0, :, 7:10]  # plane points land here too, with less weight
    assert bool((strip_columns > 0.99).all())


def test_whole_batch_normalisation_renders_the_same_in_any_number_of_calls():
    frames = 5
    poses = torch.stack([_pose(_rotation(3 * i, 0), (0.05 * i, 0, 0)) for i in range(frames)])
    targets = torch.stack(
        [_pose(_rotation(3 * i + 2, 1), (0.05 * i - 0.1, 0.02, 0.1)) for i in range(frames)]
    )
    scene = _scene(frames, _smooth_depth(frames, 1.0, 6.0), poses)
    whole = render_video_scene(scene, targets, config=V1_SPLAT, frames_per_call=frames)
    pieces = render_video_scene(scene, targets, config=V1_SPLAT, frames_per_call=2)
    torch.testing.assert_close(pieces.frames, whole.frames, atol=1e-6, rtol=0)
    assert torch.equal(pieces.mask, whole.mask)
    per_frame = render_video_scene(scene, targets, config=V15_SPLAT)
    assert float((per_frame.frames - whole.frames).abs().max()) > 0  # the scope is a real quantity


def test_nearest_known_view_wins_and_the_earlier_view_wins_exact_ties():
    rgb = torch.stack([torch.full((3, 1, 3), value) for value in (0.1, 0.2, 0.3)])[
        None
    ]  # [1, V, 3, 1, 3]
    distance = torch.tensor([[[[2.0, 5.0, 1.0]], [[1.0, 5.0, 1.0]], [[1.0, 4.0, 0.5]]]])
    known = torch.tensor([[[[True, True, True]], [[True, True, True]], [[True, False, False]]]])
    render, winner = fuse_nearest_view(rgb, distance, known)
    assert winner[0, 0].tolist() == [1, 0, 0]
    torch.testing.assert_close(render.frames[0, 0, 0], torch.tensor([0.2, 0.1, 0.1]))


def test_twin_views_splat_bit_identically_so_the_first_twin_always_wins():
    poses = torch.stack(
        [_pose(_rotation(-8, 0), (0.3, 0, 0)), _pose(_rotation(8, 2), (-0.3, 0, 0.1))]
    )
    poses = torch.cat([poses, poses[1:], poses[:1]])  # views 2 and 3 twin views 1 and 0
    depth = _smooth_depth(2, 2.0, 4.0)
    scene = _scene(4, torch.cat([depth, depth[1:], depth[:1]]), poses, kind="images")
    targets = torch.stack([_pose(_rotation(2 * i - 4, 0), (0.1 * i - 0.2, 0, 0)) for i in range(9)])
    result = render_image_scene(scene, targets)
    assert torch.equal(result.view_distance[:, 2], result.view_distance[:, 1])
    assert torch.equal(result.view_distance[:, 3], result.view_distance[:, 0])
    winner = torch.where(result.view_known, result.view_distance, torch.inf).argmin(dim=1)
    assert not bool((winner >= 2).any())


def test_chunk_top3_keeps_the_best_covered_views_and_the_best_assignment():
    overlap = torch.tensor([[5, 9, 1, 9], [8, 1, 1, 1], [1, 1, 7, 1]])
    source_indices, chunk_views = select_chunk_top3(overlap)
    assert chunk_views.tolist() == [[0, 1, 3]]  # totals 14, 11, 9, 11: 1 and 3 tie, 2 drops
    assert source_indices.tolist() == [1, 0, 3]  # (1, 0, 3) and (3, 0, 1) tie at 18: smaller tuple


def test_chunk_top3_needs_whole_chunks_of_three_groups():
    with pytest.raises(SplatInputError, match="whole chunks of 3"):
        select_chunk_top3(torch.ones(4, 4, dtype=torch.int64))


def test_render_bytes_are_truncated_after_clipping():
    frames = (
        torch.tensor([-1.0, -0.99, 0.0, 0.999, 1.0, 1.5]).reshape(1, 1, 1, 6).expand(1, 3, 1, 6)
    )
    assert render_u8(frames)[0, 0, :, 0].tolist() == [0, 1, 127, 254, 255, 255]


def test_target_poses_must_match_the_video_length_and_shape():
    scene = _scene(2, torch.full((2, HEIGHT, WIDTH), 2.0), torch.eye(4).expand(2, 4, 4))
    with pytest.raises(SplatInputError, match="align them"):
        render_video_scene(scene, torch.eye(4).expand(3, 4, 4))
    with pytest.raises(SplatInputError, match=r"\[T, 4, 4\]"):
        render_video_scene(scene, torch.eye(4)[:3].expand(2, 3, 4))
    with pytest.raises(SplatInputError, match="target_intrinsics"):
        render_video_scene(scene, torch.eye(4).expand(2, 4, 4), torch.eye(3).expand(3, 3, 3))


def test_config_rejects_an_unknown_normalisation_scope():
    with pytest.raises(SplatInputError, match="depth_weight_scope"):
        SoftSplatConfig(depth_weight_scope="view")


def test_a_streamed_block_of_an_image_scene_is_grouped_like_the_whole_video():
    poses = torch.stack([_pose(_rotation(8 * v - 12, 0), (0.1 * v - 0.15, 0, 0)) for v in range(4)])
    scene = _scene(4, _smooth_depth(4, 2.0, 4.0), poses, kind="images")
    targets = torch.stack([_pose(_rotation(i - 10, 0), (0.02 * i - 0.2, 0, 0)) for i in range(21)])
    whole = render_image_scene(scene, targets)
    block = render_image_scene(scene, targets[9:], first_frame=9)
    assert torch.equal(block.overlap_pixels, whole.overlap_pixels[3:])
    assert torch.equal(block.source_indices, whole.source_indices[3:])
    assert torch.equal(block.render.frames, whole.render.frames[9:])
    with pytest.raises(SplatInputError, match="latent frame group"):
        render_image_scene(scene, targets[8:], first_frame=8)


def test_splat_sums_do_not_depend_on_the_thread_count():
    poses = torch.stack([_pose(_rotation(6, -2), (0.2, 0, 0))] * 3)
    targets = torch.stack([_pose(_rotation(-4 * i, 1), (-0.1 * i, 0.05, 0.2)) for i in range(3)])
    scene = _scene(3, _smooth_depth(3, 1.0, 5.0), poses)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        serial = render_video_scene(scene, targets, frames_per_call=3)
        torch.set_num_threads(max(2, threads))
        parallel = render_video_scene(scene, targets, frames_per_call=3)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(serial.frames, parallel.frames)
    assert torch.equal(serial.distance, parallel.distance)
