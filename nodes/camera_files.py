"""Camera files: Load Camera Path and Save Camera Path.

Data flow: a camera file (v1.5 ``target_tcw.txt`` / ``source_tcw.txt``, the v1 pitch / yaw / r
keyframe file, the JSON wire format, NeRF or WorldFM ``transforms.json``, WorldFM ``meta.json``)
→ **Load** → ``INSPATIO_CAMERA_PATH`` (``nodes/camera.py``) → Render Condition, the samplers, or
**Save** → a file to reuse or to run through the official scripts. The formats are read and
written once, by ``core/path_files.py``; the v1 keyframes are interpolated by
``core/trajectory_v1.py``. Relative file names resolve against ComfyUI's input and output folders
(``nodes/comfy.py`` :func:`input_file` / :func:`output_file`).
"""

from __future__ import annotations

from . import comfy as cf
from .camera import (
    CAMERA_PATH_TYPE,
    CATEGORY,
    MAX_FRAMES,
    SCENE_TYPE,
    CameraPathNode,
    anchored_to_scene,
    path_output,
)
from .errors import check_choice, reported_as, written_as

LOAD_FORMATS = (
    "tcw_text",
    "c2w_text",
    "v1_trajectory",
    "inspatio_json",
    "transforms_json",
    "worldfm_meta",
)
# New formats are appended, so the existing choices, their order and the default stay as they were.
SAVE_FORMATS = (
    "tcw_text",
    "inspatio_json",
    "transforms_json",
    "worldfm_meta",
    "v1_trajectory",
    "c2w_text",
)


class InSpatioLoadCameraPath(CameraPathNode):
    """A camera path from a file: v1.5 Tcw text, the v1 pitch/yaw/r file, JSON, transforms.json, meta.json."""

    NODE = "InSpatio Load Camera Path"
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
                        "tooltip": "Path of the camera file: absolute, or relative to ComfyUI's input "
                        "folder (then its output folder, where Save Camera Path writes).",
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
        return cf.input_file_fingerprint(file)

    def load(self, file, format, frames, v1_style, radius_ratio, rotation_only, scene=None):
        from ..core import path_files
        from ..core.paths import CameraPath

        check_choice(self.NODE, "format", format, LOAD_FORMATS)
        source = cf.input_file(file)
        readers = {
            "tcw_text": lambda: CameraPath(path_files.read_pose_text(source, "world_to_camera")),
            "c2w_text": lambda: CameraPath(path_files.read_pose_text(source, "camera_to_world")),
            "inspatio_json": lambda: path_files.read_path_json(source),
            "transforms_json": lambda: path_files.read_transforms_json(source),
            "worldfm_meta": lambda: path_files.read_worldfm_meta(source),
            "v1_trajectory": lambda: self._v1_path(
                source, frames, v1_style, radius_ratio, rotation_only, scene
            ),
        }
        with reported_as(self.NODE, "file"):
            return path_output(readers[format]())

    def _v1_path(self, file, frames, v1_style, radius_ratio, rotation_only, scene):
        from dataclasses import replace

        from ..core.path_files import read_v1_trajectory
        from ..core.trajectory_v1 import trajectory_path

        frame_count, source, depth = anchored_to_scene(self.NODE, frames, scene)
        keys = read_v1_trajectory(file)
        with reported_as(self.NODE, "v1_style"):
            path = trajectory_path(
                keys,
                frame_count,
                source,
                v1_style,
                foreground_depth=depth,
                radius_ratio=radius_ratio,
                rotation_only=rotation_only,
            )
        # The keyframe lines travel with the path so Save Camera Path can write the file back.
        return replace(path, v1_keyframes=keys)


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
        "tcw_text (v1.5 target_tcw.txt), inspatio_json, transforms_json (NeRF), worldfm_meta, "
        "v1_trajectory (the v1 keyframe file a path was built from) or c2w_text."
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
                        "tooltip": "Where to write: absolute, or relative to ComfyUI's output folder; "
                        "overwritten.",
                    },
                ),
                "format": (
                    list(SAVE_FORMATS),
                    {
                        "default": "inspatio_json",
                        "tooltip": "tcw_text: one row-major world-to-camera per line (v1.5 target_tcw.txt); inspatio_json: "
                        "the wire format; transforms_json: NeRF style (OpenGL axes); worldfm_meta: WorldFM meta.json "
                        "(needs intrinsics on the path); v1_trajectory: the three pitch / yaw / r keyframe lines, only "
                        "for a path built from them (Load Camera Path v1_trajectory, the x_y_circle_cycle / zoom_out_in "
                        "presets) and not changed since; c2w_text: one row-major camera-to-world per line.",
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

        check_choice(self.NODE, "format", format, SAVE_FORMATS)
        if format == "v1_trajectory" and camera_path.v1_keyframes is None:
            raise cf.NodeInputError(
                self.NODE,
                "format",
                "is 'v1_trajectory' but this camera path was not built from v1 keyframe lines: "
                "only a path from Load Camera Path (v1_trajectory) or the x_y_circle_cycle / "
                "zoom_out_in presets, not retimed, modified, concatenated or composed since, can "
                "be saved as a v1 file; save this one as tcw_text or c2w_text",
            )
        writers = {
            "tcw_text": lambda target: path_files.write_pose_text(
                target, camera_path.world_to_camera
            ),
            "c2w_text": lambda target: path_files.write_pose_text(
                target, camera_path.world_to_camera, "camera_to_world"
            ),
            "v1_trajectory": lambda target: path_files.write_v1_trajectory(
                target, camera_path.v1_keyframes
            ),
            "inspatio_json": lambda target: path_files.write_path_json(target, camera_path),
            "transforms_json": lambda target: path_files.write_transforms_json(
                target, camera_path, image_width, image_height
            ),
            "worldfm_meta": lambda target: path_files.write_worldfm_meta(target, camera_path),
        }
        with written_as(self.NODE, "file"):
            target = cf.output_file(file)
            writers[format](target)
        return cf.saved_file_output(target)


NODE_CLASSES = (InSpatioLoadCameraPath, InSpatioSaveCameraPath)
NODE_CLASS_MAPPINGS = {node.__name__: node for node in NODE_CLASSES}
NODE_DISPLAY_NAME_MAPPINGS = {node.__name__: node.NODE for node in NODE_CLASSES}
