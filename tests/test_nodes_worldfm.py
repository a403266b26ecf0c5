"""WorldFM nodes (``nodes/worldfm.py``, ``nodes/worldfm_scene.py``) called outside ComfyUI.

A tiny random frame model with the real architecture is saved as safetensors with its config in
the metadata (what ``load_worldfm`` reads), the VAE is a duck-typed stand-in with ComfyUI's
``encode(IMAGE)`` / ``decode(latent)`` contract (8× average pooling to 4 channels, nearest
upsampling back), and the panorama is a synthetic room whose ray distance is analytic.
The render node is compared with the official renderer's fixture (``WORLDFM.md`` §2).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict

import pytest
import torch
import torch.nn.functional as F
from conftest import fixture_cases, load_json, require_fixture, sibling
from einops import rearrange
from inspatio_nodes.core.camera import world_to_camera_from_camera_to_world
from inspatio_nodes.core.path_files import write_worldfm_meta
from inspatio_nodes.core.paths import CameraPath
from inspatio_nodes.core.worldfm.model import CONFIG_METADATA_KEY, WorldFMConfig, WorldFMModel
from inspatio_nodes.nodes import comfy as cf
from inspatio_nodes.nodes import worldfm as nodes
from inspatio_nodes.nodes import worldfm_scene as scene_nodes
from inspatio_nodes.nodes.camera import InSpatioCameraPreset
from inspatio_nodes.nodes.camera_files import InSpatioLoadCameraPath
from safetensors.torch import load_file, save_file

RENDER_CASES = fixture_cases("*worldfm_geometry*render*.safetensors")
#: bank.images_u8 tolerance (WORLDFM.md §2b): |Δ| <= 1 on at most 0.1 % of the pixels.
BANK_IMAGE_MAX_DIFF = 1
BANK_IMAGE_MAX_FRACTION = 1e-3

LATENT_STRIDE = 8
SDXL_CHANNELS = 4
#: The tiny model: 4×4 latents, so frames are 32×32.
TINY_CONFIG = WorldFMConfig.for_latent_size(4, depth=1, hidden_size=32, num_heads=2, mlp_hidden=64)
PIXART_HEAD_WIDTH = 72  # what the loader assumes when a file does not record its head count
#: The tiny model as a released file holds it: no config recorded, so 72-wide heads.
TINY_RELEASED_STYLE = WorldFMConfig.for_latent_size(
    4, depth=1, hidden_size=2 * PIXART_HEAD_WIDTH, num_heads=2, mlp_hidden=4 * PIXART_HEAD_WIDTH
)
PANORAMA_HEIGHT = 24
ROOM_HALF_SIZE = (3.0, 1.5, 2.0)  # x, y, z half-extents of the box around the panorama centre
#: A small analogue of the released bank (504² crops, fx 320, 512² renders).
RENDER_SIZE = 24
REFERENCE_SIZE = 24
REFERENCE_FOCAL = 12.0
IMAGE_SIZE = 16


class PoolingVAE:
    """ComfyUI's VAE contract: IMAGE [B, H, W, 3] in [0, 1] <-> raw 4-channel latents; counts calls."""

    latent_channels = SDXL_CHANNELS

    def __init__(self) -> None:
        self.encoded = 0
        self.decoded = 0

    def encode(self, images):
        self.encoded += images.shape[0]
        pixels = rearrange(images, "b h w c -> b c h w") * 2.0 - 1.0
        pooled = F.avg_pool2d(pixels, LATENT_STRIDE)
        return torch.cat([pooled, pooled.mean(1, keepdim=True)], dim=1)

    def decode(self, latents):
        self.decoded += latents.shape[0]
        pixels = F.interpolate(latents[:, :3], scale_factor=LATENT_STRIDE, mode="nearest")
        return rearrange(((pixels + 1.0) / 2.0).clamp(0.0, 1.0), "b c h w -> b h w c")


