"""Depth Anything 3: frames → per-frame depth, intrinsics and world-to-camera poses.

Data flow: source frames (a video, or 1/4 views) → **here** (DA3 network + the official
post-processing) → :class:`DA3Geometry` at the model resolution → ``core/scene.py`` (``Scene``).

Two halves, kept apart so the post-processing can be checked without the network:

- **Adapter** (:func:`load_da3`, :func:`run_da3`). The network comes from the optional PyPI package
  ``depth-anything-3``: its own configs (``depth_anything_3.registry``) and classes
  (``depth_anything_3.cfg.create_object``). Only the network is used, never ``depth_anything_3.api``,
  whose import pulls exporters (open3d, pycolmap, moviepy, trimesh, torchvision, cv2) the network
  does not need. :func:`run_da3` does what ``DepthAnything3.inference(frames, use_ray_pose=False,
  process_res=504)`` does around the forward pass: the package's input processing
  (``core/da3_input.py``), autocast (bfloat16 where CUDA supports it, else float16), the output
  squeeze, and v1.5's float32 metric alignment. Weights are read from a local folder
  (``config.json`` + ``model.safetensors``, the layout of the Hugging Face repository
  ``depth-anything/DA3NESTED-GIANT-LARGE``); nothing is downloaded.
- **Post-processing** (:func:`postprocess_da3`), following v1.5 ``pipeline/depth_estimation.py``
  (v1 ``depth/depth_predict_da3.py`` is the same): camera-to-world poses made relative to frame 0,
  Gaussian-smoothed (σ = 2 on the quaternion components and the translation, quaternions
  re-normalised), inverted back to world-to-camera; K rows scaled to the target size; depth
  nearest-resized to it. Sky needs no work here: the nested model already sets sky pixels to the
  99th-percentile depth capped at 200 m inside its forward pass; non-finite or non-positive depth is
  left for ``core/scene.py`` to mark as "no depth". Ground alignment runs upstream only when a
  ``ground_mask_*.png`` file exists, so it is not part of the default path and is not done here.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from scipy.ndimage import gaussian_filter1d
from scipy.spatial.transform import Rotation
from torch import Tensor, nn

from .camera import resize_intrinsics
from .da3_input import PROCESS_RESOLUTION, prepare_frames
from .scene import MODEL_RESOLUTION, Scene, SceneKind, scene_from_images, scene_from_video
from .types import DepthMaps, ImageBatch, Intrinsics, WorldToCamera
from .wan.checkpoints import read_weights

DA3Depth = Annotated[Tensor, "F h w float, DA3 depth at its processing size"]
DA3Extrinsics = Annotated[Tensor, "F 3 4 (or F 4 4) OpenCV world-to-camera, DA3 scale"]

POSE_SMOOTHING_SIGMA = 2.0  # frames; v1.5 smooth_gaussian(camera_poses, sigma=2.0)
ALIGNMENT_EPSILON = 1e-12  # the package's least-squares denominator floor
HOMOGENEOUS_SIZE = 4
CONFIG_FILE = "config.json"  # {"model_name": "da3nested-giant-large"}, written by the HF mixin
WEIGHTS_FILE = "model.safetensors"
CHECKPOINT_PREFIX = "model."  # the HF wrapper keeps the network as its ``model`` attribute
REFERENCE_VIEW_STRATEGY = "saddle_balanced"  # the default of DepthAnything3.inference
SAMPLING_SEED = 0  # seeds the nested model's quantile sampling (see run_da3)
#: Where the weights go (the folder layout load_da3 reads), said together with the install step
#: so one message gets a user from nothing to a working depth node.
WEIGHTS_HINT = (
    "the weights are the Hugging Face folder depth-anything/DA3NESTED-GIANT-LARGE as published: "
    f"put DA3NESTED-GIANT-LARGE/ with its {CONFIG_FILE} and {WEIGHTS_FILE} under "
    "ComfyUI/models/inspatio/ (or an 'inspatio:' entry of extra_model_paths.yaml)"
)
INSTALL_HINT = (
    "install the network code without its heavy extras: "
    "`pip install --no-deps depth-anything-3==0.1.1 evo` then `pip install omegaconf addict`; "
    + WEIGHTS_HINT
)


class DA3Error(ValueError):
    """A DA3 model folder, prediction or setting that cannot be used; the message says the fix."""


@dataclass(frozen=True)
class DA3Prediction:
    """What DA3 returns for F frames, at its processing size (``DepthAnything3.inference`` fields).

    depth:           [F, h, w] depth along the camera axis, DA3 (metric for the nested model) units
    world_to_camera: [F, 3, 4] (or [F, 4, 4]) OpenCV world-to-camera ``extrinsics``
    intrinsics:      [F, 3, 3] pixel K for the h×w processed frames
    """

    depth: DA3Depth
    world_to_camera: DA3Extrinsics
    intrinsics: Intrinsics

    def __post_init__(self) -> None:
        frames = _shape(self.depth, 3, "depth")[0]
        if tuple(self.world_to_camera.shape) not in ((frames, 3, 4), (frames, 4, 4)):
            raise DA3Error(
                f"DA3 extrinsics have shape {tuple(self.world_to_camera.shape)}: expected "
                f"[{frames}, 3, 4] world-to-camera matrices, one per depth map"
            )
        if tuple(self.intrinsics.shape) != (frames, 3, 3):
            raise DA3Error(
                f"DA3 intrinsics have shape {tuple(self.intrinsics.shape)}: expected [{frames}, 3, 3]"
            )

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the processed frames: the size the intrinsics belong to."""
        return int(self.depth.shape[-1]), int(self.depth.shape[-2])


