"""Cameras: pixel intrinsics and rigid poses in the pack's canonical form.

Canonical form (ARCHITECTURE.md, Contracts): OpenCV axes (x right, y down, z forward), a
world-to-camera 4×4 ``Tcw`` per view, and a 3×3 pixel ``K`` for the image it is used with. Every
other convention met at the boundary (camera-to-world, OpenGL/NeRF camera axes, WorldFM's
``meta.json``) is converted here once; the file readers in ``core/path_files.py`` call
these helpers.

Sources of the conventions:

- v1 ``scripts/render_point_cloud.py`` ``scale_intrinsic``: the principal point is moved to the
  image centre and the focal lengths are scaled so the field of view to the image edge from the
  old principal point is kept (``fx·W/(2cx)``); see :func:`recentre_principal_point`.
- v1 ``depth/depth_predict_da3.py``: K rows scaled by ``832/infer_w`` and ``480/infer_h`` on a
  resize, with no half-pixel shift (pixel centres are integers throughout the official code);
  :func:`resize_intrinsics` keeps that convention.
- WorldFM ``modules/transforms_io.py``: OpenCV camera-to-world 4×4 and pixel K.

Every function accepts batched inputs (``[..., 4, 4]``, ``[..., 3, 3]``) and keeps the dtype and
device of its input.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .types import CameraToWorld, Intrinsics, WorldToCamera

#: How far ``RᵀR`` may be from the identity, and ``det R`` from 1, for a pose to count as rigid.
#: Poses read from text files carry ~1e-7 float32 rounding; anything above this is a real error
#: (a scaled, sheared or mirrored matrix).
RIGIDITY_TOLERANCE = 1e-4

#: Flips the camera's y and z axes: OpenGL/NeRF cameras look down −z with y up, OpenCV cameras
#: look down +z with y down. Right-multiplying a camera-to-world matrix by it converts the camera
#: axes and leaves the world frame alone.
OPENGL_TO_OPENCV_AXES = (1.0, -1.0, -1.0, 1.0)

HOMOGENEOUS_ROW = (0.0, 0.0, 0.0, 1.0)

#: Default on-screen up for :func:`look_at`: −y, because OpenCV/DA3 world frames have y down.
WORLD_UP = (0.0, -1.0, 0.0)


class CameraError(ValueError):
    """A camera input with the wrong shape or non-rigid values; the message says which and how."""


# --- validation ------------------------------------------------------------------------------


def _check_finite_matrices(value: Tensor, name: str, size: int) -> None:
    """``value`` is a tensor of finite ``[..., size, size]`` matrices, or a CameraError says why."""
    if not isinstance(value, Tensor):
        raise CameraError(
            f"{name} must be a torch tensor of shape [..., {size}, {size}], "
            f"got {type(value).__name__}"
        )
    if value.shape[-2:] != (size, size):
        raise CameraError(f"{name} must have shape [..., {size}, {size}], got {list(value.shape)}")
    if not torch.isfinite(value).all():
        raise CameraError(f"{name} contains NaN or infinite values")


def check_intrinsics(intrinsics: Intrinsics, name: str = "intrinsics") -> Intrinsics:
    """Return ``intrinsics`` unchanged after checking it is a finite ``[..., 3, 3]`` pixel K."""
    _check_finite_matrices(intrinsics, name, 3)
    focal = torch.stack([intrinsics[..., 0, 0], intrinsics[..., 1, 1]], dim=-1)
    if (focal <= 0).any():
        raise CameraError(f"{name} has a non-positive focal length (fx or fy ≤ 0): pass a pixel K")
    return intrinsics


def check_rigid(pose: Tensor, name: str = "pose") -> Tensor:
    """Return ``pose`` unchanged after checking it is a finite rigid ``[..., 4, 4]`` transform.

    Rigid means: bottom row ``[0, 0, 0, 1]``, rotation block orthonormal with determinant +1 (within
    :data:`RIGIDITY_TOLERANCE`). A mirrored or scaled matrix would silently flip or shrink the
    splatted scene, so it is rejected here rather than discovered in a render.
    """
    _check_finite_matrices(pose, name, 4)
    bottom = pose[..., 3, :].double()
    expected_bottom = torch.tensor(HOMOGENEOUS_ROW, dtype=torch.float64, device=pose.device)
    if (bottom - expected_bottom).abs().max() > RIGIDITY_TOLERANCE:
        raise CameraError(f"{name} bottom row must be [0, 0, 0, 1] (a homogeneous 4×4 transform)")
    rotation = pose[..., :3, :3].double()
    identity = torch.eye(3, dtype=torch.float64, device=pose.device)
    gram = rotation.transpose(-1, -2) @ rotation
    orthogonality_error = (gram - identity).abs().amax(dim=(-1, -2))
    worst = int(orthogonality_error.argmax()) if orthogonality_error.ndim else 0
    if (orthogonality_error > RIGIDITY_TOLERANCE).any():
        raise CameraError(
            f"{name} has a non-orthonormal rotation block (|RᵀR − I| = "
            f"{float(orthogonality_error.max()):.3g} at pose {worst}): poses must be rigid, "
            "without scale or shear"
        )
    if (torch.linalg.det(rotation) < 0).any():
        raise CameraError(
            f"{name} has a mirrored rotation (det R = −1): convert left-handed or flipped-axis "
            "cameras to OpenCV axes first"
        )
    return pose


# --- intrinsics ------------------------------------------------------------------------------


def intrinsics_from_fov(
    fov_degrees: float, width: int, height: int, fov_axis: str = "horizontal"
) -> Intrinsics:
    """Pixel K (float64) for a pinhole camera with square pixels and a centred principal point.

    ``fov_axis`` says which image side the field of view spans: ``"horizontal"`` (width) or
    ``"vertical"`` (height). The principal point is ``(W/2, H/2)``, the official convention
    (``scale_intrinsic`` puts it there too).
    """
    if not 0.0 < fov_degrees < 180.0:
        raise CameraError(f"fov_degrees must be in (0, 180), got {fov_degrees}")
    if width <= 0 or height <= 0:
        raise CameraError(f"image size must be positive, got width={width}, height={height}")
    spans = {"horizontal": width, "vertical": height}
    if fov_axis not in spans:
        raise CameraError(f"fov_axis must be one of {sorted(spans)}, got {fov_axis!r}")
    focal = spans[fov_axis] / 2.0 / math.tan(math.radians(fov_degrees) / 2.0)
    return torch.tensor(
        [[focal, 0.0, width / 2.0], [0.0, focal, height / 2.0], [0.0, 0.0, 1.0]],
        dtype=torch.float64,
    )


def resize_intrinsics(
    intrinsics: Intrinsics, source_size: tuple[int, int], target_size: tuple[int, int]
) -> Intrinsics:
    """K for an image resized from ``source_size`` to ``target_size`` (both ``(width, height)``).

    Rows are scaled by the per-axis factors with no half-pixel shift, as the official DA3
    post-processing does (``K[0] *= 832/infer_w``, ``K[1] *= 480/infer_h``).
    """
    check_intrinsics(intrinsics)
    (source_width, source_height), (target_width, target_height) = source_size, target_size
    if min(source_width, source_height, target_width, target_height) <= 0:
        raise CameraError(f"image sizes must be positive, got {source_size} → {target_size}")
    scale = torch.tensor(
        [target_width / source_width, target_height / source_height, 1.0],
        dtype=intrinsics.dtype,
        device=intrinsics.device,
    )
    return intrinsics * scale[:, None]


def crop_intrinsics(intrinsics: Intrinsics, left: int, top: int) -> Intrinsics:
    """K for the crop whose top-left corner is pixel ``(left, top)`` of the original image."""
    check_intrinsics(intrinsics)
    cropped = intrinsics.clone()
    cropped[..., 0, 2] -= left
    cropped[..., 1, 2] -= top
    return cropped


def resize_crop_geometry(
    source_size: tuple[int, int], target_size: tuple[int, int]
) -> tuple[tuple[int, int], tuple[int, int]]:
    """How to cover ``target_size`` from ``source_size`` (``(width, height)``) without distortion.

    Returns ``(resized_size, (left, top))``: resize uniformly until both sides cover the target,
    then centre-crop. Image code and :func:`resize_crop_intrinsics` share this so pixels and K
    agree exactly.
    """
    (source_width, source_height), (target_width, target_height) = source_size, target_size
    if min(source_width, source_height, target_width, target_height) <= 0:
        raise CameraError(f"image sizes must be positive, got {source_size} → {target_size}")
    scale = max(target_width / source_width, target_height / source_height)
    resized_width = max(target_width, round(source_width * scale))
    resized_height = max(target_height, round(source_height * scale))
    left = (resized_width - target_width) // 2
    top = (resized_height - target_height) // 2
    return (resized_width, resized_height), (left, top)


def resize_crop_intrinsics(
    intrinsics: Intrinsics, source_size: tuple[int, int], target_size: tuple[int, int]
) -> Intrinsics:
    """K after :func:`resize_crop_geometry`'s resize then centre-crop to ``target_size``."""
    resized_size, (left, top) = resize_crop_geometry(source_size, target_size)
    return crop_intrinsics(resize_intrinsics(intrinsics, source_size, resized_size), left, top)


