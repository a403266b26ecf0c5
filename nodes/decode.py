"""InSpatio Decode: a Wan video LATENT to IMAGE frames, streamed one latent at a time.

Place in the data flow: after the world sampler (or any node giving Wan2.1 video latents). ComfyUI's
own VAE Decode restarts the causal cache on every call, so decoding block by block there is not
equal to one whole decode (COMFYUI.md §6.7); this node decodes with the core's streaming codec, one
latent at a time with a persistent state, as upstream ``decode_stream`` does, so the result does not
depend on how the latents were split. Decoder: ComfyUI's Wan VAE object or TAEHV (Load TAEHV).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import comfy as cf
from .errors import reported_as
from .loaders import CODEC_OR_VAE

if TYPE_CHECKING:
    import torch

CATEGORY = "InSpatio/World"


class InSpatioDecode:
    NODE = "InSpatio Decode"
    CATEGORY = CATEGORY
    DESCRIPTION = (
        "Decodes Wan2.1 video latents one latent at a time with a persistent causal cache."
    )
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("frames",)
    OUTPUT_TOOLTIPS = ("Decoded frames: 1 for the first latent, 4 for each later one.",)
    FUNCTION = "decode"

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                "latent": (
                    "LATENT",
                    {"tooltip": "Wan2.1 video latents [batch, 16, frames, h, w] (raw space)."},
                ),
                "decoder": (
                    CODEC_OR_VAE,
                    {
                        "tooltip": "The Wan VAE (Load VAE) or TAEHV (Load TAEHV, about 20× cheaper).",
                    },
                ),
            }
        }

    def decode(self, latent: dict, decoder: Any) -> tuple[torch.Tensor]:
        import torch
        from einops import rearrange

        from ..core.codec import SPATIAL_STRIDE, from_comfy_latent

        node = self.NODE
        raw = cf.latent_samples(node, "latent", latent)
        codec = cf.streaming_codec(node, "decoder", decoder)
        latent_height, latent_width = raw.shape[-2:]
        memory = cf.vae_working_memory(
            decoder, latent_height * SPATIAL_STRIDE, latent_width * SPATIAL_STRIDE
        )
        device = cf.load_to_device(codec, memory)
        latents = from_comfy_latent(raw.float())
        bar = cf.progress_bar(latents.shape[1])
        frames = []
        with torch.inference_mode(), reported_as(node, "latent"):
            state = codec.module.new_state()
            for index in range(latents.shape[1]):
                cf.check_interrupted()
                frames.append(
                    codec.module.decode(latents[:, index : index + 1].to(device), state)
                    .float()
                    .cpu()
                )
                bar.update()
        # Batch items one after another, as core VAE Decode flattens [B, F, H, W, C] to IMAGE.
        video = rearrange(torch.cat(frames, dim=1), "b f c h w -> (b f) c h w")
        return (cf.frames_to_image(video),)


NODE_CLASSES = (InSpatioDecode,)
NODE_CLASS_MAPPINGS = {node.__name__: node for node in NODE_CLASSES}
NODE_DISPLAY_NAME_MAPPINGS = {node.__name__: node.NODE for node in NODE_CLASSES}
