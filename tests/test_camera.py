"""Cameras: intrinsics helpers, rigid-pose helpers and boundary conversions (core/camera.py)."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import fixture_cases_holding, require_fixture
from inspatio_nodes.core.camera import (
    CameraError,
    camera_centres,
    camera_to_world_from_world_to_camera,
    check_intrinsics,
    check_rigid,
    compose,
    crop_intrinsics,
    intrinsics_from_fov,
    invert_rigid,
    look_at,
    opengl_from_world_to_camera,
    pose_from_rotation_translation,
    recentre_principal_point,
    resize_crop_geometry,
    resize_crop_intrinsics,
    resize_intrinsics,
    world_to_camera_from_camera_to_world,
    world_to_camera_from_opengl,
)
from safetensors import safe_open

FLOAT64_TOLERANCE = 1e-12
# The v1 renderer's case among the render-warp fixtures: it holds the warp_in.* inputs.
RENDER_WARP_FIXTURES = fixture_cases_holding("*render_warp*_io*.safetensors", "warp_in.")


def random_rigid_poses(count: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    rotations, _ = torch.linalg.qr(
        torch.randn(count, 3, 3, generator=generator, dtype=torch.float64)
    )
    rotations = rotations * torch.linalg.det(rotations)[:, None, None]  # proper rotations only
    translations = torch.randn(count, 3, generator=generator, dtype=torch.float64)
    return pose_from_rotation_translation(rotations, translations)


def project(intrinsics: torch.Tensor, point: torch.Tensor) -> torch.Tensor:
    homogeneous = intrinsics @ point
    return homogeneous[:2] / homogeneous[2]


def test_fov_intrinsics_put_the_image_edge_at_half_the_field_of_view():
    intrinsics = intrinsics_from_fov(90.0, 832, 480)
    edge = torch.tensor([math.tan(math.radians(45.0)), 0.0, 1.0], dtype=torch.float64)
    torch.testing.assert_close(
        project(intrinsics, edge), torch.tensor([832.0, 240.0], dtype=torch.float64)
    )
    vertical = intrinsics_from_fov(90.0, 832, 480, fov_axis="vertical")
    assert vertical[1, 1] == pytest.approx(240.0)


def test_resize_scales_rows_without_a_half_pixel_shift():
    intrinsics = torch.tensor([[500.0, 0, 320], [0, 400, 240], [0, 0, 1]], dtype=torch.float64)
    resized = resize_intrinsics(intrinsics, (640, 480), (832, 480))
    expected = torch.tensor([[650.0, 0, 416], [0, 400, 240], [0, 0, 1]], dtype=torch.float64)
    torch.testing.assert_close(resized, expected)


def test_crop_moves_the_principal_point_only():
    intrinsics = torch.tensor([[500.0, 0, 320], [0, 400, 240], [0, 0, 1]], dtype=torch.float64)
    cropped = crop_intrinsics(intrinsics, 10, 20)
    torch.testing.assert_close(cropped[:2, 2], torch.tensor([310.0, 220.0], dtype=torch.float64))
    torch.testing.assert_close(cropped[:2, :2], intrinsics[:2, :2])


def test_resize_and_centre_crop_keep_a_pixel_on_the_same_ray():
    intrinsics = torch.tensor([[700.0, 0, 480], [0, 700, 270], [0, 0, 1]], dtype=torch.float64)
    (resized_width, resized_height), (left, top) = resize_crop_geometry((960, 540), (832, 480))
    assert resized_width >= 832 and resized_height >= 480
    adjusted = resize_crop_intrinsics(intrinsics, (960, 540), (832, 480))
    point = torch.tensor([0.3, -0.2, 2.0], dtype=torch.float64)
    original = project(intrinsics, point)
    scale = torch.tensor([resized_width / 960, resized_height / 540], dtype=torch.float64)
    expected = original * scale - torch.tensor([left, top], dtype=torch.float64)
    torch.testing.assert_close(project(adjusted, point), expected)


@pytest.mark.parametrize("case_path", RENDER_WARP_FIXTURES)
def test_recentred_principal_point_matches_v1_scale_intrinsic(case_path):
    with safe_open(str(require_fixture(case_path)), "pt") as tensors:
        file_intrinsics = tensors.get_tensor("intrinsic_txt")[:3, :3].float()
        expected = tensors.get_tensor("warp_in.K")[0]
        height, width = tensors.get_tensor("warp_in.frame").shape[-2:]
    recentred = recentre_principal_point(file_intrinsics, width, height)
    torch.testing.assert_close(recentred, expected, atol=1e-6, rtol=0)


def test_rigid_inverse_is_the_matrix_inverse():
    poses = random_rigid_poses(8)
    identity = torch.eye(4, dtype=torch.float64).expand(8, 4, 4)
    torch.testing.assert_close(
        invert_rigid(poses) @ poses, identity, atol=FLOAT64_TOLERANCE, rtol=0
    )
    torch.testing.assert_close(
        compose(poses, invert_rigid(poses)), identity, atol=FLOAT64_TOLERANCE, rtol=0
    )


def test_camera_centre_maps_to_the_camera_origin():
    poses = random_rigid_poses(5, seed=1)
    centres = camera_centres(poses)
    homogeneous = torch.cat([centres, torch.ones(5, 1, dtype=torch.float64)], dim=-1)
    in_camera = (poses @ homogeneous[..., None])[..., :3, 0]
    torch.testing.assert_close(
        in_camera, torch.zeros(5, 3, dtype=torch.float64), atol=FLOAT64_TOLERANCE, rtol=0
    )


def test_look_at_points_the_optical_axis_at_the_target_with_y_down():
    eye = torch.tensor([1.0, -0.5, -2.0], dtype=torch.float64)
    target = torch.tensor([0.2, 0.1, 3.0], dtype=torch.float64)
    world_to_camera = look_at(eye, target)
    target_in_camera = world_to_camera[:3, :3] @ target + world_to_camera[:3, 3]
    distance = torch.linalg.vector_norm(target - eye)
    torch.testing.assert_close(
        target_in_camera, torch.tensor([0.0, 0.0, float(distance)], dtype=torch.float64)
    )
    # World up (−y) must appear up on screen: a point above the target projects to negative y.
    above = target + torch.tensor([0.0, -1.0, 0.0], dtype=torch.float64)
    assert (world_to_camera[:3, :3] @ above + world_to_camera[:3, 3])[1] < 0
    torch.testing.assert_close(camera_centres(world_to_camera), eye)


def test_look_at_rejects_degenerate_directions():
    eye = torch.zeros(3, dtype=torch.float64)
    with pytest.raises(CameraError, match="coincide"):
        look_at(eye, eye)
    with pytest.raises(CameraError, match="parallel"):
        look_at(eye, torch.tensor([0.0, 5.0, 0.0]))


def test_camera_to_world_and_opengl_conversions_round_trip():
    poses = random_rigid_poses(6, seed=2)
    torch.testing.assert_close(
        world_to_camera_from_camera_to_world(camera_to_world_from_world_to_camera(poses)), poses
    )
    torch.testing.assert_close(
        world_to_camera_from_opengl(opengl_from_world_to_camera(poses)), poses
    )


def test_opengl_camera_looks_down_its_negative_z():
    # An OpenGL camera at the origin with identity pose looks along world −z, y up.
    world_to_camera = world_to_camera_from_opengl(torch.eye(4, dtype=torch.float64))
    ahead = world_to_camera[:3, :3] @ torch.tensor([0.0, 0.0, -1.0], dtype=torch.float64)
    above = world_to_camera[:3, :3] @ torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64)
    assert ahead[2] == pytest.approx(1.0) and above[1] == pytest.approx(-1.0)


@pytest.mark.parametrize(
    ("pose", "message"),
    [
        (torch.eye(3), r"\[..., 4, 4\]"),
        (torch.diag(torch.tensor([2.0, 1.0, 1.0, 1.0])), "non-orthonormal"),
        (torch.diag(torch.tensor([-1.0, 1.0, 1.0, 1.0])), "mirrored"),
        (torch.tensor([[1.0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 1, 1]]), "bottom row"),
        (torch.full((4, 4), float("nan")), "NaN"),
    ],
)
def test_non_rigid_or_misshaped_poses_are_rejected(pose, message):
    with pytest.raises(CameraError, match=message):
        check_rigid(pose, "target pose")


def test_bad_intrinsics_are_rejected_with_the_input_name():
    with pytest.raises(CameraError, match="source K"):
        check_intrinsics(torch.eye(4), "source K")
    with pytest.raises(CameraError, match="focal"):
        check_intrinsics(torch.diag(torch.tensor([0.0, 1.0, 1.0])), "source K")
    with pytest.raises(CameraError, match="fov_degrees"):
        intrinsics_from_fov(180.0, 64, 48)
