"""Scene nodes: ComfyUI frames and depth maps in, a validated scene at the model resolution out."""

from __future__ import annotations

import pytest
import torch
from inspatio_nodes.core.paths import CameraPath
from inspatio_nodes.nodes.comfy import NodeInputError
from inspatio_nodes.nodes.scene import InSpatioSceneFromImages, InSpatioSceneFromVideo
from inspatio_nodes.nodes.scene_time import InSpatioAdaptSceneV1, InSpatioFreezeScene

FRAMES, SOURCE_HEIGHT, SOURCE_WIDTH = 13, 36, 60
MODEL_HEIGHT, MODEL_WIDTH = 32, 48


def _video(frames: int = FRAMES) -> torch.Tensor:
    return torch.rand(
        frames, SOURCE_HEIGHT, SOURCE_WIDTH, 3, generator=torch.Generator().manual_seed(0)
    )


def _grey_depth(frames: int = FRAMES, value: float = 0.5) -> torch.Tensor:
    return torch.full((frames, SOURCE_HEIGHT, SOURCE_WIDTH, 3), value)


def _video_arguments(**overrides) -> dict:
    arguments = {
        "frames": _video(),
        "depth": _grey_depth(),
        "depth_encoding": "inverse",
        "depth_near": 1.0,
        "depth_far": 4.0,
        "depth_scale": 1.0,
        "fps": 12.0,
        "fov_degrees": 60.0,
        "width": MODEL_WIDTH,
        "height": MODEL_HEIGHT,
        "frame_count_policy": "pad_v1.5",
    }
    arguments.update(overrides)
    return arguments


def _image_arguments(views: int, **overrides) -> dict:
    """Scene from Images inputs: ``views`` images with grey depth read as metric, no cameras."""
    arguments = {
        "images": _video(views),
        "depth": _grey_depth(views),
        "depth_encoding": "metric",
        "depth_near": 0.5,
        "depth_far": 10.0,
        "depth_scale": 1.0,
        "fps": 16.0,
        "fov_degrees": 70.0,
        "width": MODEL_WIDTH,
        "height": MODEL_HEIGHT,
    }
    arguments.update(overrides)
    return arguments


def _static_cameras(count: int) -> CameraPath:
    world_to_camera = torch.eye(4, dtype=torch.float64).repeat(count, 1, 1)
    world_to_camera[:, 0, 3] = torch.linspace(0, 1, count, dtype=torch.float64)
    return CameraPath(world_to_camera)


def test_video_scene_is_fitted_to_the_model_resolution():
    (scene,) = InSpatioSceneFromVideo().build(**_video_arguments())
    assert scene.kind == "video"
    assert scene.frames.shape == (FRAMES, 3, MODEL_HEIGHT, MODEL_WIDTH)
    assert scene.depth.shape == (FRAMES, MODEL_HEIGHT, MODEL_WIDTH)
    assert scene.fps == 12.0
    torch.testing.assert_close(scene.world_to_camera, torch.eye(4).expand(FRAMES, 4, 4))


def test_inverse_depth_of_mid_grey_is_the_harmonic_middle_of_the_range():
    (scene,) = InSpatioSceneFromVideo().build(**_video_arguments())
    expected = 1.0 / (0.5 / 1.0 + 0.5 / 4.0)
    torch.testing.assert_close(scene.depth, torch.full_like(scene.depth, expected))


def test_depth_given_as_a_mask_reads_like_a_grey_image():
    (from_image,) = InSpatioSceneFromVideo().build(**_video_arguments())
    (from_mask,) = InSpatioSceneFromVideo().build(**_video_arguments(depth=_grey_depth()[..., 0]))
    torch.testing.assert_close(from_mask.depth, from_image.depth)


def test_truncate_v1_keeps_whole_blocks_only():
    (scene,) = InSpatioSceneFromVideo().build(**_video_arguments(frame_count_policy="truncate_v1"))
    assert scene.num_frames == 9  # 13 frames = 4 latents -> one block of 3 latents = 9 frames


def test_source_cameras_become_the_scene_poses():
    cameras = _static_cameras(FRAMES)
    (scene,) = InSpatioSceneFromVideo().build(**_video_arguments(), source_cameras=cameras)
    torch.testing.assert_close(scene.world_to_camera, cameras.world_to_camera.float())


