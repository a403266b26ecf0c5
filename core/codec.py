"""The latent-codec interface shared by the Wan2.1 VAE and TAEHV, and its boundary conversions.

Place in the data flow: the source video, the splat render and the decoded output cross this
boundary. Pixels are ``[B, F, 3, H, W]`` in [-1, 1]; latents are ``[B, G, 16, h, w]`` in the
normalised Wan2.1 space the DiT was trained in (``(mu - mean) / std``). Which codec runs is a
weight choice (:func:`load_codec` looks at the file), never a branch in the sampler: both
implement :class:`LatentCodec` with an explicit, caller-owned stream state, so a video coded
chunk by chunk equals the video coded whole.

Frame layout (both codecs): latent 0 stands for frame 0 and latent g >= 1 for frames 4g-3..4g,
so F = 1 + 4(G - 1). A stream therefore starts with 1 + 4k frames and continues with multiples
of 4; any other count is refused with the fix (pad or trim with a frame-count policy of
``core/frame_counts.py``) instead of dropping frames silently as upstream ``WanVAE_.encode``
does. Frames outside [-1, 1] (a [0, 1] or [0, 255] image passed unconverted) and a stream whose
height×width changes from one chunk to the next are refused too, naming what to change.

ComfyUI's LATENT holds *raw* VAE latents ``[B, 16, G, h, w]``; :func:`to_comfy_latent` and
:func:`from_comfy_latent` match ``comfy.latent_formats.Wan21.process_out`` / ``process_in``
(``mean + x·std`` and ``(x - mean) / std``).

This module is imported by ``core/wan/vae.py`` and ``core/wan/taehv.py``; it imports them only
inside :func:`load_codec`, which picks one by the weights.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Protocol

import torch
from einops import rearrange
from torch import Tensor, nn

from .types import RawVideoLatents, VideoLatents
from .wan.checkpoints import CheckpointError, read_weights

FrameBatch = Annotated[Tensor, "B F 3 H W float in [-1, 1]"]
StateDict = Mapping[str, Tensor]
FrameSize = tuple[int, int]  # (height, width) of a stream's frames or latents

LATENT_CHANNELS = 16
FRAMES_PER_LATENT = 4  # pixel frames per latent after the first (temporal stride)
SPATIAL_STRIDE = 8  # pixels per latent cell along H and W
RGB_CHANNELS = 3
# Slack around [-1, 1] for rounding (bytes / 127.5 - 1, resampling); a [0, 255] or 1.5 is refused.
PIXEL_RANGE_TOLERANCE = 1e-3

# Wan2.1 latent normalisation tables (wan/modules/vae.py, WanVAE; ComfyUI latent_formats.Wan21).
WAN21_LATENT_MEAN = (
    -0.7571,
    -0.7089,
    -0.9113,
    0.1075,
    -0.1745,
    0.9653,
    -0.1517,
    1.5508,
    0.4134,
    -0.0715,
    0.5517,
    -0.3632,
    -0.1922,
    -0.9497,
    0.2503,
    -0.2921,
)
WAN21_LATENT_STD = (
    2.8184,
    1.4541,
    2.3275,
    2.6558,
    1.2196,
    1.7708,
    2.6052,
    2.0743,
    3.2687,
    2.1526,
    2.8652,
    1.5579,
    1.6382,
    1.1253,
    2.8251,
    1.9160,
)

# Prefixes that wrappers put in front of a codec's own keys (ComfyUI, checkpoint bundles).
KEY_PREFIXES = ("first_stage_model.", "vae.", "model.", "module.")


class CodecInputError(ValueError):
    """Frames or latents a codec cannot take; the message names the input and the fix."""


class LatentCodec(Protocol):
    """What the sampler needs from a codec; the Wan2.1 VAE and TAEHV both provide it."""

    def new_state(self) -> object:
        """An empty stream state; one per video stream, owned and passed back by the caller."""
        ...

    def encode(self, frames: FrameBatch, state: object) -> VideoLatents:
        """The next latents of the stream: 1 + 4k frames first, then multiples of 4."""
        ...

    def decode(self, latents: VideoLatents, state: object) -> FrameBatch:
        """The next frames of the stream: 1 for the first latent, 4 for each later one."""
        ...


def check_frames(frames: FrameBatch, first_chunk: bool, codec: str) -> None:
    """Refuse frames that are not ``[B, F, 3, H, W]``, finite, with H, W multiples of 8 and a valid F."""
    if frames.ndim != 5 or frames.shape[2] != RGB_CHANNELS:
        raise CodecInputError(
            f"{codec} frames have shape {tuple(frames.shape)}; expected [batch, frames, 3, height, "
            "width] in [-1, 1] (convert a ComfyUI IMAGE [frames, H, W, 3] in [0, 1] first)"
        )
    height, width = frames.shape[-2:]
    if height % SPATIAL_STRIDE or width % SPATIAL_STRIDE:
        raise CodecInputError(
            f"{codec} frames are {height}x{width}; height and width must be multiples of "
            f"{SPATIAL_STRIDE}: resize or crop them (e.g. to 480x832)"
        )
    count = frames.shape[1]
    if first_chunk and count % FRAMES_PER_LATENT != 1:
        raise CodecInputError(
            f"{codec} stream starts with {count} frames; the first chunk must hold 1 + 4k frames "
            f"(1, 5, 9, ...): pad or trim the video to {_nearest_valid(count)} frames"
        )
    if not first_chunk and (count == 0 or count % FRAMES_PER_LATENT):
        raise CodecInputError(
            f"{codec} stream continues with {count} frames; after the first chunk every chunk must "
            f"hold a positive multiple of {FRAMES_PER_LATENT} frames"
        )
    _check_finite(frames, f"{codec} frames")
    low, high = (float(bound) for bound in frames.float().aminmax())
    if low < -1 - PIXEL_RANGE_TOLERANCE or high > 1 + PIXEL_RANGE_TOLERANCE:
        raise CodecInputError(
            f"{codec} frames range over [{low:.4g}, {high:.4g}]; they must be in [-1, 1]: map a "
            "ComfyUI IMAGE in [0, 1] with x * 2 - 1, bytes in [0, 255] with x / 127.5 - 1"
        )


def check_stream_size(
    expected: FrameSize | None, chunk: Tensor, what: str, codec: str
) -> FrameSize:
    """The height×width of a stream's chunk, refused when it differs from its earlier chunks.

    The codecs' causal memories hold the earlier chunks' features, whose size a new chunk must
    match; ``expected`` is None for a stream's first chunk.
    """
    height, width = chunk.shape[-2:]
    if expected is not None and (height, width) != expected:
        raise CodecInputError(
            f"{codec} {what} stream started at {expected[0]}x{expected[1]} but this chunk is "
            f"{height}x{width}: a stream keeps one size; resize the chunk to {expected[0]}x"
            f"{expected[1]} or start a new stream (new_state()) for the new size"
        )
    return (height, width)


def check_latents(latents: VideoLatents, codec: str) -> None:
    """Refuse latents that are not finite ``[B, G, 16, h, w]``."""
    if latents.ndim != 5 or latents.shape[2] != LATENT_CHANNELS or latents.shape[1] == 0:
        raise CodecInputError(
            f"{codec} latents have shape {tuple(latents.shape)}; expected [batch, latent frames, "
            f"{LATENT_CHANNELS}, h, w] (a ComfyUI LATENT is [batch, 16, frames, h, w]: use "
            "from_comfy_latent)"
        )
    _check_finite(latents, f"{codec} latents")


def _check_finite(tensor: Tensor, name: str) -> None:
    if not torch.isfinite(tensor).all():
        raise CodecInputError(
            f"{name} contain NaN or infinite values: check the node that produced them"
        )


def _nearest_valid(count: int) -> str:
    below = count - (count - 1) % FRAMES_PER_LATENT
    return f"{below} or {below + FRAMES_PER_LATENT}" if below >= 1 else "1"


def to_comfy_latent(
    latents: VideoLatents,
    mean: tuple[float, ...] = WAN21_LATENT_MEAN,
    std: tuple[float, ...] = WAN21_LATENT_STD,
) -> RawVideoLatents:
    """Normalised ``[B, G, C, h, w]`` to ComfyUI's raw ``[B, C, G, h, w]`` (``Wan21.process_out``)."""
    raw = latents * _per_channel(std, latents) + _per_channel(mean, latents)
    return rearrange(raw, "b g c h w -> b c g h w")


