"""Camera-path nodes: presets, keyframes (the JSON wire format), files, path operations, preview.

Data flow: artist settings → **here** → ``INSPATIO_CAMERA_PATH`` (a ``core.paths.CameraPath``: one
OpenCV world-to-camera pose per output frame) → Render Condition and the world sampler.
Every node is a declaration over one core call: presets ``core/path_presets.py``, keyframes and
their JSON wire format ``core/keyframes.py`` (the value the future in-graph editor writes into the
STRING widget), files ``core/path_files.py``, operations ``core/paths.py``, the two-panel preview
``core/preview.py``.
"""

from __future__ import annotations

import os

from . import comfy as cf
from .errors import reported_as

CATEGORY = "InSpatio/Camera"
SCENE_TYPE = "INSPATIO_SCENE"
CAMERA_PATH_TYPE = "INSPATIO_CAMERA_PATH"

DEFAULT_FRAMES = 81  # 4k + 1, three blocks of the released model
MAX_FRAMES = 10000
PATH_OPERATIONS = ("reverse", "ping_pong", "loop", "hold_end", "hold_start")
LOAD_FORMATS = (
    "tcw_text",
    "c2w_text",
    "v1_trajectory",
    "inspatio_json",
    "transforms_json",
    "worldfm_meta",
)
SAVE_FORMATS = ("tcw_text", "inspatio_json", "transforms_json", "worldfm_meta")

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


def _path_output(path) -> tuple:
    return (path, path.num_frames)


PATH_RETURN_TYPES = (CAMERA_PATH_TYPE, "INT")
PATH_RETURN_NAMES = ("camera_path", "frames")
PATH_OUTPUT_TOOLTIPS = ("One target camera per output frame.", "The number of frames of the path.")


class InSpatioCameraPreset:
    """A named camera move (orbit, dolly, pan, the official v1 moves ...)."""

    NODE = "InSpatio Camera Path Preset"
    CATEGORY = CATEGORY
    RETURN_TYPES = PATH_RETURN_TYPES
    RETURN_NAMES = PATH_RETURN_NAMES
    OUTPUT_TOOLTIPS = PATH_OUTPUT_TOOLTIPS
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
        from ..core.depth import foreground_depth
        from ..core.path_presets import PRESETS, preset_path

        if frames == 0 and scene is None:
            raise cf.NodeInputError(
                self.NODE, "frames", "is 0 (follow the scene) but no scene is connected"
            )
        source = None if scene is None else scene.world_to_camera
        with reported_as(self.NODE, "scene"):
            depth = 1.0 if scene is None else foreground_depth(scene.depth)
        if relative_to_source and (scene is None or frames not in (0, scene.num_frames)):
            raise cf.NodeInputError(
                self.NODE,
                "relative_to_source",
                "needs a connected scene and as many frames as it has (set frames to 0)",
            )
        with reported_as(self.NODE, "preset"):
            path = preset_path(
                preset,
                frames or scene.num_frames,
                source,
                amplitude=strength * PRESETS[preset].default_amplitude,
                easing=easing,
                scene_depth=depth,
                radius_ratio=radius_ratio,
                rotation_only=rotation_only,
                relative_to_source=relative_to_source,
            )
        return _path_output(path)


class InSpatioCameraKeyframes:
    """A keyframed path written in the JSON wire format (what the in-graph editor will write)."""

    NODE = "InSpatio Camera Path Keyframes"
    CATEGORY = CATEGORY
    RETURN_TYPES = PATH_RETURN_TYPES
    RETURN_NAMES = PATH_RETURN_NAMES
    OUTPUT_TOOLTIPS = PATH_OUTPUT_TOOLTIPS
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
            return _path_output(path_from_json(path_json, "path_json"))


