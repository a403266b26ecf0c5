"""The only module of the pack that touches ComfyUI; every other node module goes through it.

Node classes (``nodes/*.py``) convert ComfyUI values to core values here, report progress here and
ask here for files and devices. ComfyUI modules (``folder_paths``, ``comfy.utils``,
``comfy.model_management``, ``comfy.model_patcher``, ``comfy.cli_args``) are imported lazily,
inside functions, each where it is used. When one cannot be imported (the pack runs as a plain
library or in tests) the same function falls back to plain behaviour:

=====================  =========================================  ==============================
concern                inside ComfyUI                             outside ComfyUI
=====================  =========================================  ==============================
model files            ``folder_paths`` lists and resolves        explicit file paths
saved / loaded files   relative to the output / input folders     relative to the working dir
progress               ``comfy.utils.ProgressBar`` (+ previews)   tqdm, previews dropped
interruption           ``throw_exception_if_processing_...``      nothing can interrupt
devices and loading    ``ModelPatcher`` + ``load_models_gpu``     CUDA when present, else CPU
UI previews            PNGs in the temp folder                    none
=====================  =========================================  ==============================

The conversions between ComfyUI's data formats (IMAGE, MASK, CONDITIONING, LATENT; COMFYUI.md §6)
and the core's canonical tensors live here too, so each boundary is crossed in one place; that is
why this module is longer than the others: it is the whole host boundary, read as one unit.
Reference: ComfyUI ``folder_paths.py``, ``comfy/utils.py`` (ProgressBar), ``nodes.py``
(PreviewImage), ``comfy/model_management.py``; the recipes are in ``COMFYUI.md`` §4.8, §8.
"""

from __future__ import annotations

import os
import random
import string
import weakref
from dataclasses import dataclass
from importlib import import_module
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from torch import nn

    from ..core.types import (
        Image,
        ImageBatch,
        MaskBatch,
        RawVideoLatents,
        RenderMask,
        TextEmbeddings,
        VideoFrames,
    )
    from ..core.worldfm.sampler import FramesU8, ImageU8

# The pack's own folder (``models/inspatio`` or an ``inspatio:`` entry of extra_model_paths.yaml)
# holds files that are not models of a standard kind (prompt embeddings). The checkpoints sit in
# ComfyUI's standard folders, where users already keep Wan files.
PACK_MODEL_FOLDER = "inspatio"
DIT_FOLDERS = ("diffusion_models",)
TAEHV_FOLDERS = ("vae_approx",)

PREVIEW_PREFIX = "inspatio_temp_"
PREVIEW_SUFFIX_LENGTH = 5  # random suffix, as core PreviewImage does, so runs never collide
PNG_COMPRESS_LEVEL = 1  # core PreviewImage's choice: previews are written often and read once
PREVIEW_FORMAT = "JPEG"  # the binary preview format ComfyUI's progress hook sends
UINT8_MAX = 255.0
MAX_SEED = 0xFFFFFFFFFFFFFFFF  # the range of core KSampler's seed widget

_registered_folders: set[str] = set()
# Streaming codecs built from ComfyUI VAE objects, one per VAE object, dropped with it.
_codecs_by_vae: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class NodeInputError(ValueError):
    """A node input that cannot be used; the message names the node, the input and the fix."""

    def __init__(self, node: str, input_name: str, problem: str):
        super().__init__(f"{node}: input '{input_name}' {problem}")
        self.node = node
        self.input_name = input_name


# --- ComfyUI modules, imported lazily ------------------------------------------------------


def _comfy_module(name: str) -> ModuleType | None:
    """A ComfyUI module, or None when the pack does not run inside ComfyUI."""
    try:
        return import_module(name)
    except ImportError:
        return None


def _folder_paths() -> ModuleType | None:
    """ComfyUI's ``folder_paths`` with the pack's folder registered, or None outside ComfyUI."""
    folder_paths = _comfy_module("folder_paths")
    if folder_paths is not None and PACK_MODEL_FOLDER not in _registered_folders:
        _register_model_folder(folder_paths, PACK_MODEL_FOLDER)
        _registered_folders.add(PACK_MODEL_FOLDER)
    return folder_paths


