"""Loader nodes: the InSpatio-World DiT, the TAEHV codec and precomputed prompt embeddings.

Place in the data flow: these nodes start the model side of a graph. Their outputs use the pack's
own socket types (``INSPATIO_WORLD_MODEL``, ``INSPATIO_CODEC``), so they cannot be wired into core
samplers by mistake. Files are read by the core (``core/wan/checkpoints.py``, ``core/codec.py``);
this module only resolves the file, picks the dtype and registers the module with ComfyUI's model
management through ``nodes/comfy.py``. torch and the core are imported inside the functions, so
importing the pack stays cheap.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from . import comfy as cf
from .errors import check_choice, reported_as

if TYPE_CHECKING:
    import torch

    from ..core.wan.dit import WanDiTConfig

CATEGORY = "InSpatio/World"
WEIGHT_DTYPES = ("auto", "fp32", "bf16", "fp16")
CODEC_OR_VAE = "VAE,INSPATIO_CODEC"  # a decoder socket taking ComfyUI's Wan VAE or a loaded TAEHV
PROMPT_EMBEDDINGS_KEY = "embeddings"  # the tensor name the demo's --prompt-embeds files use


@dataclass(frozen=True)
class WorldModel:
    """What ``INSPATIO_WORLD_MODEL`` carries: the DiT (managed by ComfyUI) and how to run it."""

    managed: cf.ManagedModel
    attention_backend: str

    @property
    def config(self) -> WanDiTConfig:
        return self.managed.module.config

    @property
    def dtype(self) -> torch.dtype:
        return next(self.managed.module.parameters()).dtype


def fp32_on_cpu(gpu_dtype: torch.dtype) -> torch.dtype:
    """``gpu_dtype`` where models run on CUDA, float32 on the CPU: CPUs run half precision slowly,
    and the parity tests compare in fp32."""
    import torch

    return gpu_dtype if cf.compute_device().type == "cuda" else torch.float32


def resolve_weight_dtype(node: str, choice: str, auto: torch.dtype | None = None) -> torch.dtype:
    """The dtype a ``weight_dtype`` widget names; "auto" is ``auto`` on a GPU (by default bf16,
    what the model was trained and released in) and fp32 on the CPU."""
    import torch

    check_choice(node, "weight_dtype", choice, WEIGHT_DTYPES)
    if choice == "auto":
        return fp32_on_cpu(auto or torch.bfloat16)
    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[choice]


class InSpatioWorldModelLoader:
    NODE = "Load InSpatio-World Model"
    CATEGORY = CATEGORY
    DESCRIPTION = "Loads the causal Wan2.1 DiT of InSpatio-World (v1 or v1.5 release file)."
    RETURN_TYPES = ("INSPATIO_WORLD_MODEL",)
    RETURN_NAMES = ("world_model",)
    OUTPUT_TOOLTIPS = ("The world model, for Initialize World Cache.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        from ..core.attention import available_backends

        return {
            "required": {
                "checkpoint": (
                    cf.model_files(*cf.DIT_FOLDERS),
                    {
                        "tooltip": "InSpatio-World-1.3B.safetensors or InSpatio-World-1.5-1.3B.safetensors, "
                        "from models/diffusion_models.",
                    },
                ),
                "weight_dtype": (
                    list(WEIGHT_DTYPES),
                    {
                        "default": "auto",
                        "tooltip": "auto: bf16 on a GPU (as released), fp32 on the CPU.",
                    },
                ),
                "attention": (
                    available_backends(),
                    {
                        "default": "auto",
                        "tooltip": "Attention implementation; auto picks the fastest one installed.",
                    },
                ),
            }
        }

    @classmethod
    def IS_CHANGED(cls, checkpoint: str, **_widgets: object) -> str:
        return cf.model_file_fingerprint(checkpoint, *cf.DIT_FOLDERS)

    def load(self, checkpoint: str, weight_dtype: str, attention: str) -> tuple[WorldModel]:
        from ..core.attention import available_backends
        from ..core.wan.checkpoints import load_dit

        node = self.NODE
        if attention not in available_backends():
            raise cf.NodeInputError(
                node,
                "attention",
                f"is {attention!r}, which is not installed here; choose one of "
                f"{', '.join(available_backends())}",
            )
        path = cf.model_path(node, "checkpoint", checkpoint, *cf.DIT_FOLDERS)
        with reported_as(node, "checkpoint"):
            module = load_dit(path, dtype=resolve_weight_dtype(node, weight_dtype))
        return (WorldModel(cf.manage_model(module), attention),)


class InSpatioTAEHVLoader:
    NODE = "Load TAEHV"
    CATEGORY = CATEGORY
    DESCRIPTION = (
        "Loads TAEHV (taew2_1), a tiny streaming codec for Wan2.1 latents: a fast decoder."
    )
    RETURN_TYPES = ("INSPATIO_CODEC",)
    RETURN_NAMES = ("taehv",)
    OUTPUT_TOOLTIPS = ("A streaming decoder for InSpatio World Sampler and InSpatio Decode.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                "taehv": (
                    cf.model_files(*cf.TAEHV_FOLDERS),
                    {
                        "tooltip": "taew2_1.pth or taew2_1.safetensors, from models/vae_approx.",
                    },
                ),
            }
        }

    @classmethod
    def IS_CHANGED(cls, taehv: str) -> str:
        return cf.model_file_fingerprint(taehv, *cf.TAEHV_FOLDERS)

    def load(self, taehv: str) -> tuple[cf.ManagedModel]:
        import torch

        from ..core.wan.taehv import load_taehv

        node = self.NODE
        path = cf.model_path(node, "taehv", taehv, *cf.TAEHV_FOLDERS)
        with reported_as(node, "taehv"):
            # Upstream --use_tae runs TAEHV in float16.
            codec = load_taehv(path, dtype=fp32_on_cpu(torch.float16))
        return (cf.manage_model(codec),)


class InSpatioPromptEmbeddingsLoader:
    NODE = "Load InSpatio Prompt Embeddings"
    CATEGORY = CATEGORY
    DESCRIPTION = (
        "Loads umT5 prompt embeddings saved to a safetensors file, as CONDITIONING: runs the world "
        "model without loading the 11 GB text encoder."
    )
    RETURN_TYPES = ("CONDITIONING",)
    RETURN_NAMES = ("positive",)
    OUTPUT_TOOLTIPS = ("The prompt, as CLIPTextEncode with a Wan text encoder would give it.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                "embeddings": (
                    cf.model_files(cf.PACK_MODEL_FOLDER),
                    {
                        "tooltip": f"A safetensors file in models/inspatio holding one tensor "
                        f"'{PROMPT_EMBEDDINGS_KEY}' [tokens, 4096] or [1, tokens, 4096].",
                    },
                ),
            }
        }

    @classmethod
    def IS_CHANGED(cls, embeddings: str) -> str:
        return cf.model_file_fingerprint(embeddings, cf.PACK_MODEL_FOLDER)

    def load(self, embeddings: str) -> tuple[list]:
        from ..core.wan.checkpoints import read_weights

        node = self.NODE
        path = cf.model_path(node, "embeddings", embeddings, cf.PACK_MODEL_FOLDER)
        with reported_as(node, "embeddings"):
            tensors, _ = read_weights(path)
        tensor = tensors.get(PROMPT_EMBEDDINGS_KEY)
        if (
            tensor is None
            or tensor.ndim not in (2, 3)
            or (tensor.ndim == 3 and tensor.shape[0] != 1)
        ):
            found = {name: tuple(value.shape) for name, value in tensors.items()}
            raise cf.NodeInputError(
                node,
                "embeddings",
                f"file {path.name} must hold '{PROMPT_EMBEDDINGS_KEY}' as [tokens, width] or "
                f"[1, tokens, width]; it holds {found}",
            )
        prompt = (tensor if tensor.ndim == 3 else tensor[None]).float()
        return ([[prompt, {"pooled_output": None}]],)


NODE_CLASSES = (InSpatioWorldModelLoader, InSpatioTAEHVLoader, InSpatioPromptEmbeddingsLoader)
NODE_CLASS_MAPPINGS = {node.__name__: node for node in NODE_CLASSES}
NODE_DISPLAY_NAME_MAPPINGS = {node.__name__: node.NODE for node in NODE_CLASSES}