def room_panorama(height: int = PANORAMA_HEIGHT):
    """A 2:1 panorama of an axis-aligned box room: IMAGE [1, H, 2H, 3] and ray distance MASK."""
    width = 2 * height
    theta = torch.arange(width, dtype=torch.float64) / width * 2 * math.pi - math.pi
    phi = torch.arange(height, dtype=torch.float64) / height * math.pi
    theta, phi = theta[None, :], phi[:, None]
    directions = torch.stack(
        torch.broadcast_tensors(phi.sin() * theta.cos(), -phi.cos(), -phi.sin() * theta.sin()),
        dim=-1,
    )
    half = torch.tensor(ROOM_HALF_SIZE, dtype=torch.float64)
    distance = (half / directions.abs().clamp_min(1e-9)).amin(dim=-1)
    wall = directions.abs().argmax(dim=-1)
    checker = ((theta * 4).floor() + (phi * 4).floor()).remainder(2).expand(height, width)
    colours = torch.stack(
        [(wall == axis).double() * 0.6 + checker * 0.3 + 0.05 for axis in range(3)], dim=-1
    )
    return colours[None].float(), distance[None].float()


def tiny_model_file(tmp_path, seed: int = 0):
    torch.manual_seed(seed)
    model = WorldFMModel(TINY_CONFIG)
    path = tmp_path / "worldfm_tiny.safetensors"
    state = {key: value.contiguous() for key, value in model.state_dict().items()}
    save_file(state, str(path), metadata={CONFIG_METADATA_KEY: json.dumps(asdict(TINY_CONFIG))})
    return path


def save_released_style(path) -> None:
    """A random ``TINY_RELEASED_STYLE`` model saved as the release saves it: a pickled
    ``{"state_dict": ...}`` with the constructor's unused square ``pos_embed``."""
    torch.manual_seed(0)
    config = TINY_RELEASED_STYLE
    state = WorldFMModel(config).state_dict()
    # The square table is the only record of the latent size in a released file.
    state["pos_embed"] = torch.zeros(1, config.base_size**2, config.hidden_size)
    torch.save({"state_dict": state}, path)


def inverse_distance_image(distance, near: float, far: float):
    """The grey IMAGE a depth node writes for ``distance``: 1 at near, 0 at far, linear in 1/d."""
    inverse = (1.0 / distance - 1.0 / far) / (1.0 / near - 1.0 / far)
    return inverse[..., None].expand(-1, -1, -1, 3)


def look_along(yaw_degrees: float, shift: float = 0.0, frames: int = 1) -> CameraPath:
    """Cameras at the centre (moved ``shift`` along +z per frame) turned by yaw about the y axis."""
    yaw = math.radians(yaw_degrees)
    # The input view looks along +x with its right along -z (SPEC-worldfm.md §5), then turns.
    forward = torch.tensor([math.cos(yaw), 0.0, -math.sin(yaw)], dtype=torch.float64)
    down = torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64)
    right = torch.linalg.cross(down, forward)
    camera_to_world = torch.eye(4, dtype=torch.float64).repeat(frames, 1, 1)
    camera_to_world[:, :3, :3] = torch.stack([right, down, forward], dim=-1)
    camera_to_world[:, 2, 3] = shift * torch.arange(frames, dtype=torch.float64)
    return CameraPath(world_to_camera_from_camera_to_world(camera_to_world))


def panorama_scene_node(
    panorama,
    distance,
    encoding="metric",
    near=0.5,
    far=20.0,
    scale=1.0,
    render_size=RENDER_SIZE,
    reference_size=REFERENCE_SIZE,
    reference_focal=REFERENCE_FOCAL,
):
    (scene,) = scene_nodes.InSpatioWorldFMSceneFromPanorama().build(
        panorama,
        distance,
        encoding,
        near,
        far,
        scale,
        render_size,
        reference_size,
        reference_focal,
    )
    return scene


@pytest.fixture(scope="module")
def room_scene():
    return panorama_scene_node(*room_panorama())


@pytest.fixture()
def model(tmp_path):
    (handle,) = nodes.InSpatioWorldFMModelLoader().load(str(tiny_model_file(tmp_path)), "auto")
    return handle


def sample(model, scene, path, seed=3, steps=2, vae=None):
    (frames,) = nodes.InSpatioWorldFMSampler().sample(
        model, vae or PoolingVAE(), scene, path, steps, seed
    )
    return frames


