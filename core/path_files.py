"""Camera-path files: read and write every pose format the pack meets, converted once.

Where it sits: loader nodes hand a file here and get the canonical form back (OpenCV axes,
world-to-camera 4×4, pixel K; ARCHITECTURE.md, Contracts) as a :class:`~core.paths.CameraPath`
or, for the v1 keyframe file, :class:`~core.trajectory_v1.KeyframeLines`.

Formats:

- v1 trajectory file (v1 ``traj/*.txt``): three lines of space-separated numbers, pitch, yaw,
  r (``core/trajectory_v1.py``);
- pose text (v1.5 ``target_tcw.txt`` / ``source_tcw.txt``): one pose per line, 16 numbers,
  row-major; read as upstream does with ``np.loadtxt(...).astype(float32)`` (values rounded to
  float32, blank lines and ``#`` comments skipped). The same layout with camera-to-world poses
  is read and written with ``kind="camera_to_world"``;
- the pack's JSON wire format (``core/keyframes.py``);
- ``transforms.json``: NeRF style (``frames[].transform_matrix``, OpenGL camera axes,
  ``fl_x``/``fl_y``/``cx``/``cy`` or ``camera_angle_x`` with ``w``/``h``) or WorldFM style
  (WorldFM ``modules/transforms_io.py``: ``frames[].c2w`` OpenCV camera-to-world, ``K``);
- WorldFM ``meta.json`` (``K`` and one ``c2w`` or a list of them, OpenCV).

Every malformed file raises :class:`PathFileError` naming the file and the line (text formats,
JSON syntax) or the JSON field.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from .camera import (
    CameraError,
    camera_to_world_from_world_to_camera,
    check_rigid,
    intrinsics_from_fov,
    opengl_from_world_to_camera,
    world_to_camera_from_camera_to_world,
    world_to_camera_from_opengl,
)
from .keyframes import path_from_json, path_to_json
from .paths import CameraPath, PathError
from .trajectory_v1 import MIN_KEYS_PER_LINE, KeyframeLines
from .types import Intrinsics, WorldToCamera

PoseKind = Literal["world_to_camera", "camera_to_world"]
NUMBERS_PER_POSE = 16
V1_LINE_NAMES = ("pitch (degrees)", "yaw (degrees)", "r")
FileLike = str | Path


class PathFileError(PathError):
    """A camera file that cannot be read; the message names the file and the line or field."""


@contextmanager
def _errors_name(path: FileLike) -> Iterator[None]:
    """Re-raise camera and path errors met while building the result as file errors."""
    try:
        yield
    except PathFileError:
        raise
    except (CameraError, PathError) as error:
        raise PathFileError(f"{path}: {error}") from None


def _read_text(path: FileLike) -> str:
    try:
        return Path(path).read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise PathFileError(f"{path}: cannot read the file ({error})") from None


def _parse_numbers(text: str, path: FileLike, line_number: int, expected: str) -> list[float]:
    values = []
    for token in text.split():
        try:
            value = float(token)
        except ValueError:
            raise PathFileError(f"{path}, line {line_number}: {token!r} is not a number") from None
        if not math.isfinite(value):
            raise PathFileError(f"{path}, line {line_number}: {token!r} is not finite")
        values.append(value)
    if not values:
        raise PathFileError(f"{path}, line {line_number}: empty, expected {expected}")
    return values


# --- v1 three-line trajectory ----------------------------------------------------------------


def parse_v1_trajectory(text: str, path: FileLike = "v1 trajectory") -> KeyframeLines:
    """The three keyframe lines of a v1 trajectory file (trailing blank lines are allowed)."""
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    if len(lines) != len(V1_LINE_NAMES):
        raise PathFileError(
            f"{path}: a v1 trajectory file has {len(V1_LINE_NAMES)} lines "
            f"({', '.join(V1_LINE_NAMES)}), this one has {len(lines)}"
        )
    parsed = []
    for number, (line, name) in enumerate(zip(lines, V1_LINE_NAMES), start=1):
        values = _parse_numbers(line, path, number, f"the {name} keyframes")
        if len(values) < MIN_KEYS_PER_LINE:
            raise PathFileError(
                f"{path}, line {number}: {len(values)} {name} value(s), a v1 line needs at least "
                f"{MIN_KEYS_PER_LINE} (repeat the value for a constant line)"
            )
        parsed.append(tuple(values))
    return KeyframeLines(*parsed)


def read_v1_trajectory(path: FileLike) -> KeyframeLines:
    return parse_v1_trajectory(_read_text(path), path)


def format_v1_trajectory(keys: KeyframeLines) -> str:
    lines = (keys.pitch_degrees, keys.yaw_degrees, keys.radius)
    return "".join(" ".join(repr(float(value)) for value in line) + "\n" for line in lines)


def write_v1_trajectory(path: FileLike, keys: KeyframeLines) -> None:
    Path(path).write_text(format_v1_trajectory(keys))


# --- pose text: 16 numbers per line ----------------------------------------------------------


def parse_pose_text(
    text: str, path: FileLike = "pose text", kind: PoseKind = "world_to_camera"
) -> WorldToCamera:
    """Canonical Tcw ``[T, 4, 4]`` (float64 holding float32-rounded values, as upstream)."""
    if kind not in ("world_to_camera", "camera_to_world"):
        raise PathFileError(f"{path}: kind must be 'world_to_camera' or 'camera_to_world'")
    poses = []
    for number, line in enumerate(text.splitlines(), start=1):
        content = line.split("#", 1)[0]
        if not content.strip():
            continue
        values = _parse_numbers(content, path, number, f"{NUMBERS_PER_POSE} numbers")
        if len(values) != NUMBERS_PER_POSE:
            raise PathFileError(
                f"{path}, line {number}: {len(values)} numbers, expected {NUMBERS_PER_POSE} "
                "(one row-major 4×4 pose per line)"
            )
        # np.loadtxt(...).astype(np.float32): the file's values rounded to float32.
        pose = torch.from_numpy(np.asarray(values, dtype=np.float32).reshape(4, 4)).double()
        try:
            check_rigid(pose, "the pose")
        except CameraError as error:
            raise PathFileError(f"{path}, line {number}: {error}") from None
        poses.append(pose)
    if not poses:
        raise PathFileError(f"{path}: no poses (expected one line of 16 numbers per frame)")
    stacked = torch.stack(poses)
    if kind == "camera_to_world":
        return world_to_camera_from_camera_to_world(stacked)
    return stacked


def read_pose_text(path: FileLike, kind: PoseKind = "world_to_camera") -> WorldToCamera:
    return parse_pose_text(_read_text(path), path, kind)


def format_pose_text(world_to_camera: WorldToCamera, kind: PoseKind = "world_to_camera") -> str:
    """One row-major pose per line (Tcw, or its camera-to-world inverse for ``kind=
    "camera_to_world"``), with full float64 precision (reading rounds to float32, as upstream)."""
    if kind not in ("world_to_camera", "camera_to_world"):
        raise PathFileError(f"kind must be 'world_to_camera' or 'camera_to_world', got {kind!r}")
    poses = check_rigid(world_to_camera, "world_to_camera").double()
    if kind == "camera_to_world":
        poses = camera_to_world_from_world_to_camera(poses)
    rows = poses.reshape(-1, NUMBERS_PER_POSE)
    return "".join(" ".join(repr(value) for value in row) + "\n" for row in rows.tolist())


def write_pose_text(
    path: FileLike, world_to_camera: WorldToCamera, kind: PoseKind = "world_to_camera"
) -> None:
    Path(path).write_text(format_pose_text(world_to_camera, kind))


# --- the pack's JSON wire format -------------------------------------------------------------


def read_path_json(path: FileLike) -> CameraPath:
    text = _read_text(path)
    try:
        return path_from_json(text, source=str(path))
    except PathError as error:
        raise PathFileError(str(error)) from None


def write_path_json(path: FileLike, camera_path: CameraPath) -> None:
    Path(path).write_text(path_to_json(camera_path))


# --- transforms.json and WorldFM meta.json ---------------------------------------------------


def _load_json(path: FileLike) -> dict:
    try:
        document = json.loads(_read_text(path))
    except json.JSONDecodeError as error:
        raise PathFileError(
            f"{path}: invalid JSON at line {error.lineno}, column {error.colno}: {error.msg}"
        ) from None
    if not isinstance(document, dict):
        raise PathFileError(f"{path}: expected a JSON object at the top level")
    return document


def _matrix(value: object, rows: int, path: FileLike, field: str) -> torch.Tensor:
    try:
        matrix = torch.tensor(value, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError):
        raise PathFileError(f"{path}: {field} must be a {rows}×{rows} list of numbers") from None
    if matrix.shape == (3, 4) and rows == 4:
        # 3×4 [R|t] rows are common in transforms files; complete the homogeneous row.
        matrix = torch.cat([matrix, torch.tensor([[0.0, 0.0, 0.0, 1.0]], dtype=torch.float64)])
    if matrix.shape != (rows, rows) or not torch.isfinite(matrix).all():
        raise PathFileError(
            f"{path}: {field} must be a finite {rows}×{rows} matrix, got shape {list(matrix.shape)}"
        )
    return matrix


def _poses(matrices: list[torch.Tensor], path: FileLike, field: str) -> torch.Tensor:
    for index, matrix in enumerate(matrices):
        try:
            check_rigid(matrix, f"{field}[{index}]")
        except CameraError as error:
            raise PathFileError(f"{path}: {error}") from None
    return torch.stack(matrices)


def _number(fields: dict, key: str, path: FileLike, where: str) -> float:
    value = fields[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise PathFileError(f"{path}: {where}{key} must be a finite number, got {value!r}")
    return float(value)


def _nerf_intrinsics(document: dict, frame: dict, path: FileLike, where: str) -> Intrinsics | None:
    """NeRF intrinsics of a frame (per-frame fields override the file's)."""
    fields = {**document, **frame}
    if all(key in fields for key in ("fl_x", "cx", "cy")):
        focal_x = _number(fields, "fl_x", path, where)
        focal_y = _number(fields, "fl_y", path, where) if "fl_y" in fields else focal_x
        centre_x, centre_y = _number(fields, "cx", path, where), _number(fields, "cy", path, where)
        return torch.tensor(
            [[focal_x, 0.0, centre_x], [0.0, focal_y, centre_y], [0.0, 0.0, 1.0]],
            dtype=torch.float64,
        )
    if all(key in fields for key in ("camera_angle_x", "w", "h")):
        fov_degrees = math.degrees(_number(fields, "camera_angle_x", path, where))
        width, height = _number(fields, "w", path, where), _number(fields, "h", path, where)
        return intrinsics_from_fov(fov_degrees, round(width), round(height))
    return None


def _single_intrinsics(per_frame: list[Intrinsics | None], path: FileLike) -> Intrinsics | None:
    known = [matrix for matrix in per_frame if matrix is not None]
    if any(not torch.allclose(matrix, known[0]) for matrix in known[1:]):
        raise PathFileError(
            f"{path}: the frames have different intrinsics; a camera path has one K (split the "
            "file or resample the images to one camera)"
        )
    return known[0] if known else None


def read_transforms_json(path: FileLike, fps: float | None = None) -> CameraPath:
    """A NeRF (OpenGL ``transform_matrix``) or WorldFM (OpenCV ``c2w``) transforms file."""
    with _errors_name(path):
        return _transforms_path(_load_json(path), path, fps)


def _transforms_path(document: dict, path: FileLike, fps: float | None) -> CameraPath:
    frames = document.get("frames")
    if not isinstance(frames, list) or not frames:
        raise PathFileError(f"{path}: 'frames' must be a non-empty list of camera entries")
    opengl, opencv, intrinsics = [], [], []
    for index, frame in enumerate(frames):
        if not isinstance(frame, dict):
            raise PathFileError(f"{path}: frames[{index}] must be an object")
        if "transform_matrix" in frame:
            field = f"frames[{index}].transform_matrix"
            opengl.append(_matrix(frame["transform_matrix"], 4, path, field))
            intrinsics.append(_nerf_intrinsics(document, frame, path, f"frames[{index}]."))
        elif "c2w" in frame:
            opencv.append(_matrix(frame["c2w"], 4, path, f"frames[{index}].c2w"))
            has_k = "K" in frame
            intrinsics.append(_matrix(frame["K"], 3, path, f"frames[{index}].K") if has_k else None)
        else:
            raise PathFileError(
                f"{path}: frames[{index}] has neither 'transform_matrix' (NeRF, OpenGL axes) nor "
                "'c2w' (WorldFM, OpenCV axes)"
            )
    if opengl and opencv:
        raise PathFileError(f"{path}: mixes 'transform_matrix' and 'c2w' frames; use one kind")
    if opengl:
        world_to_camera = world_to_camera_from_opengl(_poses(opengl, path, "transform_matrix"))
    else:
        world_to_camera = world_to_camera_from_camera_to_world(_poses(opencv, path, "c2w"))
    return CameraPath(world_to_camera, _single_intrinsics(intrinsics, path), fps)


def write_transforms_json(path: FileLike, camera_path: CameraPath, width: int, height: int) -> None:
    """NeRF-style ``transforms.json`` (OpenGL camera axes), readable by common NeRF tools."""
    document: dict = {"w": width, "h": height}
    if camera_path.intrinsics is not None:
        intrinsics = camera_path.intrinsics.double()
        document.update(
            fl_x=float(intrinsics[0, 0]),
            fl_y=float(intrinsics[1, 1]),
            cx=float(intrinsics[0, 2]),
            cy=float(intrinsics[1, 2]),
        )
    opengl = opengl_from_world_to_camera(camera_path.world_to_camera.double())
    document["frames"] = [{"transform_matrix": matrix} for matrix in opengl.tolist()]
    Path(path).write_text(json.dumps(document, indent=1))


def read_worldfm_meta(path: FileLike, fps: float | None = None) -> CameraPath:
    """WorldFM ``meta.json``: ``K`` (3×3) and ``c2w`` (one 4×4 or a list), OpenCV axes."""
    with _errors_name(path):
        return _meta_path(_load_json(path), path, fps)


def _meta_path(document: dict, path: FileLike, fps: float | None) -> CameraPath:
    for required in ("K", "c2w"):
        if required not in document:
            raise PathFileError(f"{path}: missing {required!r} (WorldFM meta.json has K and c2w)")
    intrinsics = _matrix(document["K"], 3, path, "K")
    poses = document["c2w"]
    if not isinstance(poses, list) or not poses:
        raise PathFileError(f"{path}: 'c2w' must be a 4×4 matrix or a non-empty list of them")
    # One 4×4 is a list of rows of numbers; a pose list is a list of such matrices.
    single = isinstance(poses[0], list) and not any(isinstance(row, list) for row in poses[0])
    pose_list = [poses] if single else poses
    matrices = [_matrix(pose, 4, path, f"c2w[{index}]") for index, pose in enumerate(pose_list)]
    world_to_camera = world_to_camera_from_camera_to_world(_poses(matrices, path, "c2w"))
    return CameraPath(world_to_camera, intrinsics, fps)


def write_worldfm_meta(
    path: FileLike, camera_path: CameraPath, name: str = "scene", image: str = "input.png"
) -> None:
    """WorldFM ``meta.json`` for this path (needs the path's intrinsics)."""
    if camera_path.intrinsics is None:
        raise PathFileError(f"{path}: WorldFM meta.json needs a K; give the camera path intrinsics")
    camera_to_world = camera_to_world_from_world_to_camera(camera_path.world_to_camera.double())
    document = {
        "name": name,
        "image": image,
        "K": camera_path.intrinsics.double().tolist(),
        "c2w": camera_to_world.tolist(),
    }
    Path(path).write_text(json.dumps(document, indent=1))
