"""Scene re-timing nodes of the v1 release: freeze time (bullet time), the v1 adaptive frame count.

Data flow: a video ``INSPATIO_SCENE`` (``nodes/scene.py``) → **here** → the same scene with its
frames re-indexed in time (frames, depth and poses alike) → Render Condition and the camera nodes,
whose ``frames = 0`` follows the new length. The indices come from ``core/frame_counts.py``
(``freeze_indices``, ``adaptive_frame_indices``), the v1 keyframe angle from
``core/trajectory_v1.py``.
"""

from __future__ import annotations

from . import comfy as cf
from .errors import check_choice, reported_as
from .scene import CATEGORY, SCENE_TYPE, SceneNode

# Keyframes for the v1 adaptive count: the official moves of core/path_presets.py, or a v1 file.
V1_TRAJECTORY_SOURCES = ("x_y_circle_cycle", "zoom_out_in", "file")


class InSpatioFreezeScene(SceneNode):
    """Bullet time: time stops at one frame of the video while the camera keeps moving."""

    NODE = "InSpatio Freeze Scene Time"
    OUTPUT_TOOLTIPS = ("The scene with the frozen frame repeated (frames, depth and poses alike).",)
    FUNCTION = "freeze"
    DESCRIPTION = "v1 freeze: insert copies of one frame after it, so the moment holds while the camera moves."

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "scene": (SCENE_TYPE, {"tooltip": "A video scene."}),
                "freeze_frame": (
                    "INT",
                    {
                        "default": -1,
                        "min": -1,
                        "max": 100000,
                        "tooltip": "The frame to hold; -1 = the middle frame (the official default).",
                    },
                ),
                "freeze_repeat": (
                    "INT",
                    {
                        "default": 48,
                        "min": 0,
                        "max": 100000,
                        "tooltip": "How many extra copies of it to insert (frames of frozen time).",
                    },
                ),
            },
        }

    def freeze(self, scene, freeze_frame, freeze_repeat):
        from ..core.scene import freeze_indices

        if scene.kind != "video":
            raise cf.NodeInputError(
                self.NODE,
                "scene",
                "is an image scene, which has no time to freeze: use Scene from Video",
            )
        if freeze_frame >= scene.num_frames:
            raise cf.NodeInputError(
                self.NODE,
                "freeze_frame",
                f"is {freeze_frame} but the scene has frames 0..{scene.num_frames - 1}",
            )
        with reported_as(self.NODE, "freeze_repeat"):
            indices = freeze_indices(
                scene.num_frames, freeze_repeat, None if freeze_frame < 0 else freeze_frame
            )
            return (scene.select_frames(indices),)


class InSpatioAdaptSceneV1:
    """v1's adaptive frame count: the video bounces or is subsampled to suit the camera move."""

    NODE = "InSpatio Adapt Scene to v1 Trajectory"
    CATEGORY = CATEGORY
    RETURN_TYPES = (SCENE_TYPE, "INT")
    RETURN_NAMES = ("scene", "frames")
    OUTPUT_TOOLTIPS = (
        "The scene re-indexed in time (frames, depth and poses alike).",
        "Its frame count: make the camera path this long (frames = 0 follows the scene).",
    )
    FUNCTION = "adapt"
    DESCRIPTION = (
        "v1 TestDataset: between 0.3 and 0.8 degrees of keyframe travel per frame and at least "
        "121 frames; a short video plays back and forth, a long one is subsampled."
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "scene": (SCENE_TYPE, {"tooltip": "A video scene."}),
                "trajectory": (
                    list(V1_TRAJECTORY_SOURCES),
                    {
                        "default": V1_TRAJECTORY_SOURCES[0],
                        "tooltip": "The v1 keyframes whose total angle sets the frame count: an "
                        "official move, or 'file' to read the v1 three-line file below.",
                    },
                ),
                "file": (
                    "STRING",
                    {
                        "default": "trajectory.txt",
                        "tooltip": "The v1 pitch / yaw / r file, when trajectory is 'file'.",
                    },
                ),
            },
        }

    def adapt(self, scene, trajectory, file):
        from ..core.path_files import read_v1_trajectory
        from ..core.path_presets import PRESETS
        from ..core.scene import adaptive_frame_indices
        from ..core.trajectory_v1 import total_keyframe_angle

        if scene.kind != "video":
            raise cf.NodeInputError(
                self.NODE, "scene", "is an image scene: the adaptive count re-times a video"
            )
        check_choice(self.NODE, "trajectory", trajectory, V1_TRAJECTORY_SOURCES)
        with reported_as(self.NODE, "file"):
            keys = (
                read_v1_trajectory(cf.input_file(file))
                if trajectory == "file"
                else PRESETS[trajectory].official_keyframes
            )
        indices = adaptive_frame_indices(scene.num_frames, total_keyframe_angle(keys))
        return (scene.select_frames(indices), len(indices))


NODE_CLASSES = (InSpatioFreezeScene, InSpatioAdaptSceneV1)
NODE_CLASS_MAPPINGS = {node.__name__: node for node in NODE_CLASSES}
NODE_DISPLAY_NAME_MAPPINGS = {node.__name__: node.NODE for node in NODE_CLASSES}