def _register_model_folder(folder_paths: ModuleType, key: str) -> None:
    """Add ``models/<key>`` to the folder ``key`` without dropping the user's YAML paths.

    extra_model_paths.yaml is applied before packs load; for a key ComfyUI does not know it creates
    an entry with the YAML paths and an EMPTY extension set. Overwriting the entry would drop those
    paths (COMFYUI.md §7.4), so the default folder is appended and the extensions merged.
    """
    default_folder = os.path.join(folder_paths.models_dir, key)
    extensions = set(folder_paths.supported_pt_extensions)
    if key in folder_paths.folder_names_and_paths:
        folders, known_extensions = folder_paths.folder_names_and_paths[key]
        folders = list(folders)
        if default_folder not in folders:
            folders.append(default_folder)
        extensions |= set(known_extensions)
    else:
        folders = [default_folder]
    folder_paths.folder_names_and_paths[key] = (folders, extensions)


# --- model files ---------------------------------------------------------------------------


def model_files(*folders: str) -> list[str]:
    """File names for a combo widget: every file in the given model folders (empty outside ComfyUI)."""
    folder_paths = _folder_paths()
    if folder_paths is None:
        return []
    names = {name for folder in folders for name in folder_paths.get_filename_list(folder)}
    return sorted(names)


def model_path(node: str, input_name: str, name: str, *folders: str) -> Path:
    """The file a combo value names, searched in ``folders`` in order.

    Outside ComfyUI the value is a plain file path (absolute or relative to the working directory).
    """
    path = _find_model_file(name, folders)
    if path is not None:
        return path
    if _folder_paths() is not None:
        raise NodeInputError(
            node,
            input_name,
            f"names {name!r}, which is in none of the model folders {', '.join(folders)}: put the "
            "file into one of them (or map one in extra_model_paths.yaml) and refresh the node list",
        )
    raise NodeInputError(
        node,
        input_name,
        f"names {name!r}, which is not a file: outside ComfyUI give the path of the weight file",
    )


def model_file_fingerprint(name: str, *folders: str) -> str:
    """Size and modification time of a model file, for ``IS_CHANGED``: a file replaced under the
    same name is loaded again. Empty for a missing file (validation reports that one)."""
    path = _find_model_file(name, folders)
    if path is None:
        return ""
    status = path.stat()
    return f"{status.st_size}:{status.st_mtime_ns}"


def _find_model_file(name: str, folders: tuple[str, ...]) -> Path | None:
    folder_paths = _folder_paths()
    if folder_paths is None:
        path = Path(name).expanduser()
        return path if path.is_file() else None
    for folder in folders:
        found = folder_paths.get_full_path(folder, name)
        if found is not None:
            return Path(found)
    return None


# --- files written and read by the save / load nodes ---------------------------------------


def output_directory() -> Path:
    """Where save nodes put relative paths: ComfyUI's output folder, else the working directory."""
    folder_paths = _folder_paths()
    if folder_paths is None:
        return Path.cwd()
    return Path(folder_paths.get_output_directory())


def input_directory() -> Path:
    """Where load nodes look first for relative paths: ComfyUI's input folder, else the working directory."""
    folder_paths = _folder_paths()
    if folder_paths is None:
        return Path.cwd()
    return Path(folder_paths.get_input_directory())


def output_file(name: str) -> Path:
    """The file a save node writes: ``name`` as given when absolute, else in :func:`output_directory`.

    Its folder is created, as ComfyUI's own save nodes create the subfolders of their prefix.
    """
    path = Path(name).expanduser()
    if not path.is_absolute():
        path = output_directory() / path
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def input_file(name: str) -> Path:
    """The file a load node reads: ``name`` as given when absolute; a relative name in the input
    folder, else in the output folder (where the save nodes put it). A file in neither is reported
    at the input folder path by the reader."""
    path = Path(name).expanduser()
    if path.is_absolute():
        return path
    candidates = [input_directory() / path, output_directory() / path]
    return next((candidate for candidate in candidates if candidate.is_file()), candidates[0])


