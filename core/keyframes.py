"""Keyframed camera paths and their JSON wire format (the camera-path node widget's value).

Where it sits: the camera-path node (and its web editor) holds a JSON string; this module parses
it into :class:`Keyframe` s, evaluates them with the SE(3) interpolation of ``core/se3.py`` and
returns a :class:`~core.paths.CameraPath`. It also writes any path back as JSON.

Wire format, version 1 (``"format": "inspatio.camera_path/1"``)::

    {
      "format": "inspatio.camera_path/1",
      "frames": 81,                      # output frames, ≥ 1 (required)
      "fps": 16,                         # optional playback rate; absent = follow the scene
      "interpolation": "smooth",         # optional: "smooth" (default) or "linear"
      "up": [0, -1, 0],                  # optional world up for look_at keys (default −y)
      "intrinsics": [[fx, 0, cx], [0, fy, cy], [0, 0, 1]],   # optional target K in pixels
      "keyframes": [                     # ≥ 1, any order, at most one per frame
        {"frame": 0,  "position": [0, 0, 0], "rotation": [1, 0, 0, 0]},
        {"frame": 80, "position": [0.3, 0, 0.2], "look_at": [0, 0, 2]}
      ]
    }

Conventions: world coordinates of the scene (OpenCV axes, y down; the first source camera at the
origin for DA3 scenes). ``position`` is the camera centre. ``rotation`` is the unit quaternion
``(w, x, y, z)`` of the camera-to-world rotation (its columns are the camera's x right, y down,
z forward axes in the world). ``look_at`` is a world point the camera faces instead. Frames
before the first key or after the last hold that key's pose. ``"smooth"``: centres on a
Catmull-Rom cubic, rotations by squad; ``"linear"``: straight lines and slerp. When every key
uses ``look_at``, the targets are interpolated too and the camera keeps facing them.
Unknown keys are rejected (a typo would otherwise be ignored silently); a later version of the
format gets a new ``format`` string.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import torch
from kornia.geometry.conversions import (
    quaternion_to_rotation_matrix,
    rotation_matrix_to_quaternion,
)

from .camera import (
    WORLD_UP,
    CameraError,
    camera_centres,
    invert_rigid,
    look_at,
    pose_from_rotation_translation,
)
from .paths import CameraPath, PathError
from .se3 import INTERPOLATIONS, Interpolation, interpolate_points, interpolate_rotations
from .types import Intrinsics

FORMAT = "inspatio.camera_path/1"
TOP_LEVEL_KEYS = ("format", "frames", "fps", "interpolation", "up", "intrinsics", "keyframes")
KEYFRAME_KEYS = ("frame", "position", "rotation", "look_at")
#: A key's quaternion may be this far from norm 1 (rounding in a hand-edited file) before it is
#: rejected rather than normalised.
QUATERNION_NORM_TOLERANCE = 1e-3
#: Longest path a document may ask for: beyond any video the model makes (v1 caps sources at
#: 1000 frames), and small enough that a typo cannot exhaust memory.
MAX_FRAMES = 100_000


class CameraPathFormatError(PathError):
    """A camera-path JSON document that does not follow the wire format."""


@dataclass(frozen=True)
class Keyframe:
    """A keyed camera: its centre ``position`` and *either* ``rotation`` *or* ``look_at``.

    rotation: unit quaternion ``(w, x, y, z)`` of the camera-to-world rotation (OpenCV axes)
    look_at:  world point the camera's +z axis points at
    """

    frame: int
    position: tuple[float, float, float]
    rotation: tuple[float, float, float, float] | None = None
    look_at: tuple[float, float, float] | None = None

    def __post_init__(self) -> None:
        if (self.rotation is None) == (self.look_at is None):
            raise PathError(
                f"keyframe at frame {self.frame} needs exactly one of 'rotation' or 'look_at'"
            )
        if self.rotation is not None:
            norm = math.sqrt(sum(value * value for value in self.rotation))
            if abs(norm - 1.0) > QUATERNION_NORM_TOLERANCE:
                raise PathError(
                    f"keyframe at frame {self.frame}: rotation {list(self.rotation)} is not a unit "
                    f"quaternion (norm {norm:.4g}); give (w, x, y, z) with norm 1"
                )


def _key_rotation(keyframe: Keyframe, up: torch.Tensor) -> torch.Tensor:
    """Camera-to-world rotation ``[3, 3]`` of a key."""
    if keyframe.rotation is not None:
        quaternion = torch.tensor(keyframe.rotation, dtype=torch.float64)
        return quaternion_to_rotation_matrix(quaternion / quaternion.norm())
    eye = torch.tensor(keyframe.position, dtype=torch.float64)
    return look_at(eye, torch.tensor(keyframe.look_at, dtype=torch.float64), up)[:3, :3].T


def path_from_keyframes(
    keyframes: list[Keyframe],
    frames: int,
    interpolation: Interpolation = "smooth",
    *,
    up: tuple[float, float, float] = WORLD_UP,
    intrinsics: Intrinsics | None = None,
    fps: float | None = None,
) -> CameraPath:
    """Evaluate keyframes at every frame ``0 … frames−1`` (conventions in the module docstring)."""
    if not keyframes:
        raise PathError("a keyframed path needs at least one keyframe")
    if not 1 <= frames <= MAX_FRAMES:
        raise PathError(f"frames must be between 1 and {MAX_FRAMES}, got {frames}")
    ordered = sorted(keyframes, key=lambda keyframe: keyframe.frame)
    key_frames = [keyframe.frame for keyframe in ordered]
    if len(set(key_frames)) != len(key_frames):
        raise PathError(f"two keyframes share a frame: {key_frames}")
    if key_frames[0] < 0 or key_frames[-1] >= frames:
        raise PathError(
            f"keyframe frames {key_frames} must lie in [0, {frames - 1}] for a {frames}-frame path"
        )
    key_times = torch.tensor(key_frames, dtype=torch.float64)
    sample_times = torch.arange(frames, dtype=torch.float64)
    positions = torch.tensor([keyframe.position for keyframe in ordered], dtype=torch.float64)
    centres = interpolate_points(key_times, positions, sample_times, interpolation)
    up_vector = torch.tensor(up, dtype=torch.float64)
    if all(keyframe.look_at is not None for keyframe in ordered):
        key_targets = torch.tensor([keyframe.look_at for keyframe in ordered], dtype=torch.float64)
        targets = interpolate_points(key_times, key_targets, sample_times, interpolation)
        return CameraPath(look_at(centres, targets, up_vector), intrinsics, fps)
    key_rotations = torch.stack([_key_rotation(keyframe, up_vector) for keyframe in ordered])
    rotations = interpolate_rotations(key_times, key_rotations, sample_times, interpolation)
    world_to_camera = invert_rigid(pose_from_rotation_translation(rotations, centres))
    return CameraPath(world_to_camera, intrinsics, fps)


# --- JSON wire format ------------------------------------------------------------------------


def _numbers(value: object, length: int, where: str) -> tuple[float, ...]:
    if not isinstance(value, list) or len(value) != length:
        raise CameraPathFormatError(f"{where} must be a list of {length} numbers, got {value!r}")
    for item in value:
        # bool is an int in Python; a true/false in a coordinate is a mistake, not a 1/0.
        if isinstance(item, bool) or not isinstance(item, (int, float)) or not math.isfinite(item):
            raise CameraPathFormatError(f"{where} must hold finite numbers, got {value!r}")
    return tuple(float(item) for item in value)


def _integer(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise CameraPathFormatError(f"{where} must be an integer, got {value!r}")
    return value


def _check_keys(document: dict, allowed: tuple[str, ...], where: str) -> None:
    unknown = sorted(set(document) - set(allowed))
    if unknown:
        raise CameraPathFormatError(
            f"{where} has unknown key(s) {unknown}; allowed keys are {list(allowed)}"
        )


def _keyframe(document: object, index: int) -> Keyframe:
    where = f"keyframes[{index}]"
    if not isinstance(document, dict):
        raise CameraPathFormatError(f"{where} must be an object, got {document!r}")
    _check_keys(document, KEYFRAME_KEYS, where)
    for required in ("frame", "position"):
        if required not in document:
            raise CameraPathFormatError(f"{where} is missing {required!r}")
    rotation, target = document.get("rotation"), document.get("look_at")
    return Keyframe(
        frame=_integer(document["frame"], f"{where}.frame"),
        position=_numbers(document["position"], 3, f"{where}.position"),
        rotation=None if rotation is None else _numbers(rotation, 4, f"{where}.rotation"),
        look_at=None if target is None else _numbers(target, 3, f"{where}.look_at"),
    )


def path_from_json(text: str, source: str = "camera path JSON") -> CameraPath:
    """Parse and evaluate a wire-format document; errors name ``source`` (a widget or file)."""
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise CameraPathFormatError(
            f"{source}: invalid JSON at line {error.lineno}, column {error.colno}: {error.msg}"
        ) from None
    try:
        return _path_from_document(document)
    except (PathError, CameraError) as error:
        raise CameraPathFormatError(f"{source}: {error}") from None


def _path_from_document(document: object) -> CameraPath:
    if not isinstance(document, dict):
        raise CameraPathFormatError("the document must be a JSON object")
    _check_keys(document, TOP_LEVEL_KEYS, "the document")
    if document.get("format") != FORMAT:
        raise CameraPathFormatError(f"'format' must be {FORMAT!r}, got {document.get('format')!r}")
    if "frames" not in document or "keyframes" not in document:
        raise CameraPathFormatError("the document needs 'frames' and 'keyframes'")
    interpolation = document.get("interpolation", "smooth")
    if interpolation not in INTERPOLATIONS:
        raise CameraPathFormatError(
            f"'interpolation' must be one of {list(INTERPOLATIONS)}, got {interpolation!r}"
        )
    fps = document.get("fps")
    if fps is not None:
        fps = _numbers([fps], 1, "'fps'")[0]
    intrinsics = document.get("intrinsics")
    if intrinsics is not None:
        if not isinstance(intrinsics, list) or len(intrinsics) != 3:
            raise CameraPathFormatError(f"'intrinsics' must be a 3×3 list, got {intrinsics!r}")
        rows = [_numbers(row, 3, f"'intrinsics'[{index}]") for index, row in enumerate(intrinsics)]
        intrinsics = torch.tensor(rows, dtype=torch.float64)
    keyframes = document["keyframes"]
    if not isinstance(keyframes, list):
        raise CameraPathFormatError(f"'keyframes' must be a list, got {keyframes!r}")
    return path_from_keyframes(
        [_keyframe(keyframe, index) for index, keyframe in enumerate(keyframes)],
        _integer(document["frames"], "'frames'"),
        interpolation,
        up=_numbers(document.get("up", list(WORLD_UP)), 3, "'up'"),
        intrinsics=intrinsics,
        fps=fps,
    )


def path_to_json(path: CameraPath) -> str:
    """The path as a wire-format document with one linear key per frame (reads back the same)."""
    centres = camera_centres(path.world_to_camera.double())
    quaternions = rotation_matrix_to_quaternion(
        path.world_to_camera.double()[:, :3, :3].transpose(-1, -2).contiguous()
    )
    # q and −q are the same rotation; a non-negative w keeps files stable and readable.
    quaternions = torch.where(quaternions[:, :1] < 0, -quaternions, quaternions)
    document: dict = {"format": FORMAT, "frames": path.num_frames, "interpolation": "linear"}
    if path.fps is not None:
        document["fps"] = path.fps
    if path.intrinsics is not None:
        document["intrinsics"] = path.intrinsics.double().tolist()
    document["keyframes"] = [
        {"frame": frame, "position": centre, "rotation": quaternion}
        for frame, (centre, quaternion) in enumerate(zip(centres.tolist(), quaternions.tolist()))
    ]
    return json.dumps(document, indent=1)