class InSpatioLoadCameraPath:
    """A camera path from a file: v1.5 Tcw text, the v1 pitch/yaw/r file, JSON, transforms.json, meta.json."""

    NODE = "InSpatio Load Camera Path"
    CATEGORY = CATEGORY
    RETURN_TYPES = PATH_RETURN_TYPES
    RETURN_NAMES = PATH_RETURN_NAMES
    OUTPUT_TOOLTIPS = PATH_OUTPUT_TOOLTIPS
    FUNCTION = "load"
    DESCRIPTION = (
        "Read a camera file once into the canonical form (OpenCV world-to-camera per frame)."
    )

    @classmethod
    def INPUT_TYPES(cls):
        from typing import get_args

        from ..core.trajectory_v1 import TrajectoryStyle

        return {
            "required": {
                "file": (
                    "STRING",
                    {
                        "default": "target_tcw.txt",
                        "tooltip": "Path of the camera file (absolute, or relative to the directory ComfyUI runs in).",
                    },
                ),
                "format": (
                    list(LOAD_FORMATS),
                    {
                        "default": "tcw_text",
                        "tooltip": "tcw_text: v1.5 target_tcw.txt / source_tcw.txt (16 numbers per line, world-to-camera); "
                        "c2w_text: the same with camera-to-world poses; v1_trajectory: the v1 three-line "
                        "pitch / yaw / r keyframe file; inspatio_json: the keyframe wire format; transforms_json: "
                        "NeRF (OpenGL) or WorldFM transforms.json; worldfm_meta: WorldFM meta.json.",
                    },
                ),
                "frames": (
                    "INT",
                    {
                        "default": 0,
                        "min": 0,
                        "max": MAX_FRAMES,
                        "tooltip": "v1_trajectory only: frames to interpolate; 0 = as many as the scene has.",
                    },
                ),
                "v1_style": (
                    list(get_args(TrajectoryStyle)),
                    {
                        "default": "render_point_cloud",
                        "tooltip": "v1_trajectory only: 'render_point_cloud' uses the raw r (what the official renders "
                        "use); 'test_dataset' scales r by the foreground depth x radius_ratio.",
                    },
                ),
                "radius_ratio": (
                    "FLOAT",
                    {
                        "default": 1.0,
                        "min": 0.01,
                        "max": 100.0,
                        "step": 0.01,
                        "tooltip": "v1_trajectory only: the official radius_ratio of the 'test_dataset' style.",
                    },
                ),
                "rotation_only": (
                    "BOOLEAN",
                    {
                        "default": False,
                        "tooltip": "v1_trajectory only: zero the translation (official --rotation_only).",
                    },
                ),
            },
            "optional": {
                "scene": (
                    SCENE_TYPE,
                    {
                        "tooltip": "v1_trajectory: anchors the keyframes to the scene's first "
                        "camera and foreground depth, and gives the frame count."
                    },
                ),
            },
        }

    @classmethod
    def IS_CHANGED(cls, file, **_):
        # Re-read when the file changes on disk, like core LoadVideo (fingerprint by mtime).
        try:
            return os.path.getmtime(file)
        except (OSError, TypeError):
            return float("nan")

    def load(self, file, format, frames, v1_style, radius_ratio, rotation_only, scene=None):
        from ..core import path_files

        readers = {
            "tcw_text": lambda: _poses_path(path_files.read_pose_text(file, "world_to_camera")),
            "c2w_text": lambda: _poses_path(path_files.read_pose_text(file, "camera_to_world")),
            "inspatio_json": lambda: path_files.read_path_json(file),
            "transforms_json": lambda: path_files.read_transforms_json(file),
            "worldfm_meta": lambda: path_files.read_worldfm_meta(file),
            "v1_trajectory": lambda: self._v1_path(
                file, frames, v1_style, radius_ratio, rotation_only, scene
            ),
        }
        if format not in readers:
            raise cf.NodeInputError(
                self.NODE, "format", f"is {format!r}: use one of {', '.join(LOAD_FORMATS)}"
            )
        with reported_as(self.NODE, "file"):
            return _path_output(readers[format]())

    def _v1_path(self, file, frames, v1_style, radius_ratio, rotation_only, scene):
        from ..core.depth import foreground_depth
        from ..core.path_files import read_v1_trajectory
        from ..core.trajectory_v1 import trajectory_path

        if frames == 0 and scene is None:
            raise cf.NodeInputError(
                self.NODE, "frames", "is 0 (follow the scene) but no scene is connected"
            )
        keys = read_v1_trajectory(file)
        with reported_as(self.NODE, "scene"):
            depth = 1.0 if scene is None else foreground_depth(scene.depth)
        source = None if scene is None else scene.world_to_camera
        with reported_as(self.NODE, "v1_style"):
            return trajectory_path(
                keys,
                frames or scene.num_frames,
                source,
                v1_style,
                foreground_depth=depth,
                radius_ratio=radius_ratio,
                rotation_only=rotation_only,
            )