def from_comfy_latent(
    raw_latents: RawVideoLatents,
    mean: tuple[float, ...] = WAN21_LATENT_MEAN,
    std: tuple[float, ...] = WAN21_LATENT_STD,
) -> VideoLatents:
    """ComfyUI's raw ``[B, C, G, h, w]`` to normalised ``[B, G, C, h, w]`` (``Wan21.process_in``)."""
    latents = rearrange(raw_latents, "b c g h w -> b g c h w")
    return (latents - _per_channel(mean, latents)) / _per_channel(std, latents)


def _per_channel(values: tuple[float, ...], like: Tensor) -> Tensor:
    table = torch.tensor(values, dtype=like.dtype, device=like.device)
    return rearrange(table, "c -> c 1 1")


def source_name(source: str | Path | StateDict) -> str:
    """How an error message refers to a weight source: its path, or "the state dict"."""
    return str(source) if isinstance(source, (str, Path)) else "the state dict"


def weights_of(source: str | Path | StateDict) -> dict[str, Tensor]:
    """The tensors of a weight file (read by ``read_weights``) or of an in-memory state dict."""
    if isinstance(source, (str, Path)):
        tensors, _ = read_weights(source)
        return tensors
    return dict(source)


def strip_prefix(weights: StateDict, expected_key: str) -> dict[str, Tensor]:
    """The state dict without the one wrapper prefix under which ``expected_key`` appears."""
    for prefix in ("", *KEY_PREFIXES):
        if prefix + expected_key in weights:
            return {
                key[len(prefix) :]: value
                for key, value in weights.items()
                if key.startswith(prefix)
            }
    return dict(weights)


