"""ComfyUI node classes (classic API). Only ``nodes/comfy.py`` touches ComfyUI, lazily.

Each node module declares its own ``NODE_CLASS_MAPPINGS`` / ``NODE_DISPLAY_NAME_MAPPINGS``; this
package merges them. Node modules import torch and the core inside functions only, so importing
the pack (which ComfyUI does at start-up) stays cheap.
"""

from __future__ import annotations

import importlib

NODE_MODULES = ("loaders", "scene", "camera", "render", "sampler", "decode", "worldfm", "depth")

NODE_CLASS_MAPPINGS: dict[str, type] = {}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {}

for _name in NODE_MODULES:
    try:
        _module = importlib.import_module(f".{_name}", __name__)
    except ModuleNotFoundError as _error:
        if _error.name != f"{__name__}.{_name}":
            raise
        continue
    NODE_CLASS_MAPPINGS.update(_module.NODE_CLASS_MAPPINGS)
    NODE_DISPLAY_NAME_MAPPINGS.update(_module.NODE_DISPLAY_NAME_MAPPINGS)
