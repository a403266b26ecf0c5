"""Render Condition: the scene splatted along the path, aligned frame by frame for the sampler."""

from __future__ import annotations

import pytest
import torch
from inspatio_nodes.core.camera import intrinsics_from_fov
from inspatio_nodes.core.paths import CameraPath
from inspatio_nodes.core.render import RenderCondition, RenderConditionError, render_condition
from inspatio_nodes.core.scene import scene_from_images, scene_from_video
from inspatio_nodes.nodes import camera as camera_nodes
from inspatio_nodes.nodes import camera_edit as camera_edit_nodes
from inspatio_nodes.nodes import camera_files as camera_file_nodes
from inspatio_nodes.nodes import render as render_nodes
from inspatio_nodes.nodes import scene as scene_nodes
from inspatio_nodes.nodes import scene_time as scene_time_nodes
from inspatio_nodes.nodes.comfy import NodeInputError
from inspatio_nodes.nodes.render import InSpatioRenderCondition

HEIGHT, WIDTH = 32, 48


def _frames(count: int, seed: int = 0) -> torch.Tensor:
    return (
        torch.rand(count, 3, HEIGHT, WIDTH, generator=torch.Generator().manual_seed(seed)) * 2 - 1
    )


def _video_scene(count: int):
    depth = torch.full((count, HEIGHT, WIDTH), 3.0)
    return scene_from_video(
        _frames(count),
        depth,
        intrinsics_from_fov(60.0, WIDTH, HEIGHT),
        fps=10.0,
        resolution=(HEIGHT, WIDTH),
    )


def _still_path(count: int, sideways: float = 0.0) -> CameraPath:
    world_to_camera = torch.eye(4, dtype=torch.float64).repeat(count, 1, 1)
    world_to_camera[:, 0, 3] = -torch.linspace(0, sideways, count, dtype=torch.float64)
    return CameraPath(world_to_camera)


def _render(scene, path, alignment="exact", semantics="v1.5"):
    return InSpatioRenderCondition().render(scene, path, alignment, semantics)


def test_identity_path_reproduces_the_video_with_a_full_mask():
    scene = _video_scene(5)
    image, mask, condition = _render(scene, _still_path(5))
    assert image.shape == (5, HEIGHT, WIDTH, 3) and mask.shape == (5, HEIGHT, WIDTH)
    assert torch.all(mask == 1)
    torch.testing.assert_close(image, (scene.frames.permute(0, 2, 3, 1) + 1) / 2, atol=1e-5, rtol=0)
    assert isinstance(condition, RenderCondition) and condition.fps == 10.0
    torch.testing.assert_close(condition.source_frames, scene.frames)


def test_moving_camera_opens_holes_that_are_black_and_masked():
    image, mask, _ = _render(_video_scene(5), _still_path(5, sideways=1.0))
    holes = mask[-1] == 0
    assert holes.any()
    assert torch.all(image[-1][holes] == 0)


def test_path_longer_than_the_video_is_an_error_naming_the_path_by_default():
    with pytest.raises(NodeInputError, match="Render Condition: input 'camera_path'.*6 poses"):
        _render(_video_scene(4), _still_path(6))


def test_hold_last_gives_one_frame_per_pose_and_repeats_the_last_source_frame():
    scene = _video_scene(4)
    image, _, condition = _render(scene, _still_path(7), alignment="hold_last")
    assert image.shape[0] == 7 and condition.num_frames == 7
    torch.testing.assert_close(condition.source_frames[6], scene.frames[3])


def _offset_path(count: int, offset: float) -> CameraPath:
    world_to_camera = torch.eye(4, dtype=torch.float64).repeat(count, 1, 1)
    world_to_camera[:, 0, 3] = -offset
    return CameraPath(world_to_camera)


def test_v1_and_v15_semantics_agree_when_every_frame_has_the_same_depth_peak():
    scene = _video_scene(3)
    v15 = _render(scene, _offset_path(3, 0.3))[0]
    v1 = _render(scene, _offset_path(3, 0.3), semantics="v1")[0]
    torch.testing.assert_close(v1, v15)


def test_single_image_scene_renders_every_pose_from_the_one_image():
    image_frames = _frames(1, seed=3)
    scene = scene_from_images(
        image_frames,
        torch.full((1, HEIGHT, WIDTH), 2.0),
        intrinsics_from_fov(60.0, WIDTH, HEIGHT),
        torch.eye(4)[None],
        resolution=(HEIGHT, WIDTH),
    )
    image, mask, condition = _render(scene, _still_path(5, sideways=0.2))
    assert image.shape[0] == 5 and condition.num_frames == 5
    torch.testing.assert_close(condition.source_frames, image_frames.expand(5, -1, -1, -1))
    assert torch.all(mask[0] == 1)


