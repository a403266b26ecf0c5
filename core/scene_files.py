"""Scene files: a prepared :class:`~core.scene.Scene` saved once and loaded in later runs.

Data flow: frames + depth estimation (DA3, any depth node) → ``Scene`` → **save here** …
**load here** → ``Scene`` → splat renderer / sampler. Depth estimation is the slow step of a run;
a scene file lets it run once per source video.

Format (one safetensors file, conventionally ``*.scene.safetensors``):

=====================  ==================  ==========================================================
tensor                 dtype, shape        content
=====================  ==================  ==========================================================
``frames``             uint8 [F, H, W, 3]  RGB, ``round((x + 1) / 2 · 255)`` of the [-1, 1] frames
``depth``              uint16 [F, H, W]    depth codes q: ``depth = min + q / 65535 · (max − min)``
``intrinsics``         float32 [F, 3, 3]   pixel K for the H×W frames
``world_to_camera``    float32 [F, 4, 4]   OpenCV world-to-camera (Tcw) per frame / view
=====================  ==================  ==========================================================

String metadata: ``format`` = ``inspatio_scene``, ``version`` = ``1``, ``kind`` (``video`` or
``images``), ``fps``, ``depth_encoding`` = ``uint16_minmax_v1``, ``depth_min`` and ``depth_max``
(decimal strings that round-trip exactly to float64).

The depth code is v1.5's (``datasets/scene_depth_io.py``: one linear uint16 range per scene,
``rint(clip((d − min)/(max − min), 0, 1) · 65535)`` in float64, decoded in float64 and stored as
float32), so a stored scene reproduces the official depth files to the same quantisation.
``min`` is the smallest depth of the scene; when some pixels have no depth (stored as 0 in a
``Scene``) it is 0 instead, as v1.5 does for image scenes, so that "no depth" decodes to exactly 0.
A scene whose depth is one constant stores ``max = min`` and all-zero codes.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from einops import rearrange
from safetensors.torch import save_file

from .camera import check_intrinsics, check_rigid
from .scene import UINT16_CODES, Scene, SceneInputError, decode_depth_u16
from .types import DepthMaps
from .wan.checkpoints import CheckpointError, read_weights

SCENE_FORMAT = "inspatio_scene"
SCENE_FORMAT_VERSION = "1"
DEPTH_ENCODING = "uint16_minmax_v1"  # v1.5 datasets/scene_depth_io.py DEPTH_ENCODING
SCENE_SUFFIX = ".safetensors"
UINT8_LEVELS = 255.0
SCENE_TENSORS = ("frames", "depth", "intrinsics", "world_to_camera")
SCENE_KINDS = ("video", "images")


class SceneFileError(ValueError):
    """A scene file that cannot be written or read; the message names the file and the fix."""


def encode_depth_u16(depth: DepthMaps) -> tuple[torch.Tensor, float, float]:
    """Depth → (uint16 codes, min, max) with one linear range for the whole scene (v1.5 rule).

    "No depth" (<= 0 or non-finite) is stored as code 0 with ``min = 0``, so it decodes to 0.
    """
    values = depth.detach().cpu().double()
    valid = torch.isfinite(values) & (values > 0)
    if not valid.any():
        raise SceneFileError("the scene has no valid depth to store")
    depth_max = float(values[valid].max())
    depth_min = float(values[valid].min()) if valid.all() else 0.0
    values = torch.where(valid, values, 0.0)
    if depth_max <= depth_min:
        return torch.zeros(values.shape, dtype=torch.uint16), depth_min, depth_max
    fraction = ((values - depth_min) / (depth_max - depth_min)).clamp(0.0, 1.0)
    # torch.round is half-to-even like np.rint.
    codes = torch.round(fraction * UINT16_CODES).to(torch.int32).to(torch.uint16)
    return codes, depth_min, depth_max


def save_scene(scene: Scene, path: str | Path) -> Path:
    """Write ``scene`` to ``path`` (folders are created); returns the path written."""
    path = Path(path).expanduser()
    if path.suffix != SCENE_SUFFIX:
        raise SceneFileError(f"scene file {path} must end in {SCENE_SUFFIX}")
    codes, depth_min, depth_max = encode_depth_u16(scene.depth)
    frames = ((scene.frames.detach().cpu().float().clamp(-1, 1) + 1) / 2 * UINT8_LEVELS).round()
    tensors = {
        "frames": rearrange(frames.to(torch.uint8), "f c h w -> f h w c").contiguous(),
        "depth": codes.contiguous(),
        "intrinsics": scene.intrinsics.detach().cpu().float().contiguous(),
        "world_to_camera": scene.world_to_camera.detach().cpu().float().contiguous(),
    }
    metadata = {
        "format": SCENE_FORMAT,
        "version": SCENE_FORMAT_VERSION,
        "kind": scene.kind,
        "fps": repr(float(scene.fps)),
        "depth_encoding": DEPTH_ENCODING,
        "depth_min": repr(depth_min),
        "depth_max": repr(depth_max),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=metadata)
    return path


def load_scene(path: str | Path, device: torch.device | str = "cpu") -> Scene:
    """Read a scene file written by :func:`save_scene`, on ``device``."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise SceneFileError(
            f"scene file {path} does not exist: save one with InSpatio Save Scene first"
        )
    try:
        tensors, metadata = read_weights(path)
    except CheckpointError as error:
        raise SceneFileError(f"{path} is not a readable scene file: {error}") from error
    _check_layout(path, tensors, metadata)
    try:
        depth = decode_depth_u16(
            tensors["depth"].to(torch.int32),
            float(metadata["depth_min"]),
            float(metadata["depth_max"]),
        )
    except SceneInputError as error:
        raise SceneFileError(f"{path}: {error}") from error
    frames = rearrange(tensors["frames"].float(), "f h w c -> f c h w") / UINT8_LEVELS * 2 - 1
    intrinsics = check_intrinsics(tensors["intrinsics"], f"{path}: intrinsics")
    world_to_camera = check_rigid(tensors["world_to_camera"], f"{path}: world_to_camera")
    # Built directly rather than through scene_from_video: the stored scene is already fitted, and
    # its "no depth" zeros are deliberate (the constructors would warn about them on every load).
    return Scene(
        frames=frames.to(device),
        depth=depth.to(device),
        intrinsics=intrinsics.to(device),
        world_to_camera=world_to_camera.to(device),
        fps=float(metadata["fps"]),
        kind=metadata["kind"],
    )