def saved_file_output(path: Path) -> dict[str, Any]:
    """What a save node returns: the written path as its STRING output and as text on the node."""
    return {"ui": {"text": (str(path),)}, "result": (str(path),)}


def input_file_fingerprint(name: str) -> float:
    """Modification time of the file a load node reads, for ``IS_CHANGED`` (as core LoadVideo
    fingerprints its file); NaN for a missing file, which never equals itself, so it is retried."""
    try:
        return input_file(name).stat().st_mtime
    except (OSError, TypeError):
        return float("nan")


# --- progress, interruption and previews ---------------------------------------------------


class ProgressBar:
    """Progress of one node: ComfyUI's bar (with optional image previews) or a tqdm bar."""

    def __init__(self, total: int):
        self.total = total
        self.current = 0
        comfy_utils = _comfy_module("comfy.utils")
        if comfy_utils is not None:
            self._comfy_bar = comfy_utils.ProgressBar(total)
            self._tqdm_bar = None
        else:
            from tqdm.auto import tqdm

            self._comfy_bar = None
            self._tqdm_bar = tqdm(total=total, leave=False)

    def update(self, steps: int = 1, preview: Image | None = None) -> None:
        """Advance by ``steps``; ``preview`` ([H, W, 3] in [0, 1]) is shown on the node in ComfyUI
        (``steps=0`` shows a preview without advancing)."""
        advanced = min(self.current + steps, self.total) - self.current
        self.current += advanced
        if self._comfy_bar is not None:
            self._comfy_bar.update_absolute(self.current, self.total, _progress_preview(preview))
            return
        if advanced:
            self._tqdm_bar.update(advanced)
            if self.current == self.total:
                self._tqdm_bar.close()


def progress_bar(total: int) -> ProgressBar:
    """A progress bar of ``total`` steps for the running node."""
    return ProgressBar(total)


def _progress_preview(preview: Image | None) -> tuple[str, Any, int] | None:
    """The ``(format, PIL image, max size)`` tuple ComfyUI's progress hook sends to the UI."""
    if preview is None:
        return None
    cli_args = _comfy_module("comfy.cli_args")
    max_size = cli_args.args.preview_size
    return (PREVIEW_FORMAT, image_to_pil(preview), max_size)


def check_interrupted() -> None:
    """Raise ComfyUI's interruption exception when the user pressed Cancel (no-op outside ComfyUI)."""
    model_management = _comfy_module("comfy.model_management")
    if model_management is not None:
        model_management.throw_exception_if_processing_interrupted()


def save_preview_images(images: ImageBatch) -> list[dict[str, str]]:
    """Write IMAGE frames as temp PNGs and return their UI records (``{"images": ...}``).

    Follows core PreviewImage: temp folder, type "temp", a random suffix on the prefix. Outside
    ComfyUI there is no UI to show them, so nothing is written.
    """
    folder_paths = _folder_paths()
    if folder_paths is None:
        return []
    suffix = "".join(random.choice(string.ascii_lowercase) for _ in range(PREVIEW_SUFFIX_LENGTH))
    batch, height, width, _ = images.shape
    full_folder, name, counter, subfolder, _ = folder_paths.get_save_image_path(
        PREVIEW_PREFIX + suffix, folder_paths.get_temp_directory(), width, height
    )
    records = []
    for index in range(batch):
        file_name = f"{name}_{counter + index:05}_.png"
        image_to_pil(images[index]).save(
            os.path.join(full_folder, file_name), compress_level=PNG_COMPRESS_LEVEL
        )
        records.append({"filename": file_name, "subfolder": subfolder, "type": "temp"})
    return records


