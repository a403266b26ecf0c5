"""Scenes (``core/scene.py``) and frame counts (``core/frame_counts.py``): construction and
validation, v1.5 frame padding, v1 truncation / adaptive count / freeze."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import fixture_cases, load_json, require_fixture
from inspatio_nodes.core.camera import CameraError
from inspatio_nodes.core.frame_counts import (
    FRAMES_PER_BLOCK,
    FrameCountError,
    adaptive_frame_indices,
    align_frame_counts,
    block_frame_indices,
    bounce_indices,
    chunk_frame_indices,
    freeze_indices,
    iter_video_chunks,
    latent_frame_count,
    latent_frame_groups,
    padded_frame_count,
    padded_frame_indices,
    trajectory_total_angle,
    truncated_frame_count,
)
from inspatio_nodes.core.scene import (
    SceneInputError,
    align_scene_to_path,
    decode_depth_u16,
    scene_from_images,
    scene_from_video,
)

HEIGHT, WIDTH = 32, 48


def _inputs(frames: int = 3, height: int = HEIGHT, width: int = WIDTH):
    generator = torch.Generator().manual_seed(7)
    colours = torch.rand(frames, 3, height, width, generator=generator) * 2 - 1
    depth = 1 + torch.rand(frames, height, width, generator=generator)
    intrinsics = torch.tensor([[40.0, 0.0, width / 2], [0.0, 40.0, height / 2], [0.0, 0.0, 1.0]])
    return colours, depth, intrinsics


# --- v1.5 frame padding (fixture §7) -------------------------------------------------------------


@pytest.mark.parametrize("case_path", fixture_cases("*scene_frames*.json"))
def test_frame_padding_matches_official_schema(case_path):
    record = load_json(require_fixture(case_path))
    assert record["constants"]["FRAMES_PER_BLOCK"] == FRAMES_PER_BLOCK
    for index, valid in enumerate(record["valid_frames"]):
        padded = padded_frame_count(valid)
        assert padded == record["padded_frames"][index], valid
        assert latent_frame_count(padded) == record["latent_frames"][index]
        assert latent_frame_count(padded) // FRAMES_PER_BLOCK == record["blocks"][index]
        assert (
            len(latent_frame_groups(valid)) == record["latent_frame_groups_count_of_valid"][index]
        )
        assert (
            len(latent_frame_groups(padded)) == record["latent_frame_groups_count_of_padded"][index]
        )
    message = record["padded_frame_count_of_0"].split(": ", 1)[1]
    with pytest.raises(ValueError, match=message):
        padded_frame_count(0)


@pytest.mark.parametrize("case_path", fixture_cases("*scene_frames*.json"))
def test_video_chunks_match_official_iter_video_chunks(case_path):
    examples = load_json(require_fixture(case_path))["iter_video_chunks"]["examples"]
    for example in examples:
        indices = chunk_frame_indices(example["valid"], example["padded"], example["repeat_first"])
        assert [len(chunk) for chunk in indices] == example["chunk_sizes"]
        assert indices == example["source_frame"]
        frames = torch.arange(example["valid"])
        chunks = iter_video_chunks(frames, example["padded"], example["repeat_first"])
        assert [chunk.tolist() for chunk in chunks] == example["source_frame"]


def test_padded_frame_count_invariants_for_1_to_1000_frames():
    frames_per_block = FRAMES_PER_BLOCK * 4
    for valid in range(1, 1001):
        padded = padded_frame_count(valid)
        assert padded >= valid and padded - valid < frames_per_block
        assert (padded + 3) % frames_per_block == 0
        assert latent_frame_count(padded) % FRAMES_PER_BLOCK == 0
    assert [padded_frame_count(n) for n in (1, 139, 247)] == [9, 141, 249]
    assert latent_frame_count(249) == 63


def test_blocks_cover_frames_0_to_8_then_12_frames_each():
    """SPEC §4: block 0 covers pixel frames 0 | 1–4 | 5–8 (9 frames); every later block 12."""
    valid = 40  # padded to 45 frames: 9 + 12 + 12 + 12
    blocks = block_frame_indices(valid)
    assert blocks[0] == list(range(9))
    assert [len(block) for block in blocks] == [9, 12, 12, 12]
    assert blocks[1] == list(range(9, 21)) and blocks[2] == list(range(21, 33))
    assert blocks[3] == list(range(33, 40)) + [valid - 1] * 5  # padding holds the last frame
    assert [index for block in blocks for index in block] == padded_frame_indices(valid)


def test_every_block_is_its_latent_frames_pixel_groups():
    for valid in range(1, 100):
        padded = padded_frame_count(valid)
        groups = latent_frame_groups(padded)
        expected = [
            [
                min(index, valid - 1)
                for group in groups[start : start + FRAMES_PER_BLOCK]
                for index in group
            ]
            for start in range(0, len(groups), FRAMES_PER_BLOCK)
        ]
        assert block_frame_indices(valid) == expected, valid
        assert padded_frame_indices(valid) == [min(index, valid - 1) for index in range(padded)]


@pytest.mark.parametrize("case_path", fixture_cases("*scene_frames*.json"))
def test_block_count_and_padded_length_match_official_schema(case_path):
    record = load_json(require_fixture(case_path))
    for index, valid in enumerate(record["valid_frames"]):
        blocks = block_frame_indices(valid)
        assert len(blocks) == record["blocks"][index], valid
        assert sum(len(block) for block in blocks) == record["padded_frames"][index], valid


def test_v1_truncates_to_whole_blocks():
    assert truncated_frame_count(121) == 117
    assert truncated_frame_count(81) == 81
    with pytest.raises(FrameCountError, match="fewer than one block"):
        truncated_frame_count(8)


# --- v1 adaptive count, bounce, freeze ----------------------------------------------------------


def test_bounce_plays_forward_then_backward():
    assert bounce_indices(5, 12) == [0, 1, 2, 3, 4, 3, 2, 1, 0, 1, 2, 3]
    assert bounce_indices(5, 3) == [0, 2, 4]
    assert bounce_indices(1, 3) == [0, 0, 0]


@pytest.mark.parametrize("case_path", fixture_cases("*traj_*.json"))
def test_adaptive_frame_count_matches_official_test_dataset(case_path):
    record = load_json(require_fixture(case_path))
    keyframes = record["keyframes"]
    total = trajectory_total_angle(keyframes["x_up_angle"], keyframes["y_left_angle"])
    cases = [case for case in record["cases"] if case["kind"] == "TestDataset.get_data"]
    for case in cases:
        params, expected = case["params"], case["source_frame_indices"]
        source = params["n_source_frames"]
        indices = (
            adaptive_frame_indices(source, total)
            if params["adaptive_frame"]
            else list(range(source))
        )
        assert indices == expected, case["name"]
        assert len(indices) == case["n_frames"]


def test_adaptive_range_of_the_circle_trajectory_is_301_to_801_frames():
    # x_y_circle_cycle: 240° in total -> [ceil(240/0.8)+1, floor(240/0.3)+1]
    assert len(adaptive_frame_indices(30, 240.0)) == 301
    assert len(adaptive_frame_indices(900, 240.0)) == 801
    assert adaptive_frame_indices(500, 240.0) == list(range(500))
    assert len(adaptive_frame_indices(50, 0.0)) == 121  # zoom: at least 121
    assert len(adaptive_frame_indices(1500, 0.0)) == 1000  # long videos are cut first


def test_freeze_inserts_copies_after_the_frozen_frame():
    assert freeze_indices(5, 3, 1) == [0, 1, 1, 1, 1, 2, 3, 4]
    assert freeze_indices(4, 2) == [0, 1, 2, 2, 2, 3]
    colours, depth, intrinsics = _inputs(4)
    poses = torch.eye(4).repeat(4, 1, 1)
    poses[:, 0, 3] = torch.arange(4.0)
    scene = scene_from_video(colours, depth, intrinsics, poses, resolution=None)
    frozen = scene.select_frames(freeze_indices(4, 2, 1))
    assert frozen.num_frames == 6
    assert frozen.world_to_camera[:, 0, 3].tolist() == [0, 1, 1, 1, 2, 3]
    assert torch.equal(frozen.depth[2], scene.depth[1]) and torch.equal(
        frozen.frames[3], scene.frames[1]
    )


def test_path_and_video_lengths_are_aligned_by_an_explicit_policy():
    assert align_frame_counts(3, 3, "exact") == [0, 1, 2]
    assert align_frame_counts(5, 3, "shortest") == [0, 1, 2]
    assert align_frame_counts(3, 5, "hold_last") == [0, 1, 2, 2, 2]
    assert align_frame_counts(3, 6, "bounce") == [0, 1, 2, 1, 0, 1]
    assert align_frame_counts(6, 3, "bounce") == [0, 1, 2]
    with pytest.raises(FrameCountError, match="5 poses but the video has 3 frames"):
        align_frame_counts(3, 5, "exact")
    with pytest.raises(FrameCountError, match="frame-count policy"):
        align_frame_counts(3, 5, "loop")


def test_a_short_video_holds_its_last_frame_for_a_longer_path():
    colours, depth, intrinsics = _inputs(3)
    scene = scene_from_video(colours, depth, intrinsics, resolution=None)
    held = align_scene_to_path(scene, 5, "hold_last")
    assert held.num_frames == 5 and torch.equal(held.frames[4], scene.frames[2])
    assert align_scene_to_path(scene, 2, "shortest").num_frames == 2
    images = scene_from_images(
        colours[:1], depth[:1], intrinsics, torch.eye(4)[None], resolution=None
    )
    assert align_scene_to_path(images, 7, "exact") is images


# --- construction --------------------------------------------------------------------------------


def test_video_scene_is_resized_and_centre_cropped_with_intrinsics_following():
    colours, depth, intrinsics = _inputs(2, height=40, width=96)
    scene = scene_from_video(colours, depth, intrinsics, resolution=(48, 80), fps=24.0)
    assert scene.frames.shape == (2, 3, 48, 80) and scene.depth.shape == (2, 48, 80)
    # 40x96 -> 48x115 covers 48x80; 17 columns are cropped off the left. K rows scale by the
    # actual size ratios.
    scale_x, scale_y = 115 / 96, 48 / 40
    expected = torch.tensor(
        [[40 * scale_x, 0, 48 * scale_x - 17], [0, 40 * scale_y, 20 * scale_y], [0, 0, 1]]
    )
    torch.testing.assert_close(scene.intrinsics[0], expected)
    assert torch.equal(scene.world_to_camera, torch.eye(4).expand(2, 4, 4))  # static camera
    assert scene.fps == 24.0 and scene.kind == "video"


def test_image_scene_has_one_or_four_views():
    colours, depth, intrinsics = _inputs(4)
    poses = torch.eye(4).expand(4, 4, 4)
    scene = scene_from_images(colours, depth, intrinsics, poses, resolution=None)
    assert scene.kind == "images" and scene.num_frames == 4
    with pytest.raises(SceneInputError, match="1 image or 4 views"):
        scene_from_images(colours[:2], depth[:2], intrinsics, poses[:2], resolution=None)


def test_invalid_depth_is_masked_out_with_a_warning_that_counts_it():
    colours, depth, intrinsics = _inputs(2)
    depth[0, 0, :5] = float("nan")
    depth[1, 3, :2] = -1.0
    depth[1, 4, :1] = float("inf")
    with pytest.warns(UserWarning, match="8 of"):
        scene = scene_from_video(colours, depth, intrinsics, resolution=None)
    assert int((scene.depth == 0).sum()) == 8 and bool(torch.isfinite(scene.depth).all())


def test_all_invalid_depth_is_an_error():
    colours, depth, intrinsics = _inputs(1)
    with pytest.raises(SceneInputError, match="no finite positive value"):
        scene_from_video(colours, torch.zeros_like(depth), intrinsics, resolution=None)


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        (lambda c, d, k, p: (c[:, :2], d, k, p), SceneInputError, r"\[F, 3, H, W\]"),
        (lambda c, d, k, p: (c * 3, d, k, p), SceneInputError, r"in \[-1, 1\]"),
        (
            lambda c, d, k, p: (c, d[:, :-1], k, p),
            SceneInputError,
            "one \\[H, W\\] depth map per frame",
        ),
        (
            lambda c, d, k, p: (c, d[:2], k, p),
            SceneInputError,
            "one \\[H, W\\] depth map per frame",
        ),
        (lambda c, d, k, p: (c, d, k[:2], p), SceneInputError, "intrinsics has shape"),
        (lambda c, d, k, p: (c, d, -k, p), CameraError, "focal"),
        (lambda c, d, k, p: (c, d, k, p[:2]), SceneInputError, "world_to_camera has shape"),
        (lambda c, d, k, p: (c, d, k, p[:, :3]), SceneInputError, "world_to_camera has shape"),
        (lambda c, d, k, p: (c, d, k, p * 2), CameraError, "bottom row|non-orthonormal"),
        (
            lambda c, d, k, p: (c, d, k, p @ torch.diag(torch.tensor([1.0, 1.0, -1.0, 1.0]))),
            CameraError,
            "mirrored",
        ),
    ],
    ids=[
        "channels",
        "range",
        "depth-size",
        "depth-count",
        "k-shape",
        "k-focal",
        "pose-count",
        "pose-shape",
        "pose-scaled",
        "pose-mirrored",
    ],
)
def test_bad_scene_inputs_are_named_in_the_error(change, error, message):
    colours, depth, intrinsics = _inputs(3)
    poses = torch.eye(4).repeat(3, 1, 1)
    colours, depth, intrinsics, poses = change(colours, depth, intrinsics, poses)
    with pytest.raises(error, match=message):
        scene_from_video(colours, depth, intrinsics, poses, resolution=None)


def test_resolution_must_be_a_multiple_of_16_and_fps_positive():
    colours, depth, intrinsics = _inputs(1)
    with pytest.raises(SceneInputError, match="multiples of 16"):
        scene_from_video(colours, depth, intrinsics, resolution=(30, 48))
    with pytest.raises(SceneInputError, match="fps"):
        scene_from_video(colours, depth, intrinsics, fps=0.0, resolution=None)


def test_uint16_depth_decodes_linearly_in_float64():
    codes = torch.tensor([[0, 1, 32768, 65535]], dtype=torch.int32)
    depth = decode_depth_u16(codes, 0.5, 4.78278208)
    expected = [
        float(torch.tensor(0.5 + q / 65535 * (4.78278208 - 0.5), dtype=torch.float32))
        for q in codes[0].tolist()
    ]
    assert depth[0].tolist() == expected
    assert math.isclose(float(depth[0, -1]), 4.78278208, rel_tol=1e-7)
    with pytest.raises(SceneInputError, match="min <= max"):
        decode_depth_u16(codes, 2.0, 1.0)
    with pytest.raises(SceneInputError, match="0..65535"):
        decode_depth_u16(codes.float(), 0.0, 1.0)