# --- declarations ----------------------------------------------------------------------------


WORLDFM_NODES = {**nodes.NODE_CLASS_MAPPINGS, **scene_nodes.NODE_CLASS_MAPPINGS}
WORLDFM_NAMES = {**nodes.NODE_DISPLAY_NAME_MAPPINGS, **scene_nodes.NODE_DISPLAY_NAME_MAPPINGS}


@pytest.mark.parametrize("node_id", sorted(WORLDFM_NODES))
def test_every_node_is_declared_with_tooltips_in_the_worldfm_category(node_id):
    node_class = WORLDFM_NODES[node_id]
    assert node_id.startswith("InSpatio")
    assert node_class.CATEGORY == "InSpatio/WorldFM"
    assert len(node_class.OUTPUT_TOOLTIPS) == len(node_class.RETURN_TYPES)
    for section in node_class.INPUT_TYPES().values():
        for name, (_, *options) in section.items():
            assert options and options[0].get("tooltip"), f"{node_id}.{name} has no tooltip"
    assert WORLDFM_NAMES[node_id] == node_class.NODE


def test_sampler_seed_widget_has_control_after_generate():
    seed = nodes.InSpatioWorldFMSampler.INPUT_TYPES()["required"]["seed"][1]
    assert seed["control_after_generate"] is True


# --- loader ----------------------------------------------------------------------------------


def test_loader_reads_a_safetensors_copy_with_its_config(model, tmp_path):
    assert model.config == TINY_CONFIG
    assert model.dtype == torch.float32  # "auto" on the CPU
    (half,) = nodes.InSpatioWorldFMModelLoader().load(str(tiny_model_file(tmp_path)), "fp16")
    assert half.dtype == torch.float16


def test_loader_names_node_and_input_for_another_pixart_variant(tmp_path):
    path = tiny_model_file(tmp_path)
    tensors = load_file(str(path))
    tensors["csize_embedder.mlp.0.weight"] = torch.zeros(2, 2)
    other = tmp_path / "pixart_alpha.safetensors"
    save_file(tensors, str(other))
    with pytest.raises(cf.NodeInputError, match="Load WorldFM Model: input 'checkpoint'.*micro"):
        nodes.InSpatioWorldFMModelLoader().load(str(other), "auto")


def test_loader_fingerprint_changes_when_the_checkpoint_file_is_replaced(tmp_path):
    loader = nodes.InSpatioWorldFMModelLoader
    path = tiny_model_file(tmp_path)
    first = loader.IS_CHANGED(checkpoint=str(path), weight_dtype="auto")
    assert first and loader.IS_CHANGED(checkpoint=str(path), weight_dtype="fp16") == first
    save_released_style(path)  # another model under the same name
    assert loader.IS_CHANGED(checkpoint=str(path), weight_dtype="auto") != first


# --- scenes ----------------------------------------------------------------------------------


def test_panorama_scene_has_one_point_per_pixel_and_the_42_view_bank(room_scene):
    assert room_scene.cloud.xyz.shape[0] == PANORAMA_HEIGHT * 2 * PANORAMA_HEIGHT
    assert room_scene.bank.num_views == 42
    assert room_scene.database.depths.shape == (42, RENDER_SIZE, RENDER_SIZE)
    # The analytic room: every bank view sees its walls, at depths inside the box.
    depths = room_scene.database.depths
    assert bool((depths > 0).flatten(1).any(dim=1).all())
    assert float(depths.max()) <= math.hypot(*ROOM_HALF_SIZE) + 1e-2


def test_panorama_scene_reads_inverse_distance_maps_through_core_depth():
    panorama, distance = room_panorama()
    near, far = float(distance.min()), float(distance.max())
    metric = panorama_scene_node(panorama, distance)
    grey_image = inverse_distance_image(distance, near, far)
    read = panorama_scene_node(panorama, grey_image, "inverse", near, far)
    torch.testing.assert_close(
        read.cloud.xyz.float(), metric.cloud.xyz.float(), atol=2e-3, rtol=2e-3
    )