def image_to_pil(image: Image) -> Any:
    """One IMAGE frame ``[H, W, 3]`` in [0, 1] → an 8-bit PIL image (clamped, rounded)."""
    from PIL import Image as PILImage

    return PILImage.fromarray(_unit_to_u8(image.detach().cpu()).numpy())


# --- devices and model management ----------------------------------------------------------


@dataclass(frozen=True)
class ManagedModel:
    """A core module and, inside ComfyUI, the ModelPatcher that lets ComfyUI load and evict it."""

    module: nn.Module
    patcher: Any | None


def manage_model(module: nn.Module) -> ManagedModel:
    """Register a freshly loaded module with ComfyUI's model management (kept on the CPU until used)."""
    model_management = _comfy_module("comfy.model_management")
    if model_management is None:
        return ManagedModel(module, None)
    from comfy.model_patcher import ModelPatcher
    from torch import nn

    # ModelPatcher writes bookkeeping attributes onto the module it manages (``device``,
    # ``model_loaded_weight_memory``, ...), which clash with core modules that expose a read-only
    # ``device`` property. A bare container takes them; moving it moves the core module inside.
    container = nn.Module()
    container.core = module
    patcher = ModelPatcher(
        container,
        load_device=model_management.get_torch_device(),
        offload_device=model_management.unet_offload_device(),
    )
    return ManagedModel(module, patcher)


def load_to_device(
    model: ManagedModel, memory_required: int, *, alongside: tuple[ManagedModel, ...] = ()
) -> torch.device:
    """Put the module (and the ``alongside`` ones) on the compute device; return that device.

    ``memory_required`` (bytes) is what the run needs besides the weights: the KV cache, the text
    K/V and activations. ComfyUI evicts other models (text encoder, VAE) to make room for it; the
    modules used together are loaded in one call so that loading one cannot evict another. Its
    partial low-VRAM loading only works for layers built from ``comfy.ops``, so modules are always
    loaded whole.
    """
    if model.patcher is None:
        device = compute_device()
        for managed in (model, *alongside):
            managed.module.to(device)
        return device
    model_management = _comfy_module("comfy.model_management")
    model_management.load_models_gpu(
        [managed.patcher for managed in (model, *alongside)],
        memory_required=memory_required,
        force_full_load=True,
    )
    return model.patcher.load_device


def compute_device() -> torch.device:
    """Where models run: ComfyUI's torch device, else CUDA when present, else the CPU."""
    import torch

    model_management = _comfy_module("comfy.model_management")
    if model_management is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return model_management.get_torch_device()


def intermediate_device() -> torch.device:
    """Where node outputs live between nodes (ComfyUI keeps them on the CPU unless --gpu-only)."""
    import torch

    model_management = _comfy_module("comfy.model_management")
    if model_management is None:
        return torch.device("cpu")
    return model_management.intermediate_device()


def release_memory() -> None:
    """Return freed cached blocks to the driver after a large free (the KV cache of a finished run)."""
    model_management = _comfy_module("comfy.model_management")
    if model_management is not None:
        model_management.soft_empty_cache()
        return
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# --- VAE objects and streaming codecs -------------------------------------------------------


def vae_codec(node: str, input_name: str, vae: Any) -> ManagedModel:
    """The streaming Wan2.1 codec of a ComfyUI VAE object (from core Load VAE), built once per object.

    ComfyUI's own ``VAE.decode`` starts a fresh causal cache on every call, so decoding block by
    block is not equal to one whole decode (COMFYUI.md §6.7). The core codec keeps its cache in a
    state the caller owns; it is built from the VAE's weights, so users keep the file they have.
    """
    if vae in _codecs_by_vae:
        return _codecs_by_vae[vae]
    first_stage = getattr(vae, "first_stage_model", None)
    if first_stage is None:
        raise NodeInputError(
            node,
            input_name,
            f"is a {type(vae).__name__}, not a VAE: connect Load VAE with wan_2.1_vae.safetensors",
        )
    from ..core.codec import load_codec
    from ..core.wan.checkpoints import CheckpointError

    dtype = getattr(vae, "vae_dtype", None) or next(first_stage.parameters()).dtype
    try:
        codec = load_codec(first_stage.state_dict(), dtype=dtype)
    except CheckpointError as error:
        raise NodeInputError(node, input_name, f"cannot be used: {error}") from error
    managed = manage_model(codec)
    _codecs_by_vae[vae] = managed
    return managed