@dataclass(frozen=True)
class DA3Geometry:
    """The scene geometry after the official post-processing, at the target size (float32).

    depth: [F, H, W]; intrinsics: [F, 3, 3] pixel K for H×W; world_to_camera: [F, 4, 4] Tcw relative
    to frame 0, then smoothed (so frame 0 is near, not exactly at, the origin, as upstream).
    """

    depth: DepthMaps
    intrinsics: Intrinsics
    world_to_camera: WorldToCamera


def _shape(tensor: Tensor, rank: int, name: str) -> tuple[int, ...]:
    if tensor.ndim != rank:
        raise DA3Error(f"DA3 {name} must have {rank} axes, got shape {tuple(tensor.shape)}")
    return tuple(tensor.shape)


# --- post-processing (v1.5 pipeline/depth_estimation.py, pipeline/depth_utils.py) ------------


def postprocess_da3(
    prediction: DA3Prediction,
    target_size: tuple[int, int],
    smoothing_sigma: float = POSE_SMOOTHING_SIGMA,
) -> DA3Geometry:
    """Depth, K and poses at ``target_size`` (width, height), exactly as v1.5 writes them to disk.

    The poses follow upstream's numpy dtypes: the inversion and frame-0 normalisation run in
    float32 (DA3's dtype), the smoothing and the final inversion in float64 (scipy's rotations),
    and the result is read back as float32, as the renderer does with ``extrinsic.txt``.
    """
    target_width, target_height = target_size
    world_to_camera = _homogeneous(prediction.world_to_camera.detach().float().cpu().numpy())
    camera_to_world = np.linalg.inv(world_to_camera)
    relative_to_first = np.linalg.inv(camera_to_world[0]) @ camera_to_world
    smoothed = smooth_camera_to_world(relative_to_first, smoothing_sigma)
    target_world_to_camera = torch.from_numpy(np.linalg.inv(smoothed)).float()
    intrinsics = resize_intrinsics(
        prediction.intrinsics.detach().float().cpu(), prediction.size, target_size
    )
    depth = nearest_resize(prediction.depth.detach().float().cpu(), target_height, target_width)
    return DA3Geometry(depth, intrinsics, target_world_to_camera)


def _homogeneous(extrinsics: np.ndarray) -> np.ndarray:
    """[F, 3, 4] or [F, 4, 4] → [F, 4, 4] with the row 0 0 0 1, in the input's dtype."""
    poses = np.zeros((extrinsics.shape[0], HOMOGENEOUS_SIZE, HOMOGENEOUS_SIZE), extrinsics.dtype)
    poses[:, :3, :] = extrinsics[:, :3, :]
    poses[:, 3, 3] = 1.0
    return poses