def test_source_cameras_of_the_wrong_count_name_the_input():
    with pytest.raises(NodeInputError, match="Scene from Video: input 'source_cameras'"):
        InSpatioSceneFromVideo().build(
            **_video_arguments(), source_cameras=_static_cameras(FRAMES - 1)
        )


def test_colour_mapped_depth_names_the_node_and_the_depth_input():
    coloured = _grey_depth()
    coloured[..., 0] = 1.0
    with pytest.raises(NodeInputError, match="Scene from Video: input 'depth'.*grayscale"):
        InSpatioSceneFromVideo().build(**_video_arguments(depth=coloured))


def test_inverted_depth_range_names_the_encoding_input():
    with pytest.raises(NodeInputError, match="input 'depth_encoding'.*near < far"):
        InSpatioSceneFromVideo().build(**_video_arguments(depth_near=5.0, depth_far=2.0))


def test_single_image_scene_sits_at_the_origin():
    (scene,) = InSpatioSceneFromImages().build(**_image_arguments(1, depth_scale=2.0))
    assert scene.kind == "images" and scene.num_frames == 1
    torch.testing.assert_close(scene.depth, torch.full_like(scene.depth, 1.0))
    torch.testing.assert_close(scene.world_to_camera, torch.eye(4)[None])


def test_four_views_without_cameras_are_refused():
    with pytest.raises(NodeInputError, match="input 'source_cameras' is missing"):
        InSpatioSceneFromImages().build(**_image_arguments(4))


def test_freeze_holds_one_frame_while_the_rest_plays():
    (scene,) = InSpatioSceneFromVideo().build(**_video_arguments())
    (frozen,) = InSpatioFreezeScene().freeze(scene, freeze_frame=4, freeze_repeat=5)
    assert frozen.num_frames == FRAMES + 5
    for held in range(5, 10):
        torch.testing.assert_close(frozen.frames[held], scene.frames[4])
    torch.testing.assert_close(frozen.frames[10], scene.frames[5])


def test_freeze_frame_outside_the_video_names_the_input():
    (scene,) = InSpatioSceneFromVideo().build(**_video_arguments())
    with pytest.raises(NodeInputError, match="input 'freeze_frame'"):
        InSpatioFreezeScene().freeze(scene, freeze_frame=FRAMES, freeze_repeat=2)


def test_every_scene_input_has_a_tooltip():
    for node in (
        InSpatioSceneFromVideo,
        InSpatioSceneFromImages,
        InSpatioFreezeScene,
        InSpatioAdaptSceneV1,
    ):
        for section in node.INPUT_TYPES().values():
            for name, (_, options) in section.items():
                assert options.get("tooltip"), f"{node.__name__}.{name} has no tooltip"


def test_v1_adaptive_count_bounces_a_short_video_to_suit_the_circle_cycle():
    (scene,) = InSpatioSceneFromVideo().build(**_video_arguments())
    adapted, frames = InSpatioAdaptSceneV1().adapt(scene, "x_y_circle_cycle", "")
    # 240 degrees of keyframe travel need at least ceil(240 / 0.8) + 1 = 301 frames.
    assert frames == adapted.num_frames == 301
    torch.testing.assert_close(adapted.frames[FRAMES], scene.frames[FRAMES - 2])  # played backwards


def test_v1_adaptive_count_reads_a_keyframe_file(tmp_path):
    (scene,) = InSpatioSceneFromVideo().build(**_video_arguments())
    file = tmp_path / "zoom.txt"
    file.write_text("0 0 0\n0 0 0\n0 0.5 1\n")
    _, frames = InSpatioAdaptSceneV1().adapt(scene, "file", str(file))
    assert frames == 121  # a pure zoom keeps the count, but never below 121 frames


def test_v1_adaptive_count_names_a_missing_file():
    (scene,) = InSpatioSceneFromVideo().build(**_video_arguments())
    with pytest.raises(NodeInputError, match="Adapt Scene to v1 Trajectory: input 'file'"):
        InSpatioAdaptSceneV1().adapt(scene, "file", "/nonexistent/trajectory.txt")


def test_depth_batch_of_another_length_names_the_depth_input():
    with pytest.raises(NodeInputError, match="input 'depth' has 12 depth maps for 13 frames"):
        InSpatioSceneFromVideo().build(**_video_arguments(depth=_grey_depth(FRAMES - 1)))
