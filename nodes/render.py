"""Render Condition: what the camera will see, before any GPU time is spent on the world model.

Data flow: ``INSPATIO_SCENE`` + ``INSPATIO_CAMERA_PATH`` → **here** → the splat render (IMAGE,
holes black) and its validity mask (MASK), plus an ``INSPATIO_RENDER`` bundle for the world
sampler: the render, the mask and the source video aligned frame by frame with the path.

The core does the work (``core/render.py`` :func:`render_condition`: frame alignment, the official
soft z-buffer splat or v1's point-cloud backend, the v1.5 choice of source views for 4-view image
scenes); the render runs on the compute device and the bundle comes back on ComfyUI's intermediate
device, so no node output holds GPU memory (COMFYUI.md §13.5).
"""

from __future__ import annotations

from . import comfy as cf
from .errors import check_choice, reported_as

CATEGORY = "InSpatio/Render"
SCENE_TYPE = "INSPATIO_SCENE"
CAMERA_PATH_TYPE = "INSPATIO_CAMERA_PATH"
RENDER_TYPE = "INSPATIO_RENDER"


class InSpatioRenderCondition:
    """Scene + camera path → the render and mask the world model will be conditioned on."""

    NODE = "InSpatio Render Condition"
    CATEGORY = CATEGORY
    RETURN_TYPES = ("IMAGE", "MASK", RENDER_TYPE)
    RETURN_NAMES = ("render", "mask", "condition")
    OUTPUT_TOOLTIPS = (
        "The scene seen from the path, one frame per pose; black where nothing is known.",
        "1 where the render is known, 0 in the holes the world model will fill.",
        "Render, mask and aligned source video for Initialize World Cache.",
    )
    FUNCTION = "render"
    DESCRIPTION = (
        "Forward-splat the scene into every camera of the path (official soft z-buffer, or v1's "
        "point-cloud backend)."
    )

    @classmethod
    def INPUT_TYPES(cls):
        from ..core.render import ALIGNMENT_POLICIES, RENDER_SEMANTICS

        return {
            "required": {
                "scene": (SCENE_TYPE, {"tooltip": "From Scene from Video / Scene from Images."}),
                "camera_path": (
                    CAMERA_PATH_TYPE,
                    {"tooltip": "The target cameras, one per output frame."},
                ),
                "frame_alignment": (
                    list(ALIGNMENT_POLICIES),
                    {
                        "default": "exact",
                        "tooltip": "Video scenes only, when the path and the video differ in length: 'exact' = error; "
                        "'shortest' = cut both; 'hold_last' = hold the last video frame (v1.5); "
                        "'bounce' = play the video back and forth (v1).",
                    },
                ),
                "splat_semantics": (
                    list(RENDER_SEMANTICS),
                    {
                        "default": "v1.5",
                        "tooltip": "'v1.5': depth weights normalised per frame (default); 'v1': over the whole video, "
                        "as the v1 release renders; 'v1_ply': v1's point-cloud backend, frame 0 of the video "
                        "drawn as 5-px points with a hard z-buffer into every pose (video scenes only).",
                    },
                ),
            },
        }

    def render(self, scene, camera_path, frame_alignment, splat_semantics):
        from ..core.render import (
            ALIGNMENT_POLICIES,
            RENDER_SEMANTICS,
            check_semantics,
            render_condition,
        )

        check_choice(self.NODE, "frame_alignment", frame_alignment, ALIGNMENT_POLICIES)
        check_choice(self.NODE, "splat_semantics", splat_semantics, RENDER_SEMANTICS)
        with reported_as(self.NODE, "splat_semantics"):
            check_semantics(scene, splat_semantics)
        with reported_as(self.NODE, "camera_path"):
            condition = render_condition(
                scene, camera_path, frame_alignment, splat_semantics, cf.compute_device()
            ).to(cf.intermediate_device())
        return (
            cf.frames_to_image(condition.render),
            cf.render_mask_to_mask(condition.mask),
            condition,
        )


NODE_CLASSES = (InSpatioRenderCondition,)
NODE_CLASS_MAPPINGS = {node.__name__: node for node in NODE_CLASSES}
NODE_DISPLAY_NAME_MAPPINGS = {node.__name__: node.NODE for node in NODE_CLASSES}