def test_panorama_that_is_not_2_to_1_is_reported_on_the_panorama_input():
    panorama, distance = room_panorama()
    with pytest.raises(
        cf.NodeInputError, match="WorldFM Scene from Panorama: input 'panorama'.*2:1"
    ):
        panorama_scene_node(panorama[:, :, :-4], distance)


def test_distance_map_of_another_shape_is_reported_on_the_distance_input():
    panorama, distance = room_panorama()
    with pytest.raises(cf.NodeInputError, match="input 'distance'.*2:1"):
        panorama_scene_node(panorama, distance[:, :, :-4])


def test_panorama_batch_of_two_is_refused_with_the_fix():
    panorama, distance = room_panorama()
    with pytest.raises(cf.NodeInputError, match="input 'panorama'.*single image"):
        panorama_scene_node(panorama.expand(2, -1, -1, -1), distance)


def image_with_depth():
    """A square image of a fronto-parallel wall at distance 2 (its z-depth as a MASK)."""
    generator = torch.Generator().manual_seed(5)
    levels = torch.randint(0, 256, (1, IMAGE_SIZE, IMAGE_SIZE, 3), generator=generator)
    image = levels.float() / 255.0  # what Load Image gives: 8-bit levels
    return image, torch.full((1, IMAGE_SIZE, IMAGE_SIZE), 2.0)


def test_image_scene_looks_along_x_so_its_own_camera_sees_the_image_again():
    image, depth = image_with_depth()
    fov = 70.0
    (scene,) = scene_nodes.InSpatioWorldFMSceneFromImage().build(
        image, depth, "metric", 0.5, 20.0, 1.0, fov, IMAGE_SIZE
    )
    assert scene.bank.num_views == 1
    path = look_along(0.0)
    focal = IMAGE_SIZE / 2 / math.tan(math.radians(fov) / 2)
    intrinsics = torch.tensor(
        [[focal, 0, IMAGE_SIZE / 2], [0, focal, IMAGE_SIZE / 2], [0, 0, 1]], dtype=torch.float64
    )
    renders, references = nodes.InSpatioWorldFMRender().render(
        scene, CameraPath(path.world_to_camera, intrinsics)
    )
    # The float16 colour cache truncates some values by one level (WORLDFM.md §2c).
    assert float((renders - image).abs().max()) <= 1.0 / 255.0 + 1e-6
    assert torch.equal(references, image)


def test_camera_that_sees_no_point_is_reported_on_the_camera_path_input():
    image, depth = image_with_depth()
    (scene,) = scene_nodes.InSpatioWorldFMSceneFromImage().build(
        image, depth, "metric", 0.5, 20.0, 1.0, 60.0, IMAGE_SIZE
    )
    with pytest.raises(cf.NodeInputError, match="WorldFM Render: input 'camera_path'.*behind"):
        nodes.InSpatioWorldFMRender().render(scene, look_along(180.0))


def test_camera_that_sees_no_point_names_the_frame_and_the_input_view_node():
    image, depth = image_with_depth()
    (scene,) = scene_nodes.InSpatioWorldFMSceneFromImage().build(
        image, depth, "metric", 0.5, 20.0, 1.0, 60.0, IMAGE_SIZE
    )
    seeing, blind = look_along(0.0), look_along(180.0)
    path = CameraPath(torch.cat([seeing.world_to_camera, blind.world_to_camera]))
    with pytest.raises(
        cf.NodeInputError, match="input 'camera_path' frame 1 .*WorldFM Path from Input View"
    ):
        nodes.InSpatioWorldFMRender().render(scene, path)


def test_camera_whose_render_is_empty_names_the_frame_in_render_and_sampler(model):
    image, depth = image_with_depth()
    (scene,) = scene_nodes.InSpatioWorldFMSceneFromImage().build(
        image, depth, "metric", 0.5, 20.0, 1.0, 60.0, IMAGE_SIZE
    )
    # Turned 90° away, the wall is in front of the camera plane but outside the image.
    path = CameraPath(
        torch.cat([look_along(0.0).world_to_camera, look_along(-90.0).world_to_camera])
    )
    with pytest.raises(
        cf.NodeInputError, match="WorldFM Render: input 'camera_path' frame 1 sees no point"
    ):
        nodes.InSpatioWorldFMRender().render(scene, path)
    with pytest.raises(
        cf.NodeInputError, match="WorldFM Sampler: input 'camera_path' frame 1 sees no point"
    ):
        sample(model, scene, path)


