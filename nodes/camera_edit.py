"""Camera-path editing and checking: concatenate, retime, modify, follow the source camera, preview.

Data flow: ``INSPATIO_CAMERA_PATH`` from a source node (``nodes/camera.py``,
``nodes/camera_files.py``) → **here** → a new path, or the two-panel preview of a path over the
scene's point cloud. Each node is a declaration over one core call: the path operations of
``core/paths.py``, the preview of ``core/preview.py``.
"""

from __future__ import annotations

from . import comfy as cf
from .camera import (
    CAMERA_PATH_TYPE,
    CATEGORY,
    MAX_FRAMES,
    SCENE_TYPE,
    CameraPathNode,
    path_output,
)
from .errors import check_choice, reported_as

PATH_OPERATIONS = ("reverse", "ping_pong", "loop", "hold_end", "hold_start")


class InSpatioConcatCameraPaths(CameraPathNode):
    """Two paths played one after the other."""

    NODE = "InSpatio Concatenate Camera Paths"
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
            return path_output(concatenate(first, second))


class InSpatioRetimeCameraPath(CameraPathNode):
    """The same motion faster, slower, eased, or squeezed into a frame count."""

    NODE = "InSpatio Retime Camera Path"
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
        from ..core.paths import EASINGS, resample, retime
        from ..core.se3 import INTERPOLATIONS

        check_choice(self.NODE, "easing", easing, list(EASINGS))
        check_choice(self.NODE, "interpolation", interpolation, list(INTERPOLATIONS))
        with reported_as(self.NODE, "frames" if frames else "speed"):
            if frames:
                return path_output(resample(camera_path, frames, interpolation, easing))
            return path_output(retime(camera_path, speed, easing, interpolation))


class InSpatioModifyCameraPath(CameraPathNode):
    """Reverse, ping-pong, loop or hold a path."""

    NODE = "InSpatio Modify Camera Path"
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

        check_choice(self.NODE, "operation", operation, PATH_OPERATIONS)
        operations = {
            "reverse": lambda: reverse(camera_path),
            "ping_pong": lambda: ping_pong(camera_path),
            "loop": lambda: loop(camera_path, count),
            "hold_end": lambda: hold(camera_path, count, "end"),
            "hold_start": lambda: hold(camera_path, count, "start"),
        }
        with reported_as(self.NODE, "count"):
            return path_output(operations[operation]())


class InSpatioFollowSourceCamera(CameraPathNode):
    """Compose a path with the source video's camera motion (official --relative_to_source)."""

    NODE = "InSpatio Follow Source Camera"
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
            return path_output(follow_source(camera_path, scene.world_to_camera))


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


NODE_CLASSES = (
    InSpatioConcatCameraPaths,
    InSpatioRetimeCameraPath,
    InSpatioModifyCameraPath,
    InSpatioFollowSourceCamera,
    InSpatioCameraPathPreview,
)
NODE_CLASS_MAPPINGS = {node.__name__: node for node in NODE_CLASSES}
NODE_DISPLAY_NAME_MAPPINGS = {node.__name__: node.NODE for node in NODE_CLASSES}