def streaming_codec(node: str, input_name: str, codec_or_vae: Any) -> ManagedModel:
    """The codec of a ``VAE,INSPATIO_CODEC`` input: a loaded TAEHV as is, a ComfyUI VAE via :func:`vae_codec`."""
    if isinstance(codec_or_vae, ManagedModel):
        return codec_or_vae
    return vae_codec(node, input_name, codec_or_vae)


def vae_working_memory(vae: Any, height: int, width: int) -> int:
    """Bytes ComfyUI budgets for coding ``height``×``width`` frames with this VAE (its own
    estimate, which for Wan2.1 depends on the frame size only); 0 for objects without one."""
    estimate_encode = getattr(vae, "memory_used_encode", None)
    estimate_decode = getattr(vae, "memory_used_decode", None)
    if estimate_encode is None or estimate_decode is None:
        return 0
    from ..core.codec import LATENT_CHANNELS, RGB_CHANNELS, SPATIAL_STRIDE

    pixel_shape = (1, RGB_CHANNELS, 1, height, width)
    latent_shape = (1, LATENT_CHANNELS, 1, height // SPATIAL_STRIDE, width // SPATIAL_STRIDE)
    return int(
        max(
            estimate_encode(pixel_shape, vae.vae_dtype),
            estimate_decode(latent_shape, vae.vae_dtype),
        )
    )


# --- data formats: IMAGE, MASK, CONDITIONING, LATENT ----------------------------------------


def image_batch(node: str, input_name: str, image: ImageBatch) -> ImageBatch:
    """A ComfyUI IMAGE ``[F, H, W, 3]``, checked (an RGBA image or a single frame is refused)."""
    if image.ndim != 4 or image.shape[-1] != 3:
        raise NodeInputError(
            node,
            input_name,
            f"must be an IMAGE batch [frames, height, width, 3], got shape {tuple(image.shape)}: "
            "connect an image or video loader (drop any alpha channel first)",
        )
    return image


def image_to_frames(node: str, input_name: str, image: ImageBatch) -> VideoFrames:
    """ComfyUI IMAGE ``[F, H, W, 3]`` in [0, 1] → core frames ``[F, 3, H, W]`` in [-1, 1]."""
    from einops import rearrange

    pixels = image_batch(node, input_name, image).float()
    return rearrange(pixels, "f h w c -> f c h w") * 2.0 - 1.0


def frames_to_image(frames: VideoFrames) -> ImageBatch:
    """Core frames ``[F, 3, H, W]`` in [-1, 1] → ComfyUI IMAGE ``[F, H, W, 3]`` in [0, 1]."""
    from einops import rearrange

    image = ((frames.float().clamp(-1.0, 1.0) + 1.0) / 2.0).to(intermediate_device())
    return rearrange(image, "f c h w -> f h w c").contiguous()


def image_to_u8(node: str, input_name: str, image: ImageBatch) -> ImageU8:
    """One ComfyUI IMAGE ``[1, H, W, 3]`` in [0, 1] → ``[H, W, 3]`` uint8 (rounded, as PIL saves)."""
    if image.ndim != 4 or image.shape[0] != 1 or image.shape[-1] != 3:
        raise NodeInputError(
            node,
            input_name,
            f"must be one RGB IMAGE [1, height, width, 3], got shape {tuple(image.shape)}: "
            "connect a single image (pick one frame of a batch, drop any alpha channel)",
        )
    return _unit_to_u8(image[0])


def u8_to_image(frames: FramesU8) -> ImageBatch:
    """uint8 frames ``[F, H, W, 3]`` → ComfyUI IMAGE on the intermediate device."""
    return (frames.float() / UINT8_MAX).to(intermediate_device())


def _unit_to_u8(pixels: torch.Tensor) -> torch.Tensor:
    """Values in [0, 1] → uint8 levels, clamped and rounded (what saving a PNG writes)."""
    import torch

    return (pixels.float().clamp(0.0, 1.0) * UINT8_MAX).round().to(torch.uint8)


def mask_to_render_mask(node: str, input_name: str, mask: MaskBatch) -> RenderMask:
    """ComfyUI MASK ``[F, H, W]`` → core validity mask ``[F, 1, H, W]``."""
    from einops import rearrange

    if mask.ndim != 3:
        raise NodeInputError(
            node,
            input_name,
            f"must be a MASK batch [frames, height, width], got shape {tuple(mask.shape)}",
        )
    return rearrange(mask.float(), "f h w -> f 1 h w")


def render_mask_to_mask(render_mask: RenderMask) -> MaskBatch:
    """Core validity mask ``[F, 1, H, W]`` → ComfyUI MASK ``[F, H, W]``."""
    from einops import rearrange

    return rearrange(render_mask.float(), "f 1 h w -> f h w").to(intermediate_device()).contiguous()


def conditioning_to_text_embeddings(
    node: str, input_name: str, conditioning: list, text_len: int, text_dim: int
) -> TextEmbeddings:
    """ComfyUI CONDITIONING → the DiT's text embeddings ``[1, text_len, text_dim]``.

    ComfyUI's umT5 pads the prompt to at least 512 rows with zeros but never truncates; the
    official pipeline pads AND truncates to ``text_len`` (SPEC §7). So longer embeddings are cut and
    shorter ones zero-padded; rows past the prompt are already zero (no attention mask is used).
    """
    import torch

    if not conditioning or not isinstance(conditioning[0], (list, tuple)) or not conditioning[0]:
        raise NodeInputError(
            node,
            input_name,
            "is not a CONDITIONING list: connect the output of CLIPTextEncode (CLIPLoader type 'wan')",
        )
    embeddings = conditioning[0][0]
    if not isinstance(embeddings, torch.Tensor) or embeddings.ndim != 3 or embeddings.shape[0] != 1:
        shape = (
            tuple(embeddings.shape)
            if isinstance(embeddings, torch.Tensor)
            else type(embeddings).__name__
        )
        raise NodeInputError(
            node,
            input_name,
            f"holds {shape} instead of embeddings [1, tokens, {text_dim}]: encode one prompt with "
            "CLIPTextEncode (batched prompts are not supported)",
        )
    if embeddings.shape[-1] != text_dim:
        raise NodeInputError(
            node,
            input_name,
            f"has {embeddings.shape[-1]}-wide embeddings but the model needs {text_dim} (umT5-XXL): "
            "load the text encoder with CLIPLoader, type 'wan'",
        )
    kept = embeddings[:, :text_len].float()
    padding = torch.zeros(
        1, text_len - kept.shape[1], text_dim, dtype=kept.dtype, device=kept.device
    )
    return torch.cat([kept, padding], dim=1)


def latent_output(raw_latents: RawVideoLatents) -> dict[str, Any]:
    """A LATENT dict for the graph: raw VAE space ``[B, 16, G, h, w]``, so core VAEDecode works."""
    return {"samples": raw_latents.to(intermediate_device())}


def latent_samples(node: str, input_name: str, latent: dict[str, Any]) -> RawVideoLatents:
    """The raw ``[B, 16, G, h, w]`` samples of a Wan video LATENT dict."""
    samples = latent.get("samples") if isinstance(latent, dict) else None
    if samples is None or samples.ndim != 5:
        shape = None if samples is None else tuple(samples.shape)
        raise NodeInputError(
            node,
            input_name,
            f"must be a video LATENT with samples [batch, 16, latent frames, h, w], got {shape}: "
            "connect a Wan video latent (an image latent has no frame axis)",
        )
    return samples