def test_preset_moved_to_the_input_view_renders_the_image_scene():
    image, depth = image_with_depth()
    (scene,) = scene_nodes.InSpatioWorldFMSceneFromImage().build(
        image, depth, "metric", 0.5, 20.0, 1.0, 60.0, IMAGE_SIZE
    )
    preset, _ = InSpatioCameraPreset().build("orbit_left", 5, 1.0, "linear", 1.0, False, False)
    with pytest.raises(cf.NodeInputError, match="frame 0"):
        nodes.InSpatioWorldFMRender().render(scene, preset)
    moved, frames = nodes.InSpatioWorldFMPathFromInputView().anchor(preset)
    assert frames == preset.num_frames
    torch.testing.assert_close(moved.world_to_camera[0], look_along(0.0).world_to_camera[0])
    renders, _ = nodes.InSpatioWorldFMRender().render(scene, moved)
    assert bool((renders.flatten(1).amax(dim=1) > 0).all())


def test_a_worldfm_meta_json_loaded_by_load_camera_path_drives_the_render(room_scene, tmp_path):
    intrinsics = torch.tensor([[10.0, 0, 12], [0, 10.0, 12], [0, 0, 1]], dtype=torch.float64)
    path = CameraPath(look_along(-60.0, shift=0.3, frames=2).world_to_camera, intrinsics)
    meta = tmp_path / "meta.json"
    write_worldfm_meta(meta, path)
    loaded, frames = InSpatioLoadCameraPath().load(
        str(meta), "worldfm_meta", 0, "render_point_cloud", 1.0, False
    )
    assert frames == 2
    render = nodes.InSpatioWorldFMRender().render
    for got, want in zip(render(room_scene, loaded), render(room_scene, path)):
        assert torch.equal(got, want)


# --- render node against the official renderer -------------------------------------------------


def fixture_render(case_path):
    """The render node on the fixture's panorama, bank analogue and target cameras."""
    render = load_file(str(require_fixture(case_path)))
    pano = load_file(str(require_fixture(sibling(case_path, "render", "pano"))))
    config = load_json(require_fixture(sibling(case_path, "render", "config", ".json")))
    scene = panorama_scene_node(
        pano["pano_bgr_u8"].flip(-1)[None].float() / 255.0,
        pano["depth_raw"][None],
        scale=config["postprocess_panorama"]["depth_scale"],
        render_size=render["render.rgb_u8"].shape[1],
        reference_size=pano["bank.images_u8"].shape[1],
        reference_focal=float(pano["bank.K"][0, 0]),
    )
    path = CameraPath(
        world_to_camera_from_camera_to_world(render["target.c2w"]), render["target.K"]
    )
    renders, references = nodes.InSpatioWorldFMRender().render(scene, path)
    return render, renders, references


@pytest.mark.parametrize("case_path", RENDER_CASES)
def test_render_node_matches_the_official_anchor_renders(case_path):
    render, renders, _ = fixture_render(case_path)
    rendered_u8 = (renders * 255.0).round().to(torch.uint8)
    untied = render["render.tie_mask"] == 0
    assert torch.equal(rendered_u8[untied], render["render.rgb_u8"][untied])


@pytest.mark.parametrize("case_path", RENDER_CASES)
def test_render_node_shows_the_official_reference_choice(case_path):
    render, _, references = fixture_render(case_path)
    difference = ((references * 255.0).round() - render["select.cond_nearest_u8"].float()).abs()
    # The bank crops carry the core's documented tolerance (WORLDFM.md §2b): a level on a few
    # pixels; a wrong choice of view would differ everywhere.
    assert float(difference.max()) <= BANK_IMAGE_MAX_DIFF
    assert float((difference > 0).float().mean()) <= BANK_IMAGE_MAX_FRACTION


# --- sampler ---------------------------------------------------------------------------------