class InSpatioSaveCameraPath:
    """Write a camera path to a file (to reuse it, or to run it through the official scripts)."""

    NODE = "InSpatio Save Camera Path"
    CATEGORY = CATEGORY
    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("file",)
    OUTPUT_TOOLTIPS = ("The path of the written file.",)
    FUNCTION = "save"
    OUTPUT_NODE = True
    DESCRIPTION = (
        "tcw_text (v1.5 target_tcw.txt), inspatio_json, transforms_json (NeRF) or worldfm_meta."
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "camera_path": (CAMERA_PATH_TYPE, {"tooltip": "The path to write."}),
                "file": (
                    "STRING",
                    {
                        "default": "camera_path.json",
                        "tooltip": "Where to write (absolute, or relative to the directory ComfyUI runs in); overwritten.",
                    },
                ),
                "format": (
                    list(SAVE_FORMATS),
                    {
                        "default": "inspatio_json",
                        "tooltip": "tcw_text: one row-major world-to-camera per line (v1.5 target_tcw.txt); inspatio_json: "
                        "the wire format; transforms_json: NeRF style (OpenGL axes); worldfm_meta: WorldFM meta.json "
                        "(needs intrinsics on the path).",
                    },
                ),
                "image_width": (
                    "INT",
                    {
                        "default": 832,
                        "min": 1,
                        "max": 16384,
                        "tooltip": "transforms_json only: the image width written as 'w'.",
                    },
                ),
                "image_height": (
                    "INT",
                    {
                        "default": 480,
                        "min": 1,
                        "max": 16384,
                        "tooltip": "transforms_json only: the image height written as 'h'.",
                    },
                ),
            },
        }

    def save(self, camera_path, file, format, image_width, image_height):
        from ..core import path_files

        writers = {
            "tcw_text": lambda: path_files.write_pose_text(file, camera_path.world_to_camera),
            "inspatio_json": lambda: path_files.write_path_json(file, camera_path),
            "transforms_json": lambda: path_files.write_transforms_json(
                file, camera_path, image_width, image_height
            ),
            "worldfm_meta": lambda: path_files.write_worldfm_meta(file, camera_path),
        }
        if format not in writers:
            raise cf.NodeInputError(
                self.NODE, "format", f"is {format!r}: use one of {', '.join(SAVE_FORMATS)}"
            )
        with reported_as(self.NODE, "file"):
            try:
                writers[format]()
            except OSError as error:
                raise cf.NodeInputError(self.NODE, "file", f"cannot be written: {error}") from error
        return {"ui": {"text": (file,)}, "result": (file,)}


def _poses_path(world_to_camera):
    from ..core.paths import CameraPath

    return CameraPath(world_to_camera)


class InSpatioConcatCameraPaths:
    """Two paths played one after the other."""

    NODE = "InSpatio Concatenate Camera Paths"
    CATEGORY = CATEGORY
    RETURN_TYPES = PATH_RETURN_TYPES
    RETURN_NAMES = PATH_RETURN_NAMES
    OUTPUT_TOOLTIPS = PATH_OUTPUT_TOOLTIPS
    FUNCTION = "concatenate"
    DESCRIPTION = "first, then second (intrinsics and fps must agree where set)."

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "first": (CAMERA_PATH_TYPE, {"tooltip": "Played first."}),
                "second": (CAMERA_PATH_TYPE, {"tooltip": "Played after it."}),
            },
        }

    def concatenate(self, first, second):
        from ..core.paths import concatenate

        with reported_as(self.NODE, "second"):
            return _path_output(concatenate(first, second))


