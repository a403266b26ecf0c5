"""ComfyUI node classes (classic API). Only ``nodes/comfy.py`` touches ComfyUI, lazily."""

NODE_CLASS_MAPPINGS: dict[str, type] = {}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {}
