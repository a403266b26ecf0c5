"""ComfyUI entry point of the InSpatio world-model pack.

ComfyUI imports this folder as a custom-node package; ``pip install -e .`` makes the same folder
importable as ``inspatio_nodes``. Importing it must stay cheap: no torch work, no CUDA calls and no
optional imports happen here (the node modules import the core lazily).
"""

if __package__:
    # Imported as a package (ComfyUI, ``inspatio_nodes``). pytest also imports this file as a bare
    # module when it collects the tests below it; in a clone whose folder name is not a Python
    # identifier there is no parent package, and the relative import could not work.
    from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

    WEB_DIRECTORY = "./web"

    __all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