def load_exact_weights(
    model: nn.Module, weights: StateDict, source: str | Path | StateDict, expected: str, fix: str
) -> None:
    """Load ``weights`` into ``model`` strictly; refuse missing or extra keys with the fix.

    ``expected`` names the architecture (``"taew2_1"``) and ``fix`` says what to load instead.
    Tensors of the wrong shape surface as :class:`RuntimeError` for the caller to explain.
    """
    wanted = set(model.state_dict())
    missing, unexpected = sorted(wanted - set(weights)), sorted(set(weights) - wanted)
    if missing or unexpected:
        raise CheckpointError(
            f"{source_name(source)} does not match {expected}: {len(missing)} missing keys "
            f"(e.g. {missing[:3]}) and {len(unexpected)} unexpected keys (e.g. {unexpected[:3]}); "
            f"{fix}"
        )
    model.load_state_dict(weights, strict=True)


def describe_weights(weights: StateDict) -> str:
    """What a state dict looks like, for error messages: the model family its keys belong to."""
    keys = list(weights)

    def has(fragment: str) -> bool:
        return any(fragment in key for key in keys)

    if has("blocks.0.self_attn") or has("patch_embedding"):
        return "a Wan DiT (diffusion model) checkpoint: load it as the world model, not as a codec"
    if has("encoder.block.") or has("token_embedding"):
        return "a text encoder (umT5/T5): put it in text_encoders and load it with CLIPLoader"
    if has("decoder.22.weight") or has("taehv_decoder."):
        return "a TAEHV tiny autoencoder (taew2_1): load it as the TAEHV codec"
    if has("decoder.middle.0.residual.0.gamma"):
        z_channels = next(
            (w.shape[0] for k, w in weights.items() if k.endswith("conv2.weight")), None
        )
        if z_channels is not None and z_channels != LATENT_CHANNELS:
            return (
                f"a Wan VAE with {z_channels} latent channels (Wan2.2): InSpatio-World needs the "
                "Wan2.1 VAE (16 channels, wan_2.1_vae.safetensors)"
            )
        return "a Wan2.1 VAE: load it as the Wan VAE codec"
    if has("up_blocks") and has("post_quant_conv"):
        return (
            "a diffusers AutoencoderKL(Wan) folder layout: use the single-file Wan2.1_VAE.pth or "
            "ComfyUI's wan_2.1_vae.safetensors"
        )
    if has("decoder.conv_in") or has("decoder.up.0"):
        return "an image VAE (Stable Diffusion / SDXL / Flux style): it has no video time axis"
    sample = ", ".join(sorted(keys)[:3])
    return f"an unrecognised weight file ({len(keys)} tensors, e.g. {sample})"


def load_codec(source: str | Path | StateDict, dtype: torch.dtype = torch.float32) -> LatentCodec:
    """The codec the weights belong to: the Wan2.1 VAE or TAEHV, ready to encode and decode.

    ``source`` is a weight file (``Wan2.1_VAE.pth``, ``wan_2.1_vae.safetensors``, ``taew2_1.pth``,
    ``taew2_1.safetensors``) or a state dict, e.g. ComfyUI's ``vae.first_stage_model.state_dict()``.
    """
    # Imported here because the codec modules import this one (import direction: models -> codec).
    from .wan.taehv import load_taehv
    from .wan.vae import load_wan_vae

    weights = weights_of(source)
    description = describe_weights(weights)
    if description.startswith("a TAEHV"):
        return load_taehv(weights, dtype=dtype)
    if description.startswith("a Wan2.1 VAE"):
        return load_wan_vae(weights, dtype=dtype)
    raise CheckpointError(f"{source_name(source)} is {description}")
