"""ComfyUI entry point of the InSpatio world-model pack.

ComfyUI imports this folder as a custom-node package; ``pip install -e .`` makes the same folder
importable as ``inspatio_nodes``. Importing it must stay cheap: no torch work, no CUDA calls and no
optional imports happen here (the node modules import the core lazily).
"""

from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

WEB_DIRECTORY = "./web"

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
