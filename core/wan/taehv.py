"""TAEHV (``taew2_1``): a tiny autoencoder for the Wan2.1 latent space, streaming like the VAE.

Place in the data flow: an optional stand-in for the Wan2.1 VAE (``core/wan/vae.py``) on either
side of the DiT, behind the same :class:`~core.codec.LatentCodec` interface. Its latents are the
DiT's normalised Wan2.1 latents; upstream InSpatio-World v1 (``--use_tae``) feeds them to the DiT
as they are.

Follows the official v1 ``utils/taehv.py`` (``TAEHV``; :class:`TAEHVConfig` carries its
constructor options, defaulting to taew2_1's: patch size 1, 16 latent channels, encoder time
downscale (T, T, F), decoder time upscale (F, T, T), decoder space upscale (T, T, T)). Both
halves are per-frame 2D convolutions with three kinds of temporal glue:

- ``MemBlock(x, past)``: convs over ``cat(x_t, x_{t-1})`` (zeros before the first frame), plus x;
- ``TPool(s)``: s consecutive frames stacked as channels (earlier first), then a 1x1 conv;
- ``TGrow(s)``: a 1x1 conv emitting s frames per frame (the first C channels are the earlier one).

Frame alignment, made explicit. The raw network maps frames 4j..4j+3 to latent j and latent j to
raw frames 4j..4j+3. Upstream ``decode_video`` (and :meth:`TAEHV.decode`) drops the first 3 raw
frames, so latent j decodes to output frames 4j-3..4j: exactly the Wan VAE's layout. Upstream
``encode_video`` pads the end of a video with its last frame; on the Wan layout of 1 + 4k frames
latent j then reads frames 4j..4j+3, 3 frames later than the VAE's latent j (frames 4j-3..4j).
That 3-frame look-ahead is what aligns the two codecs (the decoder's 3-frame trim mirrors it),
and it is how upstream ``--use_tae`` encodes; grouping the frames like the VAE instead would make
the world model follow the camera 3 frames late. So :meth:`TAEHV.encode` on 1 + 4k frames returns
upstream's ``encode_video``: k + 1 latents, the last one read from the last frame held 4 times.

Streaming consequence: the last latent of a chunk lacks its 3 look-ahead frames, so it is encoded
from the chunk's last frame held 4 times, on a copy of the memory. When the next chunk arrives,
that group is encoded again from the real frames only to advance the memory (its latent was
already returned). Latents inside a chunk equal a whole-video encode; the last latent of each
chunk equals the whole-video encode of the frames received so far. Decoding has no look-ahead:
a decoded stream equals the whole decode.
"""

from __future__ import annotations

from dataclasses import dataclass, field
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
    SPATIAL_STRIDE,
    CodecInputError,
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

ENCODER_WIDTH = 64  # utils/taehv.py fixes every encoder width
DECODER_WIDTHS = (256, 128, 64, 64)  # decoder stage widths, fixed upstream too
MEMBLOCKS_PER_STAGE = 3
CLAMP_RANGE = 3.0  # decoder input squashing: tanh(x / 3) · 3
# ComfyUI's TAEHV wrapper names its halves like this.
COMFY_PREFIXES = {"taehv_encoder.": "encoder.", "taehv_decoder.": "decoder."}

FramesInUnitRange = Annotated[Tensor, "B F 3 H W float in [0, 1], the network's own pixel range"]
PerFrame = Annotated[Tensor, "(B T) C H W: every frame of every batch item, one after another"]
StreamMemory = dict[nn.Module, Tensor]


