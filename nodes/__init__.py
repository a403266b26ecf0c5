"""ComfyUI node classes (classic API). Only ``nodes/comfy.py`` touches ComfyUI, lazily.

Each node module declares its own ``NODE_CLASS_MAPPINGS`` / ``NODE_DISPLAY_NAME_MAPPINGS``; this
package merges them. Node modules import torch and the core inside functions only, so importing
the pack (which ComfyUI does at start-up) stays cheap.
"""

from __future__ import annotations

from . import (
    camera,
    camera_edit,
    camera_files,
    decode,
    depth,
    loaders,
    render,
    sampler,
    scene,
    scene_time,
    worldfm,
    worldfm_scene,
)

NODE_CLASS_MAPPINGS: dict[str, type] = {}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {}

for _module in (
    loaders,
    scene,
    scene_time,
    depth,
    camera,
    camera_files,
    camera_edit,
    render,
    sampler,
    decode,
    worldfm_scene,
    worldfm,
):
    NODE_CLASS_MAPPINGS.update(_module.NODE_CLASS_MAPPINGS)
    NODE_DISPLAY_NAME_MAPPINGS.update(_module.NODE_DISPLAY_NAME_MAPPINGS)
