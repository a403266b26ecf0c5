"""The only reader of weight files in the pack, and the loader of the InSpatio-World DiT.

Every loader (DiT, Wan VAE, TAEHV, WorldFM) reads its file through :func:`read_weights`, which
accepts safetensors and weights-only PyTorch pickles and never executes arbitrary pickle code.
Model-specific key normalisation, config inference and strict validation sit on top of it.
The DiT is imported inside the DiT functions only: reading a VAE, TAEHV or WorldFM file must not
pull in the DiT, its attention backends and the kernels.

The DiT part (:func:`load_dit`) takes the released ``InSpatio-World-1.3B.safetensors`` (v1) and
``InSpatio-World-1.5-1.3B.safetensors`` (v1.5) as published: keys with the ``model.`` wrapper
prefix (``inference_causal_test.py`` / v1.5 ``inference.py``), or the ``model.diffusion_model.`` and
``_fsdp_wrapped_module.`` variants of training dumps, or none; also the third-party port's
re-packaged ``dit/model.safetensors`` (``blanchon/inspatio-world-v1.5``: fused q/k/v and renamed
modules, mapped back here to the released names). The config is read from the
safetensors metadata when present (tiny test models, :func:`save_dit`), else inferred from tensor
shapes with the release's head dim of 128. Wrong files (base Wan2.1, image-to-video Wan, a VAE, a
text encoder) are recognised and named in the error.
"""

from __future__ import annotations

import json
import pickle
import re
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors import SafetensorError
from safetensors.torch import safe_open, save_file
from torch import Tensor
from torch.serialization import MAGIC_NUMBER

if TYPE_CHECKING:
    from .dit import CausalWanDiT, WanDiTConfig

SAFETENSORS_SUFFIXES = (".safetensors", ".sft")
PICKLE_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin")
# torch's message when its weights-only unpickler refuses what the pickle asks for (torch 2.6+).
WEIGHTS_ONLY_REFUSAL = "Weights only load failed"
# A legacy (pre-zip) torch.save file starts with its magic number pickled by protocol 2: the
# LONG1 opcode and the number's bytes follow the 2-byte protocol header.
LEGACY_MAGIC = pickle.dumps(MAGIC_NUMBER, protocol=2)[2:-1]
ZIP_MAGIC = b"PK\x03\x04"  # local file header: present even when the archive is truncated
TORCH_HEADER_BYTES = 32
REFUSED_GLOBAL = re.compile(r"GLOBAL (\S+)")


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
        raise CheckpointError(
            f"weight file {path} does not exist: check the path or the model folder"
        )
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


def _is_torch_save_file(path: Path) -> bool:
    """Whether the file starts as ``torch.save`` writes: a zip archive, or the legacy format.

    Anything else (an HTML error page, JSON, random bytes) fails in torch's weights-only unpickler
    with the same "Weights only load failed" as a pickle that really asks for code.
    """
    with path.open("rb") as handle:
        header = handle.read(TORCH_HEADER_BYTES)
    return header.startswith(ZIP_MAGIC) or LEGACY_MAGIC in header


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _unreadable(path: Path, detail: str) -> CheckpointError:
    return CheckpointError(
        f"{path} is not a readable checkpoint ({detail}); it may be truncated or not a "
        "checkpoint at all: download it again"
    )


def _read_pickle(path: Path) -> dict[str, Tensor]:
    if not _is_torch_save_file(path):
        raise _unreadable(path, "it is neither a zip archive nor a legacy PyTorch file")
    try:
        loaded = torch.load(str(path), map_location="cpu", weights_only=True)
    # Damaged data makes the unpickler fail anywhere: KeyError, IndexError, struct.error,
    # UnicodeDecodeError, EOFError, RuntimeError from the zip reader... all mean "unreadable".
    except Exception as error:
        if isinstance(error, pickle.UnpicklingError) and WEIGHTS_ONLY_REFUSAL in str(error):
            refused = REFUSED_GLOBAL.search(str(error))
            detail = f"it refers to {refused.group(1)}" if refused else _first_line(error)
            raise CheckpointError(
                f"{path} is a pickle that is not weights-only (it would execute code to load: "
                f"{detail}): refusing it. Convert it to safetensors with a trusted tool, or use "
                "the official weights file"
            ) from error
        raise _unreadable(path, _first_line(error)) from error
    if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, dict) or not all(isinstance(v, Tensor) for v in loaded.values()):
        raise CheckpointError(
            f"{path} does not hold a state dict of tensors (found {type(loaded).__name__}); "
            "it is not a weight file this pack can use"
        )
    return dict(loaded)


# --- the InSpatio-World DiT ----------------------------------------------------------------------

CONFIG_METADATA_KEY = "inspatio_config"
KEY_PREFIXES = ("model.diffusion_model.", "diffusion_model.", "model.")  # longest first
FSDP_WRAPPER = "_fsdp_wrapped_module."
LOADABLE_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
BASE_WAN_INPUT_CHANNELS = 16
KEYS_SHOWN_PER_GROUP = 3
LAYER_INDEX = re.compile(r"\.\d+\.")
# Tensors whose shapes give the config when the file has no metadata (patch_embedding is
# checked earlier, by the recognition of wrong files).
CONFIG_SHAPE_KEYS = ("blocks.0.ffn.0.weight", "time_embedding.0.weight", "text_embedding.0.weight")