def test_four_view_scene_takes_its_source_frames_from_the_views():
    views = _frames(4, seed=5)
    poses = torch.eye(4).repeat(4, 1, 1)
    poses[:, 0, 3] = torch.tensor([0.0, -0.1, 0.1, -0.2])
    scene = scene_from_images(
        views,
        torch.full((4, HEIGHT, WIDTH), 2.0),
        intrinsics_from_fov(60.0, WIDTH, HEIGHT),
        poses,
        resolution=(HEIGHT, WIDTH),
    )
    _, _, condition = _render(scene, _still_path(6))
    assert condition.num_frames == 6
    for frame in condition.source_frames:
        assert any(torch.equal(frame, view) for view in views)


def test_unknown_semantics_names_the_input():
    with pytest.raises(NodeInputError, match="input 'splat_semantics'"):
        _render(_video_scene(2), _still_path(2), semantics="v2")


@pytest.mark.parametrize(
    "module",
    [
        scene_nodes,
        scene_time_nodes,
        camera_nodes,
        camera_file_nodes,
        camera_edit_nodes,
        render_nodes,
    ],
    ids=lambda m: m.__name__,
)
def test_scene_side_nodes_are_inspatio_nodes_with_custom_socket_types(module):
    for node_id, node in module.NODE_CLASS_MAPPINGS.items():
        assert node_id.startswith("InSpatio") and node.CATEGORY.startswith("InSpatio")
        assert module.NODE_DISPLAY_NAME_MAPPINGS[node_id].startswith("InSpatio")
        assert len(node.RETURN_TYPES) == len(node.RETURN_NAMES) == len(node.OUTPUT_TOOLTIPS)
        custom = [kind for kind in node.RETURN_TYPES if kind.isupper() and "_" in kind]
        assert all(kind.startswith("INSPATIO_") for kind in custom)


def test_render_condition_outside_the_node_names_unknown_semantics():
    with pytest.raises(RenderConditionError, match="'v2'.*v1.5, v1"):
        render_condition(_video_scene(2), _still_path(2), semantics="v2")


# --- v1's point-cloud backend ("v1_ply") ----------------------------------------------------

BYTE_STEP = 1 / 255  # the ply backend truncates colours to bytes


def test_v1_ply_is_the_last_semantics_and_v15_stays_the_default():
    choices, options = InSpatioRenderCondition.INPUT_TYPES()["required"]["splat_semantics"]
    assert choices == ["v1.5", "v1", "v1_ply"] and options["default"] == "v1.5"


def test_v1_ply_identity_path_shows_the_first_frame_one_pixel_up_left_with_holes_where_no_depth():
    # On a fronto-parallel plane every 5-px square ties in z, and the last point drawn (the next
    # row and column) wins: the official backend shows pixel (y+1, x+1) at (y, x).
    depth = torch.full((3, HEIGHT, WIDTH), 3.0)
    hole_rows, hole_cols = slice(10, 20), slice(15, 30)
    depth[0, hole_rows, hole_cols] = 0.0
    frames = _frames(3, seed=7)
    with pytest.warns(UserWarning, match="no depth"):
        scene = scene_from_video(
            frames, depth, intrinsics_from_fov(60.0, WIDTH, HEIGHT), fps=10.0, resolution=None
        )
    image, mask, condition = _render(scene, _still_path(3), semantics="v1_ply")

    source = (frames[0].permute(1, 2, 0) + 1) / 2
    has_depth = depth[0] > 0
    shifted_error = (image[:, :-1, :-1] - source[1:, 1:]).abs()
    assert float(shifted_error[:, has_depth[1:, 1:]].max()) < BYTE_STEP
    # Every pose is the same camera, so every frame draws frame 0 the same way.
    assert torch.equal(image[0], image[-1]) and torch.equal(mask[0], mask[-1])
    assert torch.all(mask[:, has_depth] == 1)
    # The points around the hole reach one pixel into it; the rest is a black, masked hole.
    inner = (slice(None), slice(11, 19), slice(16, 29))
    assert torch.all(mask[inner] == 0) and torch.all(image[inner] == 0)
    assert int((mask[0] == 0).sum()) == 8 * 13
    torch.testing.assert_close(condition.source_frames, frames)
    assert condition.render.min() >= -1 and condition.render.max() <= 1


def test_v1_ply_follows_the_frame_alignment_policy():
    scene = _video_scene(4)
    _, _, condition = _render(scene, _still_path(7), alignment="hold_last", semantics="v1_ply")
    assert condition.num_frames == 7 and condition.mask.shape == (7, 1, HEIGHT, WIDTH)
    torch.testing.assert_close(condition.source_frames[6], scene.frames[3])


def test_v1_ply_on_an_image_scene_names_the_semantics_input():
    scene = scene_from_images(
        _frames(1, seed=3),
        torch.full((1, HEIGHT, WIDTH), 2.0),
        intrinsics_from_fov(60.0, WIDTH, HEIGHT),
        torch.eye(4)[None],
        resolution=(HEIGHT, WIDTH),
    )
    with pytest.raises(NodeInputError, match="input 'splat_semantics'.*video scenes only.*'v1.5'"):
        _render(scene, _still_path(2), semantics="v1_ply")
    with pytest.raises(RenderConditionError, match="'v1_ply' renders video scenes only"):
        render_condition(scene, _still_path(2), semantics="v1_ply")
