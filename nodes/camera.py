"""Camera-path sources: presets and keyframes (the JSON wire format), and what path nodes share.

Data flow: artist settings → **here** → ``INSPATIO_CAMERA_PATH`` (a ``core.paths.CameraPath``: one
OpenCV world-to-camera pose per output frame) → Render Condition and the world sampler.
Every node is a declaration over one core call: presets ``core/path_presets.py``, keyframes and
their JSON wire format ``core/keyframes.py`` (the value the future in-graph editor writes into the
STRING widget). Camera files are read and written by ``nodes/camera_files.py``, paths are edited
and previewed by ``nodes/camera_edit.py``; their path outputs are declared by
:class:`CameraPathNode` here, and a move anchored to a scene (a preset, a v1 keyframe file) gets
its length, source poses and foreground depth from :func:`anchored_to_scene`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from . import comfy as cf
from .errors import check_choice, reported_as

if TYPE_CHECKING:
    from ..core.path_presets import Preset
    from ..core.paths import CameraPath
    from ..core.scene import Scene
    from ..core.types import WorldToCamera

CATEGORY = "InSpatio/Camera"
SCENE_TYPE = "INSPATIO_SCENE"
CAMERA_PATH_TYPE = "INSPATIO_CAMERA_PATH"

DEFAULT_FRAMES = 81  # 4k + 1, three blocks of the released model
MAX_FRAMES = 10000
#: Foreground depth of a move with no scene connected: amplitudes in scene depths are world units.
UNANCHORED_SCENE_DEPTH = 1.0

# A gentle orbit around a point 2 units in front of the first camera: a valid document of the wire
# format that shows its fields, so editing starts from something that renders.
DEFAULT_KEYFRAMES_JSON = """{
  "format": "inspatio.camera_path/1",
  "frames": 81,
  "interpolation": "smooth",
  "keyframes": [
    {"frame": 0, "position": [0.0, 0.0, 0.0], "look_at": [0.0, 0.0, 2.0]},
    {"frame": 40, "position": [0.35, -0.1, 0.1], "look_at": [0.0, 0.0, 2.0]},
    {"frame": 80, "position": [0.6, 0.0, 0.3], "look_at": [0.0, 0.0, 2.0]}
  ]
}"""


class CameraPathNode:
    """The declarations every node with a camera-path output shares."""

    CATEGORY = CATEGORY
    RETURN_TYPES = (CAMERA_PATH_TYPE, "INT")
    RETURN_NAMES = ("camera_path", "frames")
    OUTPUT_TOOLTIPS = ("One target camera per output frame.", "The number of frames of the path.")


def path_output(path: CameraPath) -> tuple[CameraPath, int]:
    """The outputs of a :class:`CameraPathNode`: the path and its frame count."""
    return (path, path.num_frames)


def anchored_to_scene(
    node: str, frames: int, scene: Scene | None
) -> tuple[int, WorldToCamera | None, float]:
    """Frame count, source poses and foreground depth of a move anchored to an optional scene.

    ``frames`` 0 follows the scene's length, which needs a connected scene.
    """
    from ..core.depth import foreground_depth

    if frames == 0 and scene is None:
        raise cf.NodeInputError(node, "frames", "is 0 (follow the scene) but no scene is connected")
    if scene is None:
        return frames, None, UNANCHORED_SCENE_DEPTH
    with reported_as(node, "scene"):
        depth = foreground_depth(scene.depth)
    return frames or scene.num_frames, scene.world_to_camera, depth


def _check_finite(node: str, input_name: str, value: float) -> None:
    """Refuse a NaN or infinite FLOAT widget (an API prompt is not checked against its range)."""
    if not math.isfinite(value):
        raise cf.NodeInputError(node, input_name, f"is {value}: use a finite number")


def _with_official_keyframes(path: CameraPath, preset: Preset, amplitude: float) -> CameraPath:
    """An official v1 preset's path carries its keyframe lines, so it can be saved as a v1 file.

    The r line is scaled by the amplitude, as ``core/path_presets.py`` ``preset_motion`` does
    before interpolating, so the saved lines are the ones this path was built from.
    """
    from dataclasses import replace

    from ..core.trajectory_v1 import KeyframeLines

    keys = preset.official_keyframes
    if keys is None:
        return path
    radius = tuple(amplitude * value for value in keys.radius)
    return replace(path, v1_keyframes=KeyframeLines(keys.pitch_degrees, keys.yaw_degrees, radius))


class InSpatioCameraPreset(CameraPathNode):
    """A named camera move (orbit, dolly, pan, the official v1 moves ...)."""

    NODE = "InSpatio Camera Path Preset"
    FUNCTION = "build"
    DESCRIPTION = (
        "A preset camera move, anchored to the scene's first camera like the official renderer."
    )

    @classmethod
    def INPUT_TYPES(cls):
        from ..core.path_presets import PRESETS
        from ..core.paths import EASINGS

        return {
            "required": {
                "preset": (
                    list(PRESETS),
                    {
                        "default": "orbit_left",
                        "tooltip": "The move. "
                        + "; ".join(
                            f"{name}: {preset.description}" for name, preset in PRESETS.items()
                        ),
                    },
                ),
                "frames": (
                    "INT",
                    {
                        "default": DEFAULT_FRAMES,
                        "min": 0,
                        "max": MAX_FRAMES,
                        "tooltip": "Output frames; 0 = as many as the scene has frames.",
                    },
                ),
                "strength": (
                    "FLOAT",
                    {
                        "default": 1.0,
                        "min": -10.0,
                        "max": 10.0,
                        "step": 0.05,
                        "tooltip": "Multiplier of the preset's own amplitude (degrees or scene depths); negative reverses it.",
                    },
                ),
                "easing": (
                    list(EASINGS),
                    {"default": "ease_in_out", "tooltip": "How the move speeds up and slows down."},
                ),
                "radius_ratio": (
                    "FLOAT",
                    {
                        "default": 1.0,
                        "min": 0.01,
                        "max": 100.0,
                        "step": 0.01,
                        "tooltip": "Orbit pivot distance in multiples of the scene's foreground depth (official radius_ratio).",
                    },
                ),
                "rotation_only": (
                    "BOOLEAN",
                    {
                        "default": False,
                        "tooltip": "Keep the camera in place and only turn it (official --rotation_only).",
                    },
                ),
                "relative_to_source": (
                    "BOOLEAN",
                    {
                        "default": False,
                        "tooltip": "Ride along with the source video's own camera motion (official --relative_to_source).",
                    },
                ),
            },
            "optional": {
                "scene": (
                    SCENE_TYPE,
                    {
                        "tooltip": "Anchors the move to the scene: its first camera, its "
                        "foreground depth (for moves in scene depths), its length."
                    },
                ),
            },
        }

    def build(
        self,
        preset,
        frames,
        strength,
        easing,
        radius_ratio,
        rotation_only,
        relative_to_source,
        scene=None,
    ):
        from ..core.path_presets import PRESETS, preset_path
        from ..core.paths import EASINGS

        # Each widget is checked against its own name first, so an API prompt with a bad value
        # is reported on the input that holds it (not on 'preset', which wraps the core call).
        check_choice(self.NODE, "preset", preset, list(PRESETS))
        check_choice(self.NODE, "easing", easing, list(EASINGS))
        _check_finite(self.NODE, "strength", strength)
        if not (math.isfinite(radius_ratio) and radius_ratio > 0):
            raise cf.NodeInputError(
                self.NODE,
                "radius_ratio",
                f"is {radius_ratio}: use a positive number (1 = foreground depth)",
            )
        if frames < 0:
            raise cf.NodeInputError(
                self.NODE, "frames", f"is {frames}: use 0 (follow the scene) or a positive count"
            )
        frame_count, source, depth = anchored_to_scene(self.NODE, frames, scene)
        if relative_to_source and (scene is None or frames not in (0, scene.num_frames)):
            raise cf.NodeInputError(
                self.NODE,
                "relative_to_source",
                "needs a connected scene and as many frames as it has (set frames to 0)",
            )
        amplitude = strength * PRESETS[preset].default_amplitude
        with reported_as(self.NODE, "preset"):
            path = preset_path(
                preset,
                frame_count,
                source,
                amplitude=amplitude,
                easing=easing,
                scene_depth=depth,
                radius_ratio=radius_ratio,
                rotation_only=rotation_only,
                relative_to_source=relative_to_source,
            )
        if relative_to_source:  # the poses follow the source camera, not the keyframe lines
            return path_output(path)
        return path_output(_with_official_keyframes(path, PRESETS[preset], amplitude))


class InSpatioCameraKeyframes(CameraPathNode):
    """A keyframed path written in the JSON wire format (what the in-graph editor will write)."""

    NODE = "InSpatio Camera Path Keyframes"
    FUNCTION = "build"
    DESCRIPTION = "Keyframes (position + rotation quaternion or look-at), interpolated on SE(3)."

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "path_json": (
                    "STRING",
                    {
                        "multiline": True,
                        "default": DEFAULT_KEYFRAMES_JSON,
                        "tooltip": "inspatio.camera_path/1 document: frames, keyframes [{frame, position, rotation (w,x,y,z) "
                        "or look_at}], optional fps, interpolation (smooth|linear), up, intrinsics. OpenCV world "
                        "axes (y down), the first source camera at the origin.",
                    },
                ),
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, path_json):
        from ..core.keyframes import path_from_json

        if path_json is None:  # linked from another node: checked when it runs
            return True
        try:
            path_from_json(path_json, "path_json")
        except ValueError as error:
            return f"{cls.NODE}: input 'path_json' {error}"
        return True

    def build(self, path_json):
        from ..core.keyframes import path_from_json

        with reported_as(self.NODE, "path_json"):
            return path_output(path_from_json(path_json, "path_json"))


NODE_CLASSES = (InSpatioCameraPreset, InSpatioCameraKeyframes)
NODE_CLASS_MAPPINGS = {node.__name__: node for node in NODE_CLASSES}
NODE_DISPLAY_NAME_MAPPINGS = {node.__name__: node.NODE for node in NODE_CLASSES}
