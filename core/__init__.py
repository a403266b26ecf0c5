"""Pure-PyTorch core of the pack. Never imports ComfyUI (``comfy``, ``folder_paths``, ``server``, ``nodes``)."""