@dataclass(frozen=True)
class TAEHVConfig:
    """Temporal scaling of each TAEHV stage (upstream constructor arguments)."""

    latent_channels: int = LATENT_CHANNELS
    encoder_time_downscale: tuple[bool, bool, bool] = (True, True, False)
    decoder_time_upscale: tuple[bool, bool, bool] = (False, True, True)
    # False at a stage gives a smaller decoded frame (upstream's cheaper preview decoders).
    decoder_space_upscale: tuple[bool, bool, bool] = (True, True, True)
    # Pixels per side folded into channels before the encoder (pixel_unshuffle); 1 for taew2_1.
    patch_size: int = 1

    @property
    def frames_per_latent(self) -> int:
        return 2 ** sum(self.encoder_time_downscale)

    @property
    def decoded_frames_per_latent(self) -> int:
        return 2 ** sum(self.decoder_time_upscale)

    @property
    def frames_to_trim(self) -> int:
        """Raw start-up frames the decoder drops so latent j decodes to frames 4j-3..4j."""
        return self.decoded_frames_per_latent - 1

    @property
    def pixel_channels(self) -> int:
        """Channels of one patch: what the encoder reads and the decoder writes."""
        return RGB_CHANNELS * self.patch_size**2

    def __post_init__(self) -> None:
        if self.patch_size < 1:
            raise ValueError(f"patch_size is {self.patch_size}; it must be 1 or more")
        if self.frames_per_latent != FRAMES_PER_LATENT:
            raise ValueError(
                f"encoder_time_downscale {self.encoder_time_downscale} gives {self.frames_per_latent} "
                f"frames per latent; the Wan2.1 latent space needs {FRAMES_PER_LATENT}"
            )


@dataclass
class TAEHVStream:
    """Memory of one video stream: each MemBlock's last input frame, and the look-ahead frame.

    ``held_frame`` is the last frame received; its group's latent was returned from look-ahead
    padding and is re-encoded from real frames when the next chunk arrives. The memories are keyed
    by the model's layers, so a state belongs to the model that made it.
    """

    encoder_memory: StreamMemory = field(default_factory=dict)
    decoder_memory: StreamMemory = field(default_factory=dict)
    held_frame: FramesInUnitRange | None = None
    raw_frames_decoded: int = 0
    frame_size: FrameSize | None = None  # H×W the encoder memory was built at
    latent_size: FrameSize | None = None  # h×w the decoder memory was built at


def conv3x3(in_channels: int, out_channels: int, stride: int = 1, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=bias)


class Clamp(nn.Module):
    def forward(self, x: PerFrame) -> PerFrame:
        return torch.tanh(x / CLAMP_RANGE) * CLAMP_RANGE


class MemBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            conv3x3(in_channels * 2, out_channels),
            nn.ReLU(),
            conv3x3(out_channels, out_channels),
            nn.ReLU(),
            conv3x3(out_channels, out_channels),
        )
        self.skip = (
            nn.Conv2d(in_channels, out_channels, 1, bias=False)
            if in_channels != out_channels
            else nn.Identity()
        )

    def forward(self, x: PerFrame, batch: int, memory: StreamMemory) -> PerFrame:
        frames = rearrange(x, "(b t) c h w -> b t c h w", b=batch)
        past = memory.get(self, torch.zeros_like(frames[:, :1]))
        memory[self] = frames[:, -1:]
        previous = rearrange(torch.cat([past, frames[:, :-1]], dim=1), "b t c h w -> (b t) c h w")
        return F.relu(self.conv(torch.cat([x, previous], dim=1)) + self.skip(x))