def _check_layout(path: Path, tensors: dict, metadata: dict) -> None:
    if metadata.get("format") != SCENE_FORMAT:
        raise SceneFileError(
            f"{path} is not an InSpatio scene file (format {metadata.get('format')!r}): "
            "load weights with the model loaders, scenes with InSpatio Load Scene"
        )
    if metadata.get("version") != SCENE_FORMAT_VERSION:
        raise SceneFileError(
            f"{path} has scene format version {metadata.get('version')!r}; this pack reads "
            f"version {SCENE_FORMAT_VERSION}: re-save the scene with this version"
        )
    if metadata.get("depth_encoding") != DEPTH_ENCODING or metadata.get("kind") not in SCENE_KINDS:
        raise SceneFileError(
            f"{path} has depth encoding {metadata.get('depth_encoding')!r} and kind "
            f"{metadata.get('kind')!r}: expected {DEPTH_ENCODING!r} and one of {SCENE_KINDS}"
        )
    missing = [name for name in SCENE_TENSORS if name not in tensors]
    if missing:
        raise SceneFileError(f"{path} lacks the tensors {missing}: the file is incomplete")
    frames = tensors["frames"]
    if frames.ndim != 4:
        raise SceneFileError(
            f"{path}: 'frames' has shape {tuple(frames.shape)}, expected [F, H, W, 3]"
        )
    count, height, width = frames.shape[:3]
    expected = {
        "frames": ((count, height, width, 3), torch.uint8),
        "depth": ((count, height, width), torch.uint16),
        "intrinsics": ((count, 3, 3), torch.float32),
        "world_to_camera": ((count, 4, 4), torch.float32),
    }
    for name, (shape, dtype) in expected.items():
        if tuple(tensors[name].shape) != shape or tensors[name].dtype != dtype:
            raise SceneFileError(
                f"{path}: '{name}' is {tensors[name].dtype} {tuple(tensors[name].shape)}, "
                f"expected {dtype} {shape}: the file is damaged or was not written by this pack"
            )
    for name in ("fps", "depth_min", "depth_max"):
        try:
            value = float(metadata.get(name, "nan"))
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            raise SceneFileError(f"{path}: metadata {name}={metadata.get(name)!r} is not a number")
