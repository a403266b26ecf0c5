"""Scene estimation and scene files: DA3 Scene, Save Scene, Load Scene.

Data flow: IMAGE frames → **InSpatio DA3 Scene** (depth, intrinsics and poses from Depth Anything 3,
``core/da3.py``) → ``INSPATIO_SCENE`` → Render Condition, Camera Path Preview, the world sampler.
Depth from any other depth node goes through Scene from Video / Images (``nodes/scene.py``).
**Save Scene** / **Load Scene** (``core/scene_files.py``) keep a prepared scene on disk, so the slow
estimation runs once per source; relative file names are in ComfyUI's output folder (Load Scene
looks in the input folder first), through ``nodes/comfy.py``.

DA3 is an optional dependency, imported only when the DA3 node runs. Its weights are a local
folder in the pack's model folder (``models/inspatio/`` or an ``inspatio:`` entry of
extra_model_paths.yaml): the Hugging Face folder ``depth-anything/DA3NESTED-GIANT-LARGE`` as
published, ``config.json`` beside ``model.safetensors``. Nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path

from . import comfy as cf
from .errors import check_choice, reported_as, written_as
from .scene import CATEGORY, SCENE_TYPE, SceneNode, fps_input, resolution_inputs

SCENE_KINDS = ("video", "images")
DA3_WEIGHTS_FILE = "model.safetensors"  # core.da3.WEIGHTS_FILE; the core is imported lazily
DA3_PATCH = 14  # DA3 processes at multiples of its 14-pixel patch
DEFAULT_PROCESS_RES = 504  # v1.5 process_res
MAX_PROCESS_RES = 2016
# What one DA3 run needs besides its weights, per processed pixel of every frame: a rough bound of
# the DPT head's full-resolution feature maps (fp32, a few alive at once), for ComfyUI to make room.
DA3_BYTES_PER_PROCESSED_PIXEL = 1024

# The loaded network, keyed by its weight file and modification time: reloading a 1.4B model for
# every prompt would dominate the run. One entry only, so a new file replaces the old one.
_loaded_da3: dict[tuple[str, float], cf.ManagedModel] = {}


def _da3_network(node: str, weights: Path) -> cf.ManagedModel:
    from ..core.da3 import load_da3

    key = (str(weights.resolve()), weights.stat().st_mtime)
    if key not in _loaded_da3:
        _loaded_da3.clear()
        with reported_as(node, "model"):
            _loaded_da3[key] = cf.manage_model(load_da3(weights.parent))
    return _loaded_da3[key]


def _da3_weight_files() -> list[str]:
    return [
        name for name in cf.model_files(cf.PACK_MODEL_FOLDER) if Path(name).name == DA3_WEIGHTS_FILE
    ]


class InSpatioDA3Scene(SceneNode):
    """Depth, intrinsics and source poses of every frame from Depth Anything 3, as the official pipeline."""

    NODE = "InSpatio DA3 Scene"
    OUTPUT_TOOLTIPS = (
        "The frames with DA3 depth, intrinsics and first-frame-relative poses, at width x height.",
    )
    FUNCTION = "estimate"
    DESCRIPTION = (
        "Runs DA3 (DA3NESTED-GIANT-LARGE in the official pipeline) on all frames at once, then the official "
        "post-processing: poses relative to frame 0 and Gaussian-smoothed (sigma 2), K and depth resized to "
        "width x height. Needs `pip install --no-deps depth-anything-3==0.1.1 evo` and `pip install omegaconf addict`."
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "frames": (
                    "IMAGE",
                    {"tooltip": "Video frames, or 1 / 4 views of one place (kind = images)."},
                ),
                "model": (
                    _da3_weight_files(),
                    {
                        "tooltip": "DA3 weights: put the Hugging Face folder DA3NESTED-GIANT-LARGE (config.json + "
                        "model.safetensors) into models/inspatio/ and refresh. Outside ComfyUI: the path of "
                        "model.safetensors."
                    },
                ),
                "kind": (
                    list(SCENE_KINDS),
                    {
                        "default": "video",
                        "tooltip": "video: target frame f is rendered from frame f; images: 1 image or 4 views, "
                        "each splatted into every target frame.",
                    },
                ),
                **fps_input("Frame rate of the video (and of the output)."),
                **resolution_inputs(
                    "Model width. Frames, depth and K are resized to width x height without "
                    "cropping, as the official pipeline does: crop the frames first to keep their "
                    "aspect."
                ),
                "process_res": (
                    "INT",
                    {
                        "default": DEFAULT_PROCESS_RES,
                        "min": DA3_PATCH,
                        "max": MAX_PROCESS_RES,
                        "step": DA3_PATCH,
                        "tooltip": "Longest side DA3 works at (504 in the official pipeline); more is slower and "
                        "needs more memory.",
                    },
                ),
            },
        }

    def estimate(self, frames, model, kind, fps, width, height, process_res):
        from ..core.da3 import estimate_scene
        from ..core.da3_input import processing_size

        check_choice(self.NODE, "kind", kind, SCENE_KINDS)
        frames = cf.image_batch(self.NODE, "frames", frames)
        weights = cf.model_path(self.NODE, "model", model, cf.PACK_MODEL_FOLDER)
        managed = _da3_network(self.NODE, weights)
        processed_width, processed_height = processing_size(
            frames.shape[2], frames.shape[1], process_res
        )
        memory = (
            frames.shape[0] * processed_width * processed_height * DA3_BYTES_PER_PROCESSED_PIXEL
        )
        cf.load_to_device(managed, memory)
        with reported_as(self.NODE, "frames"):
            scene = estimate_scene(managed.module, frames, kind, fps, (height, width), process_res)
        return (scene,)


class InSpatioSaveScene:
    """Write a prepared scene to one file, to skip depth estimation in later runs."""

    NODE = "InSpatio Save Scene"
    CATEGORY = CATEGORY
    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("file",)
    OUTPUT_TOOLTIPS = ("The path of the written scene file.",)
    FUNCTION = "save"
    OUTPUT_NODE = True
    DESCRIPTION = (
        "Frames (8-bit), depth (16-bit with the scene's min/max, as v1.5), intrinsics, world-to-camera poses "
        "and fps in one .safetensors file."
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "scene": (
                    SCENE_TYPE,
                    {"tooltip": "The scene to keep (e.g. from InSpatio DA3 Scene)."},
                ),
                "file": (
                    "STRING",
                    {
                        "default": "scenes/scene.safetensors",
                        "tooltip": "Where to write: absolute, or relative to ComfyUI's output folder; "
                        "must end in .safetensors; overwritten.",
                    },
                ),
            },
        }

    def save(self, scene, file):
        from ..core.scene_files import save_scene

        with written_as(self.NODE, "file"):
            written = save_scene(scene, cf.output_file(file))
        return cf.saved_file_output(written)


class InSpatioLoadScene(SceneNode):
    """Read a scene written by InSpatio Save Scene."""

    NODE = "InSpatio Load Scene"
    OUTPUT_TOOLTIPS = ("The stored scene: frames, depth, intrinsics, poses and fps as saved.",)
    FUNCTION = "load"
    DESCRIPTION = "Loads a .safetensors scene file written by InSpatio Save Scene."

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "file": (
                    "STRING",
                    {
                        "default": "scenes/scene.safetensors",
                        "tooltip": "Path of the scene file: absolute, or relative to ComfyUI's input "
                        "folder (then its output folder, where Save Scene writes).",
                    },
                ),
            },
        }

    @classmethod
    def IS_CHANGED(cls, file, **_):
        return cf.input_file_fingerprint(file)

    def load(self, file):
        from ..core.scene_files import load_scene

        with reported_as(self.NODE, "file"):
            return (load_scene(cf.input_file(file)),)


NODE_CLASSES = (InSpatioDA3Scene, InSpatioSaveScene, InSpatioLoadScene)
NODE_CLASS_MAPPINGS = {node.__name__: node for node in NODE_CLASSES}
NODE_DISPLAY_NAME_MAPPINGS = {node.__name__: node.NODE for node in NODE_CLASSES}
