"""WorldFM scene geometry (``core/worldfm/``: panorama.py, bank.py, selector.py): points, bank,
condition DB, selection."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from conftest import fixture_cases, load_json, require_fixture, sibling
from inspatio_nodes.core.point_render import half_point_cloud, render_points_hard
from inspatio_nodes.core.worldfm import panorama as panorama_module
from inspatio_nodes.core.worldfm.bank import (
    ReferenceBank,
    ReferenceLatentCache,
    bank_camera_to_world,
    bank_yaw_pitch,
    condition_database,
    input_view_world_to_camera,
    panorama_bank,
    panorama_scene,
    reference_image,
    single_image_bank,
)
from inspatio_nodes.core.worldfm.panorama import (
    PanoramaInputError,
    image_points,
    panorama_points,
    prepare_depth,
)
from inspatio_nodes.core.worldfm.selector import SelectionParams, select_reference
from safetensors.torch import load_file

PANO_CASES = fixture_cases("*worldfm_geometry*pano*.safetensors")
RENDER_CASES = fixture_cases("*worldfm_geometry*render*.safetensors")
#: bank.images_u8 tolerance (WORLDFM.md §2b): |Δ| <= 1 on at most 0.1 % of the pixels.
BANK_IMAGE_MAX_DIFF = 1
BANK_IMAGE_MAX_FRACTION = 1e-3


def _pano_case(case_path):
    pano = load_file(str(require_fixture(case_path)))
    config = load_json(require_fixture(sibling(case_path, "pano", "config", ".json")))
    return pano, config


def _bank_of(pano) -> ReferenceBank:
    crop_size = pano["bank.images_u8"].shape[1]
    focal = float(pano["bank.K"][0, 0])
    return panorama_bank(pano["pano_bgr_u8"].flip(-1), crop_size, focal)


def _render_case(case_path):
    render = load_file(str(require_fixture(case_path)))
    pano_path = require_fixture(sibling(case_path, "render", "pano"))
    pano = load_file(str(pano_path))
    config = load_json(require_fixture(sibling(case_path, "render", "config", ".json")))
    cloud = half_point_cloud(pano["ply_xyz"], pano["ply_rgb_u8"])
    database = condition_database(_bank_of(pano), cloud, render["render.depth"].shape[-1])
    return render, pano, config, database


@pytest.mark.parametrize("case_path", PANO_CASES)
def test_prepare_depth_matches_upstream(case_path):
    pano, config = _pano_case(case_path)
    scale = config["postprocess_panorama"]["depth_scale"]
    height, width = pano["depth"].shape
    torch.testing.assert_close(
        prepare_depth(pano["depth_raw"], scale, width, height), pano["depth"], atol=1e-5, rtol=0
    )
    small_scale = config["prepare_depth_case"]["depth_scale"]
    out = pano["prepare_depth.out"]
    upsampled = prepare_depth(pano["prepare_depth.in"], small_scale, out.shape[1], out.shape[0])
    torch.testing.assert_close(upsampled, out, atol=1e-5, rtol=0)


@pytest.mark.parametrize("case_path", PANO_CASES)
def test_panorama_points_and_colours_match_upstream(case_path):
    pano, _ = _pano_case(case_path)
    points, colours = panorama_points(pano["pano_bgr_u8"].flip(-1), pano["depth"])
    torch.testing.assert_close(points, pano["ply_xyz"], atol=1e-5, rtol=0)
    assert torch.equal(colours, pano["ply_rgb_u8"])


@pytest.mark.parametrize("case_path", PANO_CASES)
def test_bank_poses_intrinsics_and_images_match_upstream(case_path):
    pano, _ = _pano_case(case_path)
    bank = _bank_of(pano)
    assert torch.equal(bank_yaw_pitch(), pano["bank.yaw_pitch"])
    torch.testing.assert_close(
        bank.camera_to_world.to(torch.float64), pano["bank.c2w"], atol=1e-6, rtol=0
    )
    torch.testing.assert_close(bank.intrinsics, pano["bank.K"], atol=0, rtol=0)
    difference = (bank.images.to(torch.int32) - pano["bank.images_u8"].to(torch.int32)).abs()
    assert int(difference.max()) <= BANK_IMAGE_MAX_DIFF
    changed_pixels = int(difference.amax(-1).gt(0).sum())
    assert changed_pixels <= BANK_IMAGE_MAX_FRACTION * difference[..., 0].numel()


@pytest.mark.parametrize("case_path", RENDER_CASES)
def test_condition_database_matches_upstream_including_the_unscaled_depth_quirk(case_path):
    render, _, _, database = _render_case(case_path)
    torch.testing.assert_close(database.projections, render["bank.P_views"], atol=1e-5, rtol=0)
    assert torch.equal(database.depths, render["bank.depth_views"])
    assert torch.equal(database.centres, render["bank.C_views"])


@pytest.mark.parametrize("case_path", RENDER_CASES)
def test_selection_counts_scores_and_best_views_match_upstream(case_path):
    render, _, config, database = _render_case(case_path)
    params = SelectionParams(**config["selection_params"])
    variant = SelectionParams(**config["selection_variant_params"])
    unweighted = dataclasses.replace(params, use_distance_weight=False)
    world_to_camera = torch.linalg.inv(render["target.c2w"])
    for pose in range(world_to_camera.shape[0]):
        arguments = (
            database,
            render["render.depth"][pose],
            render["target.K"],
            world_to_camera[pose],
        )
        chosen = select_reference(*arguments, params)
        assert (chosen.best, chosen.hits, chosen.samples) == (
            int(render["select.best"][pose]),
            int(render["select.hits"][pose]),
            int(render["select.samples"][pose]),
        )
        assert torch.equal(chosen.scores, render["select.score"][pose])
        plain = select_reference(*arguments, unweighted)
        assert torch.equal(plain.counts.to(torch.float32), render["select.counts"][pose])
        assert plain.best == int(render["select.best_unweighted"][pose])
        other = select_reference(*arguments, variant)
        assert (other.best, other.hits) == (
            int(render["select_variant.best"][pose]),
            int(render["select_variant.hits"][pose]),
        )
        assert torch.equal(other.scores, render["select_variant.score"][pose])


@pytest.mark.parametrize("case_path", RENDER_CASES)
def test_selected_reference_is_resized_with_pil_bilinear(case_path):
    render, pano, _, _ = _render_case(case_path)
    bank = ReferenceBank(
        images=pano["bank.images_u8"], intrinsics=pano["bank.K"], camera_to_world=pano["bank.c2w"]
    )
    size = render["select.cond_nearest_u8"].shape[1]
    for pose, best in enumerate(render["select.best"].tolist()):
        assert torch.equal(
            reference_image(bank, best, size), render["select.cond_nearest_u8"][pose]
        )


def test_bank_views_look_along_the_documented_axes():
    camera_to_world = bank_camera_to_world(bank_yaw_pitch())
    forward = camera_to_world[:, :3, 2]
    assert camera_to_world.shape == (42, 4, 4)
    torch.testing.assert_close(
        forward[0], torch.tensor([1.0, 0.0, 0.0]), atol=1e-6, rtol=0
    )  # yaw 0
    torch.testing.assert_close(
        forward[6], torch.tensor([0.0, 0.0, 1.0]), atol=1e-6, rtol=0
    )  # yaw -90°
    torch.testing.assert_close(
        forward[40], torch.tensor([0.0, -1.0, 0.0]), atol=1e-6, rtol=0
    )  # up (y down)
    torch.testing.assert_close(forward[41], torch.tensor([0.0, 1.0, 0.0]), atol=1e-6, rtol=0)
    rotation = camera_to_world[:, :3, :3]
    torch.testing.assert_close(
        rotation.transpose(1, 2) @ rotation, torch.eye(3).expand(42, 3, 3), atol=1e-6, rtol=0
    )
    assert torch.all(torch.linalg.det(rotation) > 0)
    assert torch.all(camera_to_world[:, :3, 3] == 0)


def test_input_view_looks_along_x_with_right_minus_z_and_up_minus_y():
    """SPEC-worldfm.md §5: the input camera sits at the origin and looks along +x."""
    world_to_camera = input_view_world_to_camera()
    world_directions = torch.tensor(
        [[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, -1.0, 0.0]], dtype=torch.float64
    )  # forward, right, up
    camera_directions = world_directions @ world_to_camera[:3, :3].T
    opencv_forward_right_up = torch.tensor(
        [[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0]], dtype=torch.float64
    )
    assert torch.equal(camera_directions, opencv_forward_right_up)
    assert torch.all(world_to_camera[:3, 3] == 0)
    # It is the panorama bank's front view (yaw 0, pitch 0), where upstream puts the input image.
    front_view = bank_camera_to_world(bank_yaw_pitch())[0].to(torch.float64)
    torch.testing.assert_close(torch.linalg.inv(world_to_camera), front_view, atol=1e-6, rtol=0)


def _sphere_room(height: int = 32, radius: float = 4.0):
    """A panorama of a sphere around the origin with a colour per pixel column and row."""
    rows = torch.arange(height)[:, None].expand(height, 2 * height)
    columns = torch.arange(2 * height)[None].expand(height, 2 * height)
    panorama = torch.stack([columns * 4 % 256, rows * 8 % 256, (rows + columns) % 256], -1).to(
        torch.uint8
    )
    return panorama, torch.full((height, 2 * height), radius)


def test_selector_picks_the_bank_view_the_target_looks_through():
    panorama, distance = _sphere_room()
    points, colours = panorama_points(panorama, distance)
    bank = panorama_bank(panorama, crop_size=24, focal=12.0)
    render_size = 24
    database = condition_database(bank, half_point_cloud(points, colours), render_size)
    target_view = 10  # yaw 90°, pitch 45°
    target = bank.world_to_camera[target_view]
    _, depth = render_points_hard(
        half_point_cloud(points, colours), bank.intrinsics, target, render_size, render_size
    )
    chosen = select_reference(database, depth[0], bank.intrinsics, target)
    assert chosen.best == target_view
    assert chosen.hits == chosen.samples

    # The same view moved 30 m back: beyond dist_max every weight is 0 and view 0 wins.
    far_away = _translation(0.0, 0.0, 30.0) @ target
    _, far_depth = render_points_hard(
        half_point_cloud(points, colours), bank.intrinsics, far_away, render_size, render_size
    )
    far = select_reference(database, far_depth[0], bank.intrinsics, far_away)
    assert far.samples > 0 and int(far.counts.max()) > 0
    assert far.best == 0 and torch.all(far.scores == 0)


def _translation(x: float, y: float, z: float) -> torch.Tensor:
    pose = torch.eye(4, dtype=torch.float64)
    pose[:3, 3] = torch.tensor([x, y, z], dtype=torch.float64)
    return pose


def test_reference_latents_are_encoded_once_per_view():
    panorama, _ = _sphere_room()
    bank = panorama_bank(panorama, crop_size=16, focal=8.0)
    encoded: list[int] = []

    def encode(image):
        encoded.append(int(image.sum()))
        return image.to(torch.float32).mean()[None]

    cache = ReferenceLatentCache(bank, size=16, encode=encode)
    first = cache[3]
    assert cache[3] is first
    cache[5]
    assert len(encoded) == 2


def test_single_image_with_depth_renders_back_into_its_own_camera():
    height, width = 12, 16
    image = torch.randint(
        0, 256, (height, width, 3), generator=torch.Generator().manual_seed(0), dtype=torch.uint8
    )
    depth = torch.linspace(1.0, 3.0, height * width).reshape(height, width)
    intrinsics = torch.tensor(
        [[14.0, 0.0, 8.0], [0.0, 14.0, 6.0], [0.0, 0.0, 1.0]], dtype=torch.float64
    )
    world_to_camera = _translation(0.2, -0.1, 0.5)
    points, colours = image_points(image, depth, intrinsics, world_to_camera)
    _, rendered_depth = render_points_hard(
        half_point_cloud(points, colours), intrinsics, world_to_camera, height, width
    )
    torch.testing.assert_close(rendered_depth[0], depth, atol=2e-3, rtol=0)  # float16 positions
    bank = single_image_bank(image, intrinsics, world_to_camera)
    assert bank.num_views == 1 and torch.equal(bank.images[0], image)
    torch.testing.assert_close(bank.world_to_camera[0], world_to_camera, atol=1e-6, rtol=0)


def test_panorama_must_be_two_to_one_and_match_its_distance_map():
    panorama, distance = _sphere_room()
    with pytest.raises(PanoramaInputError, match="not 2:1"):
        panorama_points(panorama[:, :40], distance[:, :40])
    with pytest.raises(PanoramaInputError, match="resample the distance map"):
        panorama_points(panorama, distance[:-2])
    with pytest.raises(PanoramaInputError, match="no valid"):
        prepare_depth(torch.full((4, 8), math.nan), 1.0, 8, 4)


def test_panoramas_over_the_cap_are_box_averaged_down(monkeypatch):
    monkeypatch.setattr(panorama_module, "PANORAMA_MAX_WIDTH", 8)
    monkeypatch.setattr(panorama_module, "PANORAMA_MAX_HEIGHT", 4)
    panorama = torch.zeros(8, 16, 3, dtype=torch.uint8)
    panorama[0::2, 0::2] = 200  # one bright pixel in every 2×2 block: the average is 50
    fitted = panorama_module.fit_panorama(panorama)
    assert fitted.shape == (4, 8, 3) and torch.all(fitted == 50)
    small = torch.zeros(2, 4, 3, dtype=torch.uint8)
    assert panorama_module.fit_panorama(small) is small


def test_panorama_scene_resamples_a_low_resolution_distance_map():
    panorama, distance = _sphere_room(height=16)
    scene = panorama_scene(panorama, distance[::2, ::2], render_size=8, crop_size=8, focal=4.0)
    expected = half_point_cloud(*panorama_points(panorama, distance))
    assert torch.equal(scene.cloud.xyz, expected.xyz)
    with pytest.raises(PanoramaInputError, match="2:1 equirectangular"):
        panorama_scene(panorama, distance[:, :16], render_size=8, crop_size=8, focal=4.0)