class TPool(nn.Module):
    def __init__(self, channels: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.conv = nn.Conv2d(channels * stride, channels, 1, bias=False)

    def forward(self, x: PerFrame) -> PerFrame:
        return self.conv(rearrange(x, "(n s) c h w -> n (s c) h w", s=self.stride))


class TGrow(nn.Module):
    def __init__(self, channels: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.conv = nn.Conv2d(channels, channels * stride, 1, bias=False)

    def forward(self, x: PerFrame) -> PerFrame:
        return rearrange(self.conv(x), "n (s c) h w -> (n s) c h w", s=self.stride)


def run_layers(layers: nn.Sequential, x: PerFrame, batch: int, memory: StreamMemory) -> PerFrame:
    for layer in layers:
        x = layer(x, batch, memory) if isinstance(layer, MemBlock) else layer(x)
    return x


class TAEHV(nn.Module):
    """``taew2_1`` as a streaming :class:`~core.codec.LatentCodec`; module indices match the file."""

    name = "TAEHV"

    def __init__(self, config: TAEHVConfig = TAEHVConfig()) -> None:
        super().__init__()
        self.config = config
        encoder: list[nn.Module] = [conv3x3(config.pixel_channels, ENCODER_WIDTH), nn.ReLU()]
        for pooled in config.encoder_time_downscale:
            encoder += [
                TPool(ENCODER_WIDTH, 2 if pooled else 1),
                conv3x3(ENCODER_WIDTH, ENCODER_WIDTH, 2, bias=False),
            ]
            encoder += [MemBlock(ENCODER_WIDTH, ENCODER_WIDTH) for _ in range(MEMBLOCKS_PER_STAGE)]
        encoder.append(conv3x3(ENCODER_WIDTH, config.latent_channels))
        self.encoder = nn.Sequential(*encoder)

        decoder: list[nn.Module] = [
            Clamp(),
            conv3x3(config.latent_channels, DECODER_WIDTHS[0]),
            nn.ReLU(),
        ]
        stages = zip(config.decoder_time_upscale, config.decoder_space_upscale)
        for stage, (grown, upscaled) in enumerate(stages):
            width, next_width = DECODER_WIDTHS[stage], DECODER_WIDTHS[stage + 1]
            decoder += [MemBlock(width, width) for _ in range(MEMBLOCKS_PER_STAGE)]
            decoder += [
                nn.Upsample(scale_factor=2 if upscaled else 1),
                TGrow(width, 2 if grown else 1),
                conv3x3(width, next_width, bias=False),
            ]
        decoder += [nn.ReLU(), conv3x3(DECODER_WIDTHS[-1], config.pixel_channels)]
        self.decoder = nn.Sequential(*decoder)

    @property
    def dtype(self) -> torch.dtype:
        return self.encoder[0].weight.dtype

    @property
    def device(self) -> torch.device:
        return self.encoder[0].weight.device

    # --- the network on whole groups, as upstream's parallel mode ------------------------------
    def encode_groups(self, frames: FramesInUnitRange, memory: StreamMemory) -> VideoLatents:
        """Latent j of frames 4j..4j+3 (``[B, 4n, 3, H, W]`` in [0, 1]), continuing ``memory``."""
        batch, patch = frames.shape[0], self.config.patch_size
        frames = frames.to(self.device, self.dtype)
        # pixel_unshuffle's channel order: colour first, then the row and column inside a patch.
        per_frame = rearrange(
            frames, "b t c (h p1) (w p2) -> (b t) (c p1 p2) h w", p1=patch, p2=patch
        )
        x = run_layers(self.encoder, per_frame, batch, memory)
        return rearrange(x, "(b g) c h w -> b g c h w", b=batch).float()

    def decode_raw(self, latents: VideoLatents, memory: StreamMemory) -> FramesInUnitRange:
        """Raw frames 4j..4j+3 of each latent j, clamped to [0, 1], continuing ``memory``."""
        batch = latents.shape[0]
        latents = latents.to(self.device, self.dtype)
        x = run_layers(self.decoder, rearrange(latents, "b g c h w -> (b g) c h w"), batch, memory)
        patch = self.config.patch_size
        frames = rearrange(
            x, "(b t) (c p1 p2) h w -> b t c (h p1) (w p2)", b=batch, p1=patch, p2=patch
        )
        return frames.float().clamp(0, 1)

    @torch.no_grad()
    def encode_video(self, frames: FramesInUnitRange) -> VideoLatents:
        """Upstream ``encode_video``: any frame count, the end padded with the last frame to 4n."""
        short = -frames.shape[1] % FRAMES_PER_LATENT
        padded = torch.cat([frames, frames[:, -1:].expand(-1, short, -1, -1, -1)], dim=1)
        return self.encode_groups(padded, {})

    # --- the codec interface: frames in [-1, 1], streams of 1 + 4k then 4k frames ----------------
    def new_state(self) -> TAEHVStream:
        return TAEHVStream()

    @torch.no_grad()
    def encode(self, frames: FrameBatch, state: TAEHVStream) -> VideoLatents:
        """Latents of the next frames of a stream (module docstring: the 3-frame look-ahead)."""
        check_frames(frames, first_chunk=state.held_frame is None, codec=self.name)
        state.frame_size = check_stream_size(state.frame_size, frames, "frame", self.name)
        pixels_per_cell = SPATIAL_STRIDE * self.config.patch_size
        if frames.shape[-2] % pixels_per_cell or frames.shape[-1] % pixels_per_cell:
            raise CodecInputError(
                f"{self.name} frames are {frames.shape[-2]}x{frames.shape[-1]}; with patch size "
                f"{self.config.patch_size} height and width must be multiples of "
                f"{pixels_per_cell}: crop or resize the video"
            )
        # Upstream maps [-1, 1] to the network's [0, 1] this way.
        unit = (frames.to(self.device, torch.float32) * 0.5 + 0.5).clamp(0, 1)
        stream = unit if state.held_frame is None else torch.cat([state.held_frame, unit], dim=1)
        latents = []
        if stream.shape[1] > 1:
            # All groups but the last have real frames: they advance the memory.
            complete = self.encode_groups(stream[:, :-1], state.encoder_memory)
            # The previous chunk's look-ahead latent was already returned; skip its redo.
            latents.append(complete if state.held_frame is None else complete[:, 1:])
        held = stream[:, -1:]
        latents.append(
            self.encode_groups(
                held.expand(-1, FRAMES_PER_LATENT, -1, -1, -1), dict(state.encoder_memory)
            )
        )
        state.held_frame = held
        return torch.cat(latents, dim=1)

    @torch.no_grad()
    def decode(self, latents: VideoLatents, state: TAEHVStream) -> FrameBatch:
        """Frames in [-1, 1] of the next latents; the stream's first 3 raw frames are dropped."""
        check_latents(latents, self.name)
        state.latent_size = check_stream_size(state.latent_size, latents, "latent", self.name)
        raw = self.decode_raw(latents, state.decoder_memory)
        trimmed = max(0, self.config.frames_to_trim - state.raw_frames_decoded)
        state.raw_frames_decoded += raw.shape[1]
        return raw[:, trimmed:] * 2 - 1


def patch_tgrow_layers(model: TAEHV, weights: dict[str, Tensor]) -> dict[str, Tensor]:
    """Upstream ``patch_tgrow_layers``: a TGrow kernel larger in the file keeps its last rows.

    A model built with fewer temporal upscales than the file (a cheaper preview decoder) keeps
    the output channels of the *last* time step of each shrunken TGrow.
    """
    patched = dict(weights)
    for index, layer in enumerate(model.decoder):
        key = f"decoder.{index}.conv.weight"
        if isinstance(layer, TGrow) and key in patched:
            rows = layer.conv.weight.shape[0]
            if patched[key].shape[0] > rows:
                patched[key] = patched[key][-rows:]
    return patched


def load_taehv(
    source: str | Path | StateDict,
    config: TAEHVConfig = TAEHVConfig(),
    dtype: torch.dtype = torch.float32,
) -> TAEHV:
    """TAEHV from ``taew2_1.pth`` / ``taew2_1.safetensors`` or a state dict (ComfyUI names too)."""
    weights = weights_of(source)
    for comfy_prefix, own_prefix in COMFY_PREFIXES.items():
        weights = {
            own_prefix + key[len(comfy_prefix) :] if key.startswith(comfy_prefix) else key: value
            for key, value in weights.items()
        }
    weights = strip_prefix(weights, "decoder.1.weight")
    description = describe_weights(weights)
    if not description.startswith("a TAEHV"):
        raise CheckpointError(f"{source_name(source)} is {description}; expected a TAEHV (taew2_1)")
    first_conv = weights.get("encoder.0.weight")
    if first_conv is not None and first_conv.shape[1] != config.pixel_channels:
        raise CheckpointError(
            f"{source_name(source)}: the TAEHV encoder takes {first_conv.shape[1]} input channels "
            f"(pixel-shuffled patches), patch size {config.patch_size} gives "
            f"{config.pixel_channels}: this is a TAEHV for another model (e.g. taew2_2 for "
            "Wan2.2); use taew2_1 for Wan2.1"
        )
    latent_channels = weights["decoder.1.weight"].shape[1]
    if latent_channels != config.latent_channels:
        raise CheckpointError(
            f"{source_name(source)} decodes {latent_channels}-channel latents; Wan2.1 latents have "
            f"{config.latent_channels}: use taew2_1"
        )
    model = TAEHV(config)
    weights = patch_tgrow_layers(model, weights)
    try:
        load_exact_weights(model, weights, source, "taew2_1", "use the released taew2_1")
    except RuntimeError as error:
        raise CheckpointError(
            f"{source_name(source)} has TAEHV tensors of unexpected shapes ({error}); a TGrow "
            f"kernel smaller than decoder_time_upscale {config.decoder_time_upscale} needs cannot "
            "be widened: use the released taew2_1 or fewer temporal upscales"
        ) from error
    return model.to(dtype).eval()
