"""Streaming Wan2.1 VAE: frames to normalised latents and back, chunk by chunk.

Place in the data flow: the source video and the splat render are encoded here before the DiT,
and its output latents are decoded here (``core/codec.py`` has the shared interface; TAEHV is the
cheaper alternative in ``core/wan/taehv.py``).

Follows the official ``wan/modules/vae.py`` (``WanVAE_``, v1 and v1.5 of InSpatio-World) driven
as ``utils/wan_wrapper.py WanVAEWrapper`` and v1.5 ``encode_stream`` / ``decode_stream`` do:

- the encoder takes frame 0 alone, then chunks of 4 frames; the decoder takes one latent at a
  time (1 frame, then 4 per latent). Upstream keeps the causal caches in module attributes
  (``feat_cache``); here they live in a :class:`WanVAEStream` the caller owns, keyed by layer, so
  a block-by-block stream is bit-identical to a whole-video call;
- latents leave normalised as ``(mu - mean) · (1/std)`` and the decoder starts with
  ``z / (1/std) + mean``: it divides by the float32 reciprocal, as upstream does;
- module and parameter names equal the released ``Wan2.1_VAE.pth`` keys (also those of ComfyUI's
  ``wan_2.1_vae.safetensors`` and ``comfy.ldm.wan.vae.WanVAE``), so loading is a strict
  ``load_state_dict``. The model is longer than 300 lines because the architecture and its cache
  rules are one unit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Annotated

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from ..codec import (
    FRAMES_PER_LATENT,
    LATENT_CHANNELS,
    RGB_CHANNELS,
    WAN21_LATENT_MEAN,
    WAN21_LATENT_STD,
    FrameBatch,
    FrameSize,
    StateDict,
    check_frames,
    check_latents,
    check_stream_size,
    describe_weights,
    load_exact_weights,
    source_name,
    strip_prefix,
    weights_of,
)
from ..types import VideoLatents
from .checkpoints import CheckpointError

CACHED_FRAMES = 2  # upstream CACHE_T: a kernel-3 causal conv needs the 2 frames before a chunk
TEMPORAL_KERNEL = 3
SPATIAL_KERNEL = 3
RESAMPLE_FACTOR = 2  # every Downsample halves H and W (and T when temporal); Upsample doubles

Features = Annotated[Tensor, "B C T H W: upstream's layout inside the model"]
StreamMemory = dict[nn.Module, Tensor]


@dataclass(frozen=True)
class WanVAEConfig:
    """Architecture of the Wan2.1 VAE (``_video_vae`` defaults; tests use a small ``base_dim``)."""

    base_dim: int = 96
    latent_channels: int = LATENT_CHANNELS
    dim_mult: tuple[int, ...] = (1, 2, 4, 4)
    res_blocks: int = 2
    temporal_downsample: tuple[bool, ...] = (False, True, True)
    latent_mean: tuple[float, ...] = WAN21_LATENT_MEAN
    latent_std: tuple[float, ...] = WAN21_LATENT_STD

    def __post_init__(self) -> None:
        if len(self.temporal_downsample) != len(self.dim_mult) - 1:
            raise ValueError(
                f"temporal_downsample has {len(self.temporal_downsample)} entries; it needs one per "
                f"stage transition ({len(self.dim_mult) - 1} for dim_mult {self.dim_mult})"
            )
        for name, table in (("latent_mean", self.latent_mean), ("latent_std", self.latent_std)):
            if len(table) != self.latent_channels:
                raise ValueError(f"{name} has {len(table)} values; it needs {self.latent_channels}")


@dataclass
class WanVAEStream:
    """Causal memory of one video stream: per layer, the frames the next chunk must see.

    One state per stream (source, render, output); encoding and decoding keep separate memories.
    The memories are keyed by the model's layers, so a state belongs to the model that made it.
    """

    encoder_memory: StreamMemory = field(default_factory=dict)
    decoder_memory: StreamMemory = field(default_factory=dict)
    frames_encoded: int = 0
    frame_size: FrameSize | None = None  # H×W the encoder memory was built at
    latent_size: FrameSize | None = None  # h×w the decoder memory was built at


class CausalConv3d(nn.Conv3d):
    """Conv3d padded only towards the past in time; the past may come from the previous chunk."""

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        kernel: int | tuple[int, int, int],
        stride: int | tuple[int, int, int] = 1,
        padding: tuple[int, int, int] = (0, 0, 0),
    ) -> None:
        super().__init__(in_dim, out_dim, kernel, stride=stride)
        time_pad, height_pad, width_pad = padding
        self.past_frames = 2 * time_pad  # symmetric padding moved entirely into the past
        self.spatial_padding = (width_pad, width_pad, height_pad, height_pad)

    def forward(self, x: Features, past: Features | None = None) -> Features:
        missing = self.past_frames
        if past is not None and self.past_frames > 0:
            x = torch.cat([past, x], dim=2)
            missing -= past.shape[2]
        return super().forward(F.pad(x, (*self.spatial_padding, missing, 0)))


def causal_conv3x3x3(in_dim: int, out_dim: int) -> CausalConv3d:
    """Kernel 3 in time and space: 2 frames of past, 1 pixel of spatial padding each side."""
    return CausalConv3d(in_dim, out_dim, TEMPORAL_KERNEL, padding=(1, 1, 1))


def remembered_frames(x: Features, past: Features | None) -> Features:
    """Upstream's cache rule: the chunk's last 2 frames; a 1-frame chunk keeps the old last frame."""
    kept = x[:, :, -CACHED_FRAMES:]
    if kept.shape[2] < CACHED_FRAMES and past is not None:
        kept = torch.cat([past[:, :, -1:], kept], dim=2)
    return kept


def run_causal(conv: CausalConv3d, x: Features, memory: StreamMemory) -> Features:
    """Apply a causal conv to a chunk, reading and updating its slot of the stream memory."""
    past = memory.get(conv)
    memory[conv] = remembered_frames(x, past)
    return conv(x, past)


def per_frame(layers: nn.Module, x: Features) -> Features:
    """Apply 2D layers to every frame of every batch item."""
    frames = layers(rearrange(x, "b c t h w -> (b t) c h w"))
    return rearrange(frames, "(b t) c h w -> b c t h w", b=x.shape[0])


class RMSNorm(nn.Module):
    """Channel RMS norm (``F.normalize · sqrt(C) · gamma``); ``gamma`` broadcasts over H, W (and T)."""

    def __init__(self, dim: int, spatial_axes: int) -> None:
        super().__init__()
        self.scale = dim**0.5
        self.gamma = nn.Parameter(torch.ones(dim, *([1] * spatial_axes)))

    def forward(self, x: Tensor) -> Tensor:
        return F.normalize(x, dim=1) * self.scale * self.gamma


class ResidualBlock(nn.Module):
    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        # Index 5 held the training-time Dropout; the Identity keeps the checkpoint's indices.
        self.residual = nn.Sequential(
            RMSNorm(in_dim, spatial_axes=3),
            nn.SiLU(),
            causal_conv3x3x3(in_dim, out_dim),
            RMSNorm(out_dim, spatial_axes=3),
            nn.SiLU(),
            nn.Identity(),
            causal_conv3x3x3(out_dim, out_dim),
        )
        self.shortcut = CausalConv3d(in_dim, out_dim, 1) if in_dim != out_dim else nn.Identity()

    def forward(self, x: Features, memory: StreamMemory) -> Features:
        shortcut = self.shortcut(x)
        for layer in self.residual:
            x = run_causal(layer, x, memory) if isinstance(layer, CausalConv3d) else layer(x)
        return x + shortcut


class AttentionBlock(nn.Module):
    """Single-head self-attention over the pixels of each frame (no attention across time)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = RMSNorm(dim, spatial_axes=2)
        self.to_qkv = nn.Conv2d(dim, dim * 3, 1)
        self.proj = nn.Conv2d(dim, dim, 1)

    def forward(self, x: Features, memory: StreamMemory) -> Features:
        # ``memory`` is unused (nothing crosses frames) but keeps the block call uniform.
        batch, _, _, height, width = x.shape
        frames = rearrange(x, "b c t h w -> (b t) c h w")
        qkv = self.to_qkv(self.norm(frames))
        query, key, value = rearrange(qkv, "n (three c) h w -> three n 1 (h w) c", three=3)
        attended = F.scaled_dot_product_attention(query, key, value)
        attended = rearrange(attended, "n 1 (h w) c -> n c h w", h=height, w=width)
        return x + rearrange(self.proj(attended), "(b t) c h w -> b c t h w", b=batch)