def smooth_camera_to_world(camera_to_world: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing of camera-to-world poses over time, as v1.5 ``smooth_gaussian``.

    Each quaternion component (scipy's x, y, z, w order) and each translation component is
    filtered with ``gaussian_filter1d`` (reflect borders, truncate 4σ), then the quaternions are
    re-normalised. Upstream quirk kept on purpose: quaternions are taken as scipy returns them, with
    no sign alignment between neighbours, so a sequence that crosses scipy's sign switch (rotations
    beyond about 90° from frame 0) is smoothed across q and −q, exactly as the official poses are.
    Returns float64 [F, 4, 4].
    """
    if not sigma > 0:
        raise DA3Error(f"pose smoothing sigma must be positive, got {sigma}")
    quaternions = Rotation.from_matrix(camera_to_world[:, :3, :3]).as_quat()
    translations = camera_to_world[:, :3, 3]
    smooth_quaternions = gaussian_filter1d(quaternions, sigma=sigma, axis=0)
    # Upstream writes the filtered translation into np.zeros_like(translations): same dtype.
    smooth_translations = gaussian_filter1d(translations, sigma=sigma, axis=0)
    smooth_quaternions /= np.linalg.norm(smooth_quaternions, axis=1, keepdims=True)
    smoothed = np.tile(np.eye(HOMOGENEOUS_SIZE), (camera_to_world.shape[0], 1, 1))
    smoothed[:, :3, :3] = Rotation.from_quat(smooth_quaternions).as_matrix()
    smoothed[:, :3, 3] = smooth_translations
    return smoothed


def nearest_resize(depth: DA3Depth, height: int, width: int) -> DepthMaps:
    """cv2 ``INTER_NEAREST`` resize: destination pixel x reads source ``floor(x · src/dst)``.

    The official post-processing stretches DA3's depth to the target size whatever the aspect
    ratio (``core.depth.match_depth_size`` refuses that for user depth maps), and cv2 forms the
    ratio in double precision, so the indices are computed in float64 here too.
    """
    source_height, source_width = depth.shape[-2:]
    rows = _nearest_indices(source_height, height)
    columns = _nearest_indices(source_width, width)
    return depth[..., rows[:, None], columns[None, :]]


def _nearest_indices(source: int, target: int) -> Tensor:
    scale = source / target
    indices = torch.floor(torch.arange(target, dtype=torch.float64) * scale).long()
    return indices.clamp_(max=source - 1)


# --- adapter: the depth-anything-3 network ---------------------------------------------------


def _package():
    """The package's config registry and factory, imported only when DA3 is used."""
    try:
        from depth_anything_3.cfg import create_object, load_config
        from depth_anything_3.registry import MODEL_REGISTRY
    except ImportError as error:
        raise DA3Error(f"Depth Anything 3 is not installed ({error}): {INSTALL_HINT}") from error
    return create_object, load_config, MODEL_REGISTRY


def build_da3(model_name: str) -> nn.Module:
    """The DA3 network of a registered config (e.g. ``da3nested-giant-large``), random weights."""
    create_object, load_config, registry = _package()
    if model_name not in registry:
        raise DA3Error(
            f"DA3 model {model_name!r} is not one the installed package knows: "
            f"use one of {', '.join(registry)} (config.json 'model_name')"
        )
    try:
        return create_object(load_config(registry[model_name])).eval()
    except ImportError as error:  # e.g. evo, which the giant configs' Gaussian head imports
        raise DA3Error(f"the {model_name} network needs {error.name}: {INSTALL_HINT}") from error


def load_da3(folder: str | Path) -> nn.Module:
    """The DA3 network of a local model folder (``config.json`` + ``model.safetensors``), on the CPU."""
    folder = Path(folder)
    config_path, weights_path = folder / CONFIG_FILE, folder / WEIGHTS_FILE
    if not config_path.is_file() or not weights_path.is_file():
        raise DA3Error(
            f"{folder} must hold {CONFIG_FILE} and {WEIGHTS_FILE}: download the whole Hugging Face "
            "folder depth-anything/DA3NESTED-GIANT-LARGE into it"
        )
    try:
        model_name = json.loads(config_path.read_text())["model_name"]
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise DA3Error(f"{config_path} has no 'model_name' entry: re-download it") from error
    network = build_da3(model_name)
    weights, _ = read_weights(weights_path)
    if weights and all(key.startswith(CHECKPOINT_PREFIX) for key in weights):
        weights = {key[len(CHECKPOINT_PREFIX) :]: value for key, value in weights.items()}
    weights = _with_shared_aliases(network, weights)
    missing, unexpected = _key_mismatch(network, weights)
    if missing or unexpected:
        raise DA3Error(
            f"{weights_path} does not fit the {model_name!r} network of {config_path}: "
            f"{len(missing)} missing keys (first: {missing[:3]}), {len(unexpected)} unexpected "
            f"(first: {unexpected[:3]}); the two files come from different DA3 models"
        )
    network.load_state_dict(weights, strict=True)
    return network


def _with_shared_aliases(network: nn.Module, weights: dict[str, Tensor]) -> dict[str, Tensor]:
    """Weights with every tied parameter present under all of its names.

    The DPT head ties some convolutions across its branches; ``safetensors.torch.save_model`` (which
    the Hugging Face mixin uses) stores each tied tensor once, under one of its names.
    """
    names_by_storage: dict[int, list[str]] = {}
    for name, tensor in network.state_dict(keep_vars=True).items():
        names_by_storage.setdefault(tensor.data_ptr(), []).append(name)
    completed = dict(weights)
    for names in names_by_storage.values():
        stored = next((name for name in names if name in weights), None)
        if stored is not None:
            completed.update({name: weights[stored] for name in names if name not in weights})
    return completed


def _key_mismatch(network: nn.Module, weights: dict[str, Tensor]) -> tuple[list[str], list[str]]:
    expected = set(network.state_dict())
    return sorted(expected - set(weights)), sorted(set(weights) - expected)


@contextmanager
def _float32_metric_alignment():
    """v1.5 replaces the nested model's least-squares scale by a float32 reduction (bfloat16
    ``torch.dot`` fails in cuBLAS on some GPUs); done here for the duration of one call only."""
    import depth_anything_3.model.da3 as nested

    original = nested.least_squares_scale_scalar

    def least_squares_scale(
        metric: Tensor, relative: Tensor, eps: float = ALIGNMENT_EPSILON
    ) -> Tensor:
        metric, relative = metric.reshape(-1).float(), relative.reshape(-1).float()
        return (metric * relative).sum() / (relative * relative).sum().clamp_min(eps)

    nested.least_squares_scale_scalar = least_squares_scale
    try:
        yield
    finally:
        nested.least_squares_scale_scalar = original


@torch.inference_mode()
def run_da3(
    network: nn.Module, images: ImageBatch, process_res: int = PROCESS_RESOLUTION
) -> DA3Prediction:
    """``DepthAnything3.inference(frames, use_ray_pose=False, process_res=...)`` on one batch of
    frames (all views at once: DA3 estimates the poses jointly), on the network's device."""
    device = next(network.parameters()).device
    inputs = prepare_frames(images, process_res).to(device)
    use_bfloat16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    autocast_dtype = torch.bfloat16 if use_bfloat16 else torch.float16
    # The nested model estimates its depth quantiles from random samples of the pixels (beyond
    # 100k of them). A fixed seed on a forked generator makes a run repeatable without touching
    # the caller's random state; upstream leaves it unseeded, so no seed is "the" official one.
    forked = [device] if device.type == "cuda" else []
    with (
        torch.random.fork_rng(devices=forked),
        _float32_metric_alignment(),
        torch.autocast(device.type, dtype=autocast_dtype),
    ):
        torch.manual_seed(SAMPLING_SEED)
        output = network(inputs, None, None, [], False, False, REFERENCE_VIEW_STRATEGY)
    return DA3Prediction(
        depth=output["depth"][0].float(),
        world_to_camera=output["extrinsics"][0].float(),
        intrinsics=output["intrinsics"][0].float(),
    )


def estimate_scene(
    network: nn.Module,
    images: ImageBatch,
    kind: SceneKind = "video",
    fps: float = 16.0,
    resolution: tuple[int, int] = MODEL_RESOLUTION,
    process_res: int = PROCESS_RESOLUTION,
) -> Scene:
    """A scene from frames ``[F, H, W, 3]`` in [0, 1]: DA3, the official post-processing, and the
    frames resized to ``resolution`` (height, width).

    As in the official video pipeline (``fix_resize`` to 832×480), frames, depth and K are
    stretched to the model size without cropping; crop the frames beforehand to keep their aspect.
    """
    height, width = resolution
    prediction = run_da3(network, images, process_res)
    geometry = postprocess_da3(prediction, (width, height))
    frames = rearrange(images.detach().float(), "f h w c -> f c h w") * 2.0 - 1.0
    frames = F.interpolate(
        frames, size=(height, width), mode="bilinear", align_corners=False, antialias=True
    ).clamp(-1.0, 1.0)
    build = scene_from_video if kind == "video" else scene_from_images
    return build(
        frames,
        geometry.depth.to(frames.device),
        geometry.intrinsics.to(frames.device),
        geometry.world_to_camera.to(frames.device),
        fps,
        resolution,
    )
