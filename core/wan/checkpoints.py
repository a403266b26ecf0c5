"""The only reader of weight files in the pack.

Every loader (DiT, Wan VAE, TAEHV, WorldFM) reads its file through :func:`read_weights`, which
accepts safetensors and weights-only PyTorch pickles and never executes arbitrary pickle code.
Model-specific key normalisation, config inference and strict validation sit on top of it.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import safe_open
from torch import Tensor

SAFETENSORS_SUFFIXES = (".safetensors", ".sft")
PICKLE_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin")


class CheckpointError(ValueError):
    """A weight file that cannot be used, with a message that says which file and what to do."""


def read_weights(path: str | Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    """All tensors of a weight file and its string metadata (empty for pickles).

    safetensors are read directly; ``.pth``/``.pt``/``.ckpt``/``.bin`` go through
    ``torch.load(weights_only=True)``, so a pickle that needs code execution is refused.
    A pickled dict holding a ``state_dict`` entry is unwrapped.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weight file {path} does not exist: check the path or the model folder")
    if path.stat().st_size == 0:
        raise CheckpointError(f"weight file {path} is empty: the download was probably interrupted")
    if path.suffix.lower() in SAFETENSORS_SUFFIXES:
        return _read_safetensors(path)
    if path.suffix.lower() in PICKLE_SUFFIXES:
        return _read_pickle(path), {}
    # Unknown extension: sniff the safetensors header (8-byte length + JSON), else try a pickle.
    try:
        return _read_safetensors(path)
    except CheckpointError:
        return _read_pickle(path), {}


def _read_safetensors(path: Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            metadata = dict(handle.metadata() or {})
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except (SafetensorError, OSError, json.JSONDecodeError, ValueError, RuntimeError) as error:
        raise CheckpointError(
            f"{path} is not a readable safetensors file ({error}); it may be truncated or not a "
            "checkpoint at all: download it again"
        ) from error
    return tensors, metadata


def _read_pickle(path: Path) -> dict[str, Tensor]:
    try:
        loaded = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise CheckpointError(
            f"{path} is a pickle that is not weights-only (it would execute code to load): refusing "
            f"it. Convert it to safetensors with a trusted tool, or use the official weights "
            f"file. Detail: {str(error).splitlines()[0]}"
        ) from error
    except (RuntimeError, EOFError, OSError, ValueError) as error:
        raise CheckpointError(
            f"{path} is not a readable checkpoint ({str(error).splitlines()[0]}); it may be truncated: "
            "download it again"
        ) from error
    if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, dict) or not all(isinstance(v, Tensor) for v in loaded.values()):
        raise CheckpointError(
            f"{path} does not hold a state dict of tensors (found {type(loaded).__name__}); "
            "it is not a weight file this pack can use"
        )
    return dict(loaded)