# The port (julien-blanchon/inspatio-world-v1.5, scripts/convert_checkpoints.py) concatenates these
# projections along the output dim and renames the rest; released names on the right.
PORT_FUSED = {
    ".self_attention.qkv.": (".self_attn.q.", ".self_attn.k.", ".self_attn.v."),
    ".cross_attention.kv.": (".cross_attn.k.", ".cross_attn.v."),
}
PORT_RENAMED = {
    ".self_attention.output.": ".self_attn.o.",
    ".self_attention.query_norm.": ".self_attn.norm_q.",
    ".self_attention.key_norm.": ".self_attn.norm_k.",
    ".cross_attention_norm.": ".norm3.",
    ".cross_attention.query.": ".cross_attn.q.",
    ".cross_attention.output.": ".cross_attn.o.",
    ".cross_attention.query_norm.": ".cross_attn.norm_q.",
    ".cross_attention.key_norm.": ".cross_attn.norm_k.",
    ".feed_forward.": ".ffn.",
}
PORT_RENAMED_PREFIXES = {"time_modulation.": "time_projection.", "head.linear.": "head.head."}


def normalise_dit_keys(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Keys as the model names them: FSDP wrappers removed, one wrapper prefix stripped."""
    normalised: dict[str, Tensor] = {}
    for key, tensor in state.items():
        name = key.replace(FSDP_WRAPPER, "")
        name = next((name.removeprefix(p) for p in KEY_PREFIXES if name.startswith(p)), name)
        if name in normalised:
            raise CheckpointError(
                f"checkpoint holds {name!r} twice (as {key!r} and another prefix): it is not a single model"
            )
        normalised[name] = tensor
    if any(fused in key for key in normalised for fused in PORT_FUSED):
        return _released_names_of_port_layout(normalised)
    return normalised


def _released_names_of_port_layout(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Split the port's fused projections and give every key its released name back."""
    released: dict[str, Tensor] = {}
    for key, tensor in state.items():
        fused = next((part for part in PORT_FUSED if part in key), None)
        if fused is not None:
            names = PORT_FUSED[fused]
            for name, piece in zip(names, tensor.chunk(len(names), dim=0)):
                released[key.replace(fused, name)] = piece
            continue
        for port_part, released_part in PORT_RENAMED.items():
            key = key.replace(port_part, released_part)
        for port_prefix, released_prefix in PORT_RENAMED_PREFIXES.items():
            if key.startswith(port_prefix):
                key = released_prefix + key.removeprefix(port_prefix)
        released[key] = tensor
    return released


def infer_dit_config(
    state: dict[str, Tensor], metadata: dict[str, str], path: Path
) -> WanDiTConfig:
    """The config stored in the metadata, else the one the tensor shapes imply (normalised keys)."""
    from .dit import RELEASED_HEAD_DIM, WanDiTConfig

    if CONFIG_METADATA_KEY in metadata:
        try:
            return WanDiTConfig.from_json(metadata[CONFIG_METADATA_KEY])
        except (ValueError, TypeError, KeyError) as error:
            raise CheckpointError(
                f"{path}: the {CONFIG_METADATA_KEY!r} metadata is not a valid DiT config ({error})"
            ) from error
    missing = set(CONFIG_SHAPE_KEYS) - set(state)
    if missing:
        raise CheckpointError(
            f"{path} lacks the tensors the DiT config is read from: {len(missing)} missing keys: "
            f"{_grouped(missing)}. The file may be truncated or another model: use the released "
            "InSpatio-World file, or a file saved with save_dit"
        )
    dim, _, *patch_size = state["patch_embedding.weight"].shape
    if dim % RELEASED_HEAD_DIM:
        raise CheckpointError(
            f"{path}: model width {dim} is not a multiple of the released head dim {RELEASED_HEAD_DIM}, "
            f"so the number of heads cannot be inferred: store the config in the safetensors metadata "
            f"under {CONFIG_METADATA_KEY!r} (see save_dit)"
        )
    layers = {int(key.split(".")[1]) for key in state if key.startswith("blocks.")}
    # text_len shows in no weight shape: it keeps the config's default, the release's umT5 length.
    return WanDiTConfig(
        dim=dim,
        ffn_dim=state["blocks.0.ffn.0.weight"].shape[0],
        freq_dim=state["time_embedding.0.weight"].shape[1],
        num_heads=dim // RELEASED_HEAD_DIM,
        num_layers=len(layers),
        text_dim=state["text_embedding.0.weight"].shape[1],
        patch_size=tuple(patch_size),
    )


def _refuse_other_models(state: dict[str, Tensor], path: Path) -> None:
    """Name the kind of file when a common wrong file is given as the DiT."""
    from .dit import MODEL_INPUT_CHANNELS

    def count(prefix: str) -> int:
        return sum(key.startswith(prefix) for key in state)

    text_encoder_keys = count("token_embedding.") + count("shared.") + count("encoder.block.")
    if text_encoder_keys:
        raise CheckpointError(
            f"{path} is a text encoder (umT5/T5: {text_encoder_keys} keys like 'token_embedding' or "
            "'encoder.block.*'), not an InSpatio-World DiT: put it in text_encoders and pick the DiT "
            "file (InSpatio-World-1.3B.safetensors) here"
        )
    vae_keys = count("encoder.") + count("decoder.") + count("conv1.") + count("conv2.")
    if vae_keys and "patch_embedding.weight" not in state:
        raise CheckpointError(
            f"{path} is a VAE ({vae_keys} keys under 'encoder.'/'decoder.'/'conv1'), not an "
            "InSpatio-World DiT: load it as the VAE or TAEHV and pick the DiT file here"
        )
    image_keys = count("img_emb.") + sum("k_img" in key or "v_img" in key for key in state)
    if image_keys:
        raise CheckpointError(
            f"{path} has {image_keys} keys like 'img_emb.*' / 'cross_attn.k_img': this is an "
            "image-to-video Wan model, not an InSpatio-World checkpoint: download "
            "InSpatio-World-1.3B.safetensors (or the v1.5 file)"
        )
    if "patch_embedding.weight" not in state:
        raise CheckpointError(
            f"{path} has no 'patch_embedding.weight' (first keys: {sorted(state)[:KEYS_SHOWN_PER_GROUP]}): "
            "it is not a Wan DiT checkpoint"
        )
    in_channels = state["patch_embedding.weight"].shape[1]
    if in_channels == BASE_WAN_INPUT_CHANNELS:
        raise CheckpointError(
            f"{path} is a base Wan2.1 text-to-video DiT (patch_embedding takes {in_channels} channels), "
            f"not InSpatio-World ({MODEL_INPUT_CHANNELS} channels: noisy, mask, render): download "
            "InSpatio-World-1.3B.safetensors"
        )
    if in_channels != MODEL_INPUT_CHANNELS:
        raise CheckpointError(
            f"{path}: patch_embedding takes {in_channels} channels; an InSpatio-World DiT takes "
            f"{MODEL_INPUT_CHANNELS}: this is another model"
        )


def _grouped(keys: set[str]) -> str:
    """``blocks.*.ffn.0.weight (30), head.head.bias (1)`` with layer indices folded."""
    groups = Counter(LAYER_INDEX.sub(".*.", key) for key in keys)
    return ", ".join(f"{pattern} ({n})" for pattern, n in sorted(groups.items()))


def load_dit(
    path: str | Path,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    config: WanDiTConfig | None = None,
) -> CausalWanDiT:
    """The InSpatio-World DiT of a weight file, loaded strictly, in ``dtype`` on ``device``, in eval mode.

    ``config`` overrides the stored or inferred one (for files of other head dims without metadata).
    """
    from .dit import CausalWanDiT

    path = Path(path)
    if dtype not in LOADABLE_DTYPES:
        raise CheckpointError(f"DiT dtype {dtype} is not supported: use one of {LOADABLE_DTYPES}")
    tensors, metadata = read_weights(path)
    if not tensors:
        raise CheckpointError(f"{path} holds no tensors: it is not a checkpoint")
    state = normalise_dit_keys(tensors)
    del tensors  # the file's tensors now live only in ``state``, converted one by one below
    _refuse_other_models(state, path)
    config = config or infer_dit_config(state, metadata, path)
    with torch.device("meta"):
        model = CausalWanDiT(config)
    expected = set(model.state_dict())
    missing, unexpected = expected - set(state), set(state) - expected
    if missing or unexpected:
        problems = []
        if missing:
            problems.append(f"{len(missing)} missing keys: {_grouped(missing)}")
        if unexpected:
            problems.append(f"{len(unexpected)} unexpected keys: {_grouped(unexpected)}")
        raise CheckpointError(
            f"{path} does not match an InSpatio-World DiT with {config}: {'; '.join(problems)}. "
            "Use the released InSpatio-World file, or a file saved with save_dit"
        )
    # Converting in place keeps the peak near one copy of the file (5.7 GB for the fp32 1.3B).
    for key in state:
        state[key] = state[key].to(dtype)
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as error:
        raise CheckpointError(
            f"{path}: tensor shapes do not match the inferred config {config} ({error}); the file "
            f"may be damaged, or its {CONFIG_METADATA_KEY!r} metadata wrong"
        ) from error
    return model.to(device).eval().requires_grad_(False)


def save_dit(model: CausalWanDiT, path: str | Path) -> None:
    """Write ``model`` as the release does (``model.`` prefix), with its config in the metadata."""
    state = {
        f"model.{key}": tensor.detach().contiguous().cpu()
        for key, tensor in model.state_dict().items()
    }
    save_file(state, str(path), metadata={CONFIG_METADATA_KEY: model.config.to_json()})