def recentre_principal_point(intrinsics: Intrinsics, width: int, height: int) -> Intrinsics:
    """v1 ``scale_intrinsic``: ``fx·W/(2cx)``, ``fy·H/(2cy)``, principal point at ``(W/2, H/2)``.

    The official renderer applies this to the DA3 intrinsics before warping. It is *not* a
    resize: it keeps the angle from the principal point to the left/top edge, so an off-centre
    K becomes a centred one with a slightly different focal length (a deliberate upstream quirk
    the v1 fixtures depend on).
    """
    check_intrinsics(intrinsics)
    # Upstream forms the scale in Python float64 (`.item()`) and multiplies it into the K tensor
    # in K's own dtype; the same order of rounding keeps float32 K bit-exact.
    scale_x = (width / (2.0 * intrinsics[..., 0, 2].double())).to(intrinsics.dtype)
    scale_y = (height / (2.0 * intrinsics[..., 1, 2].double())).to(intrinsics.dtype)
    recentred = intrinsics.clone()
    recentred[..., 0, 0] = intrinsics[..., 0, 0] * scale_x
    recentred[..., 1, 1] = intrinsics[..., 1, 1] * scale_y
    recentred[..., 0, 2] = width / 2.0
    recentred[..., 1, 2] = height / 2.0
    return recentred