class Downsample(nn.Module):
    """Stride-2 spatial conv per frame, then (``temporal``) a stride-2 time conv across chunks."""

    def __init__(self, dim: int, temporal: bool) -> None:
        super().__init__()
        # Pad right and bottom only, then a 3x3 stride-2 conv without padding (upstream).
        self.resample = nn.Sequential(
            nn.ZeroPad2d((0, 1, 0, 1)), nn.Conv2d(dim, dim, SPATIAL_KERNEL, stride=RESAMPLE_FACTOR)
        )
        self.time_conv = (
            CausalConv3d(dim, dim, (TEMPORAL_KERNEL, 1, 1), stride=(RESAMPLE_FACTOR, 1, 1))
            if temporal
            else None
        )

    def forward(self, x: Features, memory: StreamMemory) -> Features:
        x = per_frame(self.resample, x)
        if self.time_conv is None:
            return x
        past = memory.get(self)
        memory[self] = x[:, :, -1:]
        if past is None:
            return x  # the first chunk (frame 0 alone) passes without the time conv
        return self.time_conv(torch.cat([past, x], dim=2))


class Upsample(nn.Module):
    """(``temporal``) a time conv doubling the frames, then nearest 2x upsampling and a conv."""

    def __init__(self, dim: int, temporal: bool) -> None:
        super().__init__()
        self.resample = nn.Sequential(
            nn.Upsample(scale_factor=float(RESAMPLE_FACTOR), mode="nearest-exact"),
            nn.Conv2d(dim, dim // 2, SPATIAL_KERNEL, padding=1),
        )
        self.time_conv = (
            CausalConv3d(dim, dim * RESAMPLE_FACTOR, (TEMPORAL_KERNEL, 1, 1), padding=(1, 0, 0))
            if temporal
            else None
        )

    def forward(self, x: Features, memory: StreamMemory) -> Features:
        if self.time_conv is not None:
            past = memory.get(self)
            if past is None:
                # The first latent keeps its single frame; the memory starts as two zero frames.
                memory[self] = torch.zeros_like(x[:, :, :1]).repeat(1, 1, CACHED_FRAMES, 1, 1)
            else:
                memory[self] = self._remembered(x, past)
                doubled = self.time_conv(x, past)
                # Channels [0, C) give frame 2i and [C, 2C) frame 2i+1.
                x = rearrange(doubled, "b (two c) t h w -> b c (t two) h w", two=RESAMPLE_FACTOR)
        return per_frame(self.resample, x)

    @staticmethod
    def _remembered(x: Features, past: Features) -> Features:
        if x.shape[2] >= CACHED_FRAMES:
            return x[:, :, -CACHED_FRAMES:]
        # Upstream quirk, matched on purpose: a 1-frame chunk remembers where(prev == 0, 0, x)
        # instead of prev, so from the 3rd latent on the memory is [x, x], not [previous, x].
        previous = past[:, :, -1:]
        return torch.cat([torch.where(previous == 0, torch.zeros_like(x), x), x], dim=2)


def run_blocks(blocks: nn.Sequential, x: Features, memory: StreamMemory) -> Features:
    for block in blocks:
        x = block(x, memory)
    return x


def run_head(head: nn.Sequential, x: Features, memory: StreamMemory) -> Features:
    norm, activation, conv = head
    return run_causal(conv, activation(norm(x)), memory)


class Encoder3d(nn.Module):
    def __init__(self, config: WanVAEConfig) -> None:
        super().__init__()
        dims = [config.base_dim * multiple for multiple in (1, *config.dim_mult)]
        self.conv1 = causal_conv3x3x3(RGB_CHANNELS, dims[0])
        blocks: list[nn.Module] = []
        for stage, (in_dim, out_dim) in enumerate(pairwise(dims)):
            for _ in range(config.res_blocks):
                blocks.append(ResidualBlock(in_dim, out_dim))
                in_dim = out_dim
            if stage < len(config.temporal_downsample):
                blocks.append(Downsample(out_dim, config.temporal_downsample[stage]))
        self.downsamples = nn.Sequential(*blocks)
        width = dims[-1]
        self.middle = nn.Sequential(
            ResidualBlock(width, width), AttentionBlock(width), ResidualBlock(width, width)
        )
        # The encoder emits mean and log-variance: twice the latent channels.
        self.head = nn.Sequential(
            RMSNorm(width, spatial_axes=3),
            nn.SiLU(),
            causal_conv3x3x3(width, 2 * config.latent_channels),
        )

    def forward(self, x: Features, memory: StreamMemory) -> Features:
        x = run_causal(self.conv1, x, memory)
        x = run_blocks(self.middle, run_blocks(self.downsamples, x, memory), memory)
        return run_head(self.head, x, memory)


class Decoder3d(nn.Module):
    def __init__(self, config: WanVAEConfig) -> None:
        super().__init__()
        multiples = config.dim_mult
        dims = [config.base_dim * multiple for multiple in (multiples[-1], *reversed(multiples))]
        temporal_upsample = tuple(reversed(config.temporal_downsample))
        self.conv1 = causal_conv3x3x3(config.latent_channels, dims[0])
        self.middle = nn.Sequential(
            ResidualBlock(dims[0], dims[0]),
            AttentionBlock(dims[0]),
            ResidualBlock(dims[0], dims[0]),
        )
        blocks: list[nn.Module] = []
        for stage, (in_dim, out_dim) in enumerate(pairwise(dims)):
            if stage > 0:
                in_dim //= 2  # every Upsample halves the channels
            for _ in range(config.res_blocks + 1):
                blocks.append(ResidualBlock(in_dim, out_dim))
                in_dim = out_dim
            if stage < len(temporal_upsample):
                blocks.append(Upsample(out_dim, temporal_upsample[stage]))
        self.upsamples = nn.Sequential(*blocks)
        self.head = nn.Sequential(
            RMSNorm(dims[-1], spatial_axes=3), nn.SiLU(), causal_conv3x3x3(dims[-1], RGB_CHANNELS)
        )

    def forward(self, x: Features, memory: StreamMemory) -> Features:
        x = run_causal(self.conv1, x, memory)
        x = run_blocks(self.upsamples, run_blocks(self.middle, x, memory), memory)
        return run_head(self.head, x, memory)


class WanVAE(nn.Module):
    """The Wan2.1 VAE as a streaming :class:`~core.codec.LatentCodec`."""

    name = "Wan2.1 VAE"

    def __init__(self, config: WanVAEConfig = WanVAEConfig()) -> None:
        super().__init__()
        self.config = config
        z = config.latent_channels
        self.encoder = Encoder3d(config)
        self.conv1 = CausalConv3d(2 * z, 2 * z, 1)
        self.conv2 = CausalConv3d(z, z, 1)
        self.decoder = Decoder3d(config)
        # Not in the checkpoint. float32 as upstream's tables, 1/std rounded once, here; they are
        # cast with the model, so a bf16 model uses bf16-rounded tables as v1.5 does.
        mean = torch.tensor(config.latent_mean, dtype=torch.float32)
        self.register_buffer("latent_mean", rearrange(mean, "c -> c 1 1 1"), persistent=False)
        inverse_std = 1.0 / torch.tensor(config.latent_std, dtype=torch.float32)
        self.register_buffer(
            "latent_inverse_std", rearrange(inverse_std, "c -> c 1 1 1"), persistent=False
        )

    @property
    def dtype(self) -> torch.dtype:
        return self.conv2.weight.dtype

    def new_state(self) -> WanVAEStream:
        return WanVAEStream()

    @torch.no_grad()
    def encode(self, frames: FrameBatch, state: WanVAEStream) -> VideoLatents:
        """Normalised latents of the next frames of a stream (1 + 4k first, then 4k frames)."""
        check_frames(frames, first_chunk=state.frames_encoded == 0, codec=self.name)
        state.frame_size = check_stream_size(state.frame_size, frames, "frame", self.name)
        video = rearrange(frames.to(self.latent_mean.device, self.dtype), "b f c h w -> b c f h w")
        # Frame 0 is a chunk of its own; every later chunk is 4 frames, as in WanVAE_.encode.
        first = 1 if state.frames_encoded == 0 else 0
        chunks = [video[:, :, :first]] if first else []
        if video.shape[2] > first:
            chunks += list(video[:, :, first:].split(FRAMES_PER_LATENT, dim=2))
        state.frames_encoded += frames.shape[1]
        latents = [self._encode_chunk(chunk, state.encoder_memory) for chunk in chunks]
        return rearrange(torch.cat(latents, dim=2), "b c g h w -> b g c h w")

    def _encode_chunk(self, chunk: Features, memory: StreamMemory) -> Features:
        moments = self.conv1(self.encoder(chunk, memory))
        mu = moments[:, : self.config.latent_channels].float()  # log-variance is discarded
        return (mu - self.latent_mean) * self.latent_inverse_std

    @torch.no_grad()
    def decode(self, latents: VideoLatents, state: WanVAEStream) -> FrameBatch:
        """Frames in [-1, 1] of the next latents of a stream, decoded one latent at a time."""
        check_latents(latents, self.name)
        state.latent_size = check_stream_size(state.latent_size, latents, "latent", self.name)
        z = (
            rearrange(latents.to(self.latent_mean.device, torch.float32), "b g c h w -> b c g h w")
            / self.latent_inverse_std
            + self.latent_mean
        )
        z = z.to(self.dtype)
        # conv2 (1x1x1) runs per latent, not once over all as upstream: same values, and a
        # stream stays bit-identical however it is split (kernels may round by batch size).
        frames = [
            self.decoder(self.conv2(z[:, :, index : index + 1]), state.decoder_memory)
            for index in range(z.shape[2])
        ]
        return rearrange(torch.cat(frames, dim=2).float().clamp(-1, 1), "b c f h w -> b f c h w")


def infer_config(weights: StateDict, **overrides: object) -> WanVAEConfig:
    """The architecture a Wan VAE state dict implies, read from its encoder's keys and shapes.

    Walking ``encoder.downsamples.{i}`` in order: residual blocks (``residual.0.gamma``) up to a
    resampler (``resample.1.weight``) form one stage; a resampler with ``time_conv`` halves time;
    each stage's width over the base width is its multiple.
    """
    needed = ("encoder.conv1.weight", "encoder.downsamples.0.residual.0.gamma", "conv2.weight")
    if any(key not in weights for key in needed):
        raise CheckpointError(
            "the Wan VAE weights lack the encoder or conv2 (a partial or decoder-only file): use "
            "the full Wan2.1_VAE.pth or wan_2.1_vae.safetensors"
        )
    base_dim = weights["encoder.conv1.weight"].shape[0]
    blocks_per_stage: list[int] = [0]
    stage_widths: list[int] = []
    temporal: list[bool] = []
    index = 0
    while True:
        prefix = f"encoder.downsamples.{index}."
        if f"{prefix}residual.0.gamma" in weights:
            blocks_per_stage[-1] += 1
            width = weights[f"{prefix}residual.6.weight"].shape[0]
        elif f"{prefix}resample.1.weight" in weights:
            stage_widths.append(width)
            temporal.append(f"{prefix}time_conv.weight" in weights)
            blocks_per_stage.append(0)
        else:
            break
        index += 1
    stage_widths.append(width)
    if len(set(blocks_per_stage)) != 1:
        raise CheckpointError(
            f"the Wan VAE encoder has {blocks_per_stage} residual blocks per stage; every stage "
            "must have the same number (it is not a Wan2.1 VAE)"
        )
    return WanVAEConfig(
        base_dim=base_dim,
        latent_channels=weights["conv2.weight"].shape[0],
        dim_mult=tuple(width // base_dim for width in stage_widths),
        res_blocks=blocks_per_stage[0],
        temporal_downsample=tuple(temporal),
        **overrides,
    )


def load_wan_vae(
    source: str | Path | StateDict,
    dtype: torch.dtype = torch.float32,
    latent_mean: tuple[float, ...] = WAN21_LATENT_MEAN,
    latent_std: tuple[float, ...] = WAN21_LATENT_STD,
) -> WanVAE:
    """A Wan2.1 VAE from ``Wan2.1_VAE.pth``, ComfyUI's ``wan_2.1_vae.safetensors`` or a state dict.

    The state dict may be ComfyUI's ``vae.first_stage_model.state_dict()`` (same key names) or
    carry a wrapper prefix. Weights stored in float16/bfloat16 are cast to ``dtype``.
    """
    weights = strip_prefix(weights_of(source), "decoder.middle.0.residual.0.gamma")
    description = describe_weights(weights)
    if not description.startswith("a Wan2.1 VAE"):
        raise CheckpointError(f"{source_name(source)} is {description}; expected a Wan2.1 VAE")
    model = WanVAE(
        infer_config(weights, latent_mean=tuple(latent_mean), latent_std=tuple(latent_std))
    )
    try:
        load_exact_weights(
            model,
            weights,
            source,
            "the Wan2.1 VAE architecture",
            "use the released Wan2.1_VAE.pth or ComfyUI's wan_2.1_vae.safetensors",
        )
    except RuntimeError as error:
        raise CheckpointError(
            f"{source_name(source)} has Wan2.1 VAE tensors of unexpected shapes: {error}"
        ) from error
    return model.to(dtype).eval()