def test_sampler_frames_are_reproducible_per_seed(model, room_scene):
    path = look_along(30.0, shift=0.2, frames=3)
    first = sample(model, room_scene, path, seed=11)
    image_side = TINY_CONFIG.input_size * LATENT_STRIDE
    assert first.shape == (3, image_side, image_side, 3)
    assert first.dtype == torch.float32 and 0.0 <= float(first.min()) <= float(first.max()) <= 1.0
    assert torch.equal(sample(model, room_scene, path, seed=11), first)
    assert not torch.equal(sample(model, room_scene, path, seed=12), first)


def test_frames_are_independent_so_a_shorter_path_gives_the_same_first_frames(model, room_scene):
    path = look_along(-20.0, shift=0.15, frames=3)
    shorter = CameraPath(path.world_to_camera[:2])
    assert torch.equal(sample(model, room_scene, shorter), sample(model, room_scene, path)[:2])


def test_single_image_scene_generates_frames_from_its_only_reference(model):
    image, depth = image_with_depth()
    (scene,) = scene_nodes.InSpatioWorldFMSceneFromImage().build(
        image, depth, "metric", 0.5, 20.0, 1.0, 60.0, IMAGE_SIZE
    )
    vae = PoolingVAE()
    frames = sample(model, scene, look_along(10.0, shift=0.1, frames=2), vae=vae)
    assert frames.shape[0] == 2 and torch.isfinite(frames).all()
    assert vae.encoded == 2 + 1


def test_one_step_and_two_step_sampling_differ(model, room_scene):
    path = look_along(0.0)
    assert not torch.equal(
        sample(model, room_scene, path, steps=1), sample(model, room_scene, path, steps=2)
    )


def test_sampler_encodes_each_chosen_bank_view_once(model, room_scene):
    frames = 4
    vae = PoolingVAE()
    sample(model, room_scene, look_along(45.0, frames=frames), vae=vae)
    assert vae.encoded == frames + 1  # one render per frame, the one chosen reference once
    assert vae.decoded == frames


def test_sampler_reports_progress_with_a_preview_per_frame(model, room_scene, monkeypatch):
    updates = []

    class RecordingBar:
        def __init__(self, total):
            self.total = total

        def update(self, steps=1, preview=None):
            updates.append((self.total, steps, None if preview is None else tuple(preview.shape)))

    monkeypatch.setattr(cf, "progress_bar", RecordingBar)
    sample(model, room_scene, look_along(0.0, shift=0.1, frames=2))
    side = TINY_CONFIG.input_size * LATENT_STRIDE
    assert updates == [(2, 1, (side, side, 3))] * 2


def test_sampler_stops_between_frames_when_interrupted(model, room_scene, monkeypatch):
    class Interrupted(Exception):
        pass

    vae = PoolingVAE()

    def interrupt_after_first_frame():
        if vae.decoded:
            raise Interrupted

    monkeypatch.setattr(cf, "check_interrupted", interrupt_after_first_frame)
    with pytest.raises(Interrupted):
        sample(model, room_scene, look_along(0.0, shift=0.1, frames=3), vae=vae)
    assert vae.decoded == 1


def test_sampler_refuses_a_vae_of_another_latent_space(model, room_scene):
    class WanLikeVAE(PoolingVAE):
        latent_channels = 16

    with pytest.raises(cf.NodeInputError, match="WorldFM Sampler: input 'vae'.*SDXL"):
        sample(model, room_scene, look_along(0.0), vae=WanLikeVAE())


def test_sampler_refuses_a_step_count_without_a_checkpoint(model, room_scene):
    with pytest.raises(cf.NodeInputError, match="input 'steps' is 3"):
        sample(model, room_scene, look_along(0.0), steps=3)


def test_paths_without_intrinsics_get_the_released_demo_field_of_view():
    intrinsics = nodes.target_intrinsics(look_along(0.0), nodes.RELEASED_RENDER_SIZE)
    expected = torch.tensor([[320.0, 0, 256], [0, 320.0, 256], [0, 0, 1]], dtype=torch.float64)
    torch.testing.assert_close(intrinsics, expected)