class InSpatioRetimeCameraPath:
    """The same motion faster, slower, eased, or squeezed into a frame count."""

    NODE = "InSpatio Retime Camera Path"
    CATEGORY = CATEGORY
    RETURN_TYPES = PATH_RETURN_TYPES
    RETURN_NAMES = PATH_RETURN_NAMES
    OUTPUT_TOOLTIPS = PATH_OUTPUT_TOOLTIPS
    FUNCTION = "retime"
    DESCRIPTION = "Resample the path on SE(3): speed or an exact frame count, with easing."

    @classmethod
    def INPUT_TYPES(cls):
        from ..core.paths import EASINGS
        from ..core.se3 import INTERPOLATIONS

        return {
            "required": {
                "camera_path": (CAMERA_PATH_TYPE, {"tooltip": "The path to retime."}),
                "speed": (
                    "FLOAT",
                    {
                        "default": 1.0,
                        "min": 0.01,
                        "max": 100.0,
                        "step": 0.01,
                        "tooltip": "2 = twice as fast (half the frames). Ignored when frames is set.",
                    },
                ),
                "frames": (
                    "INT",
                    {
                        "default": 0,
                        "min": 0,
                        "max": MAX_FRAMES,
                        "tooltip": "Exact output frame count; 0 = follow speed.",
                    },
                ),
                "easing": (
                    list(EASINGS),
                    {"default": "linear", "tooltip": "Time curve applied along the path."},
                ),
                "interpolation": (
                    list(INTERPOLATIONS),
                    {
                        "default": "smooth",
                        "tooltip": "'smooth': spline centres and squad rotations; 'linear': straight lines and slerp.",
                    },
                ),
            },
        }

    def retime(self, camera_path, speed, frames, easing, interpolation):
        from ..core.paths import resample, retime

        with reported_as(self.NODE, "frames" if frames else "speed"):
            if frames:
                return _path_output(resample(camera_path, frames, interpolation, easing))
            return _path_output(retime(camera_path, speed, easing, interpolation))


class InSpatioModifyCameraPath:
    """Reverse, ping-pong, loop or hold a path."""

    NODE = "InSpatio Modify Camera Path"
    CATEGORY = CATEGORY
    RETURN_TYPES = PATH_RETURN_TYPES
    RETURN_NAMES = PATH_RETURN_NAMES
    OUTPUT_TOOLTIPS = PATH_OUTPUT_TOOLTIPS
    FUNCTION = "modify"
    DESCRIPTION = "reverse | ping_pong (there and back) | loop (count times) | hold_end / hold_start (count frames)."

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "camera_path": (CAMERA_PATH_TYPE, {"tooltip": "The path to change."}),
                "operation": (
                    list(PATH_OPERATIONS),
                    {
                        "default": "ping_pong",
                        "tooltip": "reverse: play backwards; ping_pong: forward then back; loop: repeat count times; "
                        "hold_end / hold_start: add count still frames at the end / start.",
                    },
                ),
                "count": (
                    "INT",
                    {
                        "default": 2,
                        "min": 0,
                        "max": MAX_FRAMES,
                        "tooltip": "Repeats for loop, extra frames for hold_end / hold_start; unused otherwise.",
                    },
                ),
            },
        }

    def modify(self, camera_path, operation, count):
        from ..core.paths import hold, loop, ping_pong, reverse

        operations = {
            "reverse": lambda: reverse(camera_path),
            "ping_pong": lambda: ping_pong(camera_path),
            "loop": lambda: loop(camera_path, count),
            "hold_end": lambda: hold(camera_path, count, "end"),
            "hold_start": lambda: hold(camera_path, count, "start"),
        }
        if operation not in operations:
            raise cf.NodeInputError(
                self.NODE, "operation", f"is {operation!r}: use one of {', '.join(PATH_OPERATIONS)}"
            )
        with reported_as(self.NODE, "count"):
            return _path_output(operations[operation]())