# --- poses -----------------------------------------------------------------------------------


def invert_rigid(pose: Tensor) -> Tensor:
    """Inverse of a rigid ``[..., 4, 4]`` transform: ``[Rᵀ | −Rᵀt]`` (no general solve)."""
    check_rigid(pose)
    rotation_transposed = pose[..., :3, :3].transpose(-1, -2)
    translation = pose[..., :3, 3:]
    inverse = torch.zeros_like(pose)
    inverse[..., :3, :3] = rotation_transposed
    inverse[..., :3, 3:] = -rotation_transposed @ translation
    inverse[..., 3, 3] = 1.0
    return inverse


def compose(*poses: Tensor) -> Tensor:
    """``poses[0] @ poses[1] @ …`` of rigid 4×4 transforms, broadcast over the batch."""
    if not poses:
        raise CameraError("compose needs at least one pose")
    result = check_rigid(poses[0], "poses[0]")
    for index, pose in enumerate(poses[1:], start=1):
        result = result @ check_rigid(pose, f"poses[{index}]")
    return result


def pose_from_rotation_translation(rotation: Tensor, translation: Tensor) -> Tensor:
    """4×4 ``[R | t; 0 0 0 1]`` from ``[..., 3, 3]`` rotations and ``[..., 3]`` translations."""
    if rotation.shape[-2:] != (3, 3) or translation.shape[-1:] != (3,):
        raise CameraError(
            f"rotation must be [..., 3, 3] and translation [..., 3], got "
            f"{list(rotation.shape)} and {list(translation.shape)}"
        )
    batch = torch.broadcast_shapes(rotation.shape[:-2], translation.shape[:-1])
    pose = torch.zeros(*batch, 4, 4, dtype=rotation.dtype, device=rotation.device)
    pose[..., :3, :3] = rotation
    pose[..., :3, 3] = translation
    pose[..., 3, 3] = 1.0
    return pose


def camera_centres(world_to_camera: WorldToCamera) -> Tensor:
    """World position of each camera, ``[..., 3]``: ``−Rᵀt``."""
    return invert_rigid(world_to_camera)[..., :3, 3]


def look_at(eye: Tensor, target: Tensor, up: Tensor | None = None) -> WorldToCamera:
    """OpenCV world-to-camera for a camera at ``eye`` whose +z looks at ``target``.

    ``up`` is the world direction that should appear up on screen, i.e. along the camera's −y;
    the default ``(0, −1, 0)`` matches the OpenCV/DA3 world frames of this pack (y down). With
    x = y × z: right = forward × up, and down = forward × right.
    """
    eye = torch.as_tensor(eye, dtype=torch.float64)
    target = torch.as_tensor(target, dtype=torch.float64)
    up = torch.as_tensor(WORLD_UP if up is None else up, dtype=torch.float64)
    if eye.shape[-1:] != (3,) or target.shape[-1:] != (3,) or up.shape[-1:] != (3,):
        raise CameraError("look_at: eye, target and up must be 3-vectors")
    forward = target - eye
    forward_length = torch.linalg.vector_norm(forward, dim=-1, keepdim=True)
    if (forward_length < RIGIDITY_TOLERANCE).any():
        raise CameraError("look_at: eye and target coincide, the viewing direction is undefined")
    forward = forward / forward_length
    right = torch.linalg.cross(forward, up.expand_as(forward), dim=-1)
    right_length = torch.linalg.vector_norm(right, dim=-1, keepdim=True)
    if (right_length < RIGIDITY_TOLERANCE).any():
        raise CameraError(
            "look_at: the up vector is parallel to the viewing direction; pick another up"
        )
    right = right / right_length
    down = torch.linalg.cross(forward, right, dim=-1)
    camera_to_world_rotation = torch.stack([right, down, forward], dim=-1)
    return invert_rigid(pose_from_rotation_translation(camera_to_world_rotation, eye))


# --- conversions at the boundary -------------------------------------------------------------


def world_to_camera_from_camera_to_world(camera_to_world: CameraToWorld) -> WorldToCamera:
    """Canonical Tcw from OpenCV camera-to-world poses (checked for rigidity)."""
    return invert_rigid(check_rigid(camera_to_world, "camera_to_world"))


def camera_to_world_from_world_to_camera(world_to_camera: WorldToCamera) -> CameraToWorld:
    """OpenCV camera-to-world poses from canonical Tcw."""
    return invert_rigid(check_rigid(world_to_camera, "world_to_camera"))


def world_to_camera_from_opengl(camera_to_world_opengl: Tensor) -> WorldToCamera:
    """Canonical Tcw from OpenGL/NeRF camera-to-world poses (``transforms.json`` style).

    OpenGL cameras look down −z with y up; the camera axes are flipped to OpenCV and the world
    frame is kept as it is (so the scene and these poses stay in the same world).
    """
    check_rigid(camera_to_world_opengl, "camera_to_world (OpenGL)")
    return invert_rigid(camera_to_world_opengl @ _axis_flip(camera_to_world_opengl))


def opengl_from_world_to_camera(world_to_camera: WorldToCamera) -> Tensor:
    """OpenGL/NeRF camera-to-world poses from canonical Tcw (inverse of the function above)."""
    return camera_to_world_from_world_to_camera(world_to_camera) @ _axis_flip(world_to_camera)


def _axis_flip(like: Tensor) -> Tensor:
    axes = torch.tensor(OPENGL_TO_OPENCV_AXES, dtype=like.dtype, device=like.device)
    return torch.diag(axes)