class InSpatioFollowSourceCamera:
    """Compose a path with the source video's camera motion (official --relative_to_source)."""

    NODE = "InSpatio Follow Source Camera"
    CATEGORY = CATEGORY
    RETURN_TYPES = PATH_RETURN_TYPES
    RETURN_NAMES = PATH_RETURN_NAMES
    OUTPUT_TOOLTIPS = PATH_OUTPUT_TOOLTIPS
    FUNCTION = "compose"
    DESCRIPTION = "Frame t of the path rides along with source camera t: the move is relative to a moving camera."

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "camera_path": (
                    CAMERA_PATH_TYPE,
                    {"tooltip": "A move relative to the first source camera."},
                ),
                "scene": (SCENE_TYPE, {"tooltip": "A video scene with one pose per path frame."}),
            },
        }

    def compose(self, camera_path, scene):
        from ..core.paths import follow_source

        with reported_as(self.NODE, "scene"):
            return _path_output(follow_source(camera_path, scene.world_to_camera))


class InSpatioCameraPathPreview:
    """The path over the scene's point cloud, from the top and from the side."""

    NODE = "InSpatio Camera Path Preview"
    CATEGORY = CATEGORY
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("preview",)
    OUTPUT_TOOLTIPS = ("Top view (x right, z up the page) | side view (z right, y down).",)
    FUNCTION = "preview"
    OUTPUT_NODE = True
    DESCRIPTION = (
        "Point cloud + camera centres, a frustum every few frames, green start and red end."
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "scene": (SCENE_TYPE, {"tooltip": "The scene whose points are drawn."}),
                "camera_path": (CAMERA_PATH_TYPE, {"tooltip": "The path to check."}),
                "panel_size": (
                    "INT",
                    {
                        "default": 512,
                        "min": 64,
                        "max": 4096,
                        "step": 16,
                        "tooltip": "Side of each of the two square panels, in pixels.",
                    },
                ),
                "frustum_every": (
                    "INT",
                    {
                        "default": 0,
                        "min": 0,
                        "max": MAX_FRAMES,
                        "tooltip": "Draw a camera frustum every this many frames; 0 = about eight along the path.",
                    },
                ),
            },
        }

    def preview(self, scene, camera_path, panel_size, frustum_every):
        from ..core.preview import PathPreviewStyle, draw_path_preview

        with reported_as(self.NODE, "panel_size"):
            style = PathPreviewStyle(panel_size=panel_size, frustum_every=frustum_every)
        with reported_as(self.NODE, "camera_path"):
            picture = draw_path_preview(scene, camera_path, style)
        images = picture[None].to(cf.intermediate_device())
        return {"ui": {"images": cf.save_preview_images(images)}, "result": (images,)}


NODE_CLASS_MAPPINGS = {
    "InSpatioCameraPreset": InSpatioCameraPreset,
    "InSpatioCameraKeyframes": InSpatioCameraKeyframes,
    "InSpatioLoadCameraPath": InSpatioLoadCameraPath,
    "InSpatioSaveCameraPath": InSpatioSaveCameraPath,
    "InSpatioConcatCameraPaths": InSpatioConcatCameraPaths,
    "InSpatioRetimeCameraPath": InSpatioRetimeCameraPath,
    "InSpatioModifyCameraPath": InSpatioModifyCameraPath,
    "InSpatioFollowSourceCamera": InSpatioFollowSourceCamera,
    "InSpatioCameraPathPreview": InSpatioCameraPathPreview,
}
NODE_DISPLAY_NAME_MAPPINGS = {name: cls.NODE for name, cls in NODE_CLASS_MAPPINGS.items()}
