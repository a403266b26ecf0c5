"""The render mask as the DiT's mask latents: 4 channels per latent frame at 1/8 resolution.

Place in the data flow: the {0, 1} mask of ``core/splat.py`` (or the bytes of a mask video) ->
:func:`pack_mask_latents` / :func:`iter_mask_latents` -> the DiT's mask channels.

Follows v1 ``utils/render_warper.py`` (``convert_mask_video``) and v1.5 ``datasets/utils.py``
(``iter_mask_latents``): the signed mask (+1 known, -1 hole) is downsampled bilinearly, and
latent j, channel k holds pixel frame ``max(4j + k - 3, 0)``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Annotated

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import Tensor

from .frame_counts import FRAMES_PER_LATENT
from .types import MaskLatents

MASK_THRESHOLD = 127.5  # v1.5 reads the mask video back as `u8 > 127.5`
LATENT_STRIDE = 8  # Wan2.1 VAE spatial stride: mask latents are H/8 x W/8


class MaskLatentError(ValueError):
    """A mask whose size or chunking the packing cannot use."""


def _downsample_mask(signed_mask: Tensor) -> Tensor:
    """[T, H, W] ±1 -> [T, H/8, W/8]: bilinear, ``align_corners=False`` (pixels 8i+3, 8i+4)."""
    height, width = signed_mask.shape[-2:]
    if height % LATENT_STRIDE or width % LATENT_STRIDE:
        raise MaskLatentError(
            f"mask frames are {height}x{width}: height and width must be multiples of {LATENT_STRIDE}"
        )
    size = (height // LATENT_STRIDE, width // LATENT_STRIDE)
    return F.interpolate(signed_mask[:, None], size=size, mode="bilinear", align_corners=False)[
        :, 0
    ]


def pack_mask_latents(signed_mask: Annotated[Tensor, "F H W in [-1, 1]"]) -> MaskLatents:
    """The DiT's 4 mask channels per latent frame (``convert_mask_video``): [1, G, 4, H/8, W/8].

    Latent j, channel k is pixel frame ``max(4j + k - 3, 0)``: frame 0 is repeated to fill the
    first latent, and frames after the last whole group of 4 are dropped.
    """
    small = _downsample_mask(signed_mask.to(torch.float32))
    lead = repeat(small[:1], "1 h w -> k h w", k=FRAMES_PER_LATENT - 1)
    padded = torch.cat([lead, small])
    usable = padded.shape[0] // FRAMES_PER_LATENT * FRAMES_PER_LATENT
    return rearrange(padded[:usable], "(g k) h w -> 1 g k h w", k=FRAMES_PER_LATENT)


def iter_mask_latents(
    mask_chunks: Iterable[Annotated[Tensor, "T 3 H W uint8"]],
) -> Iterator[MaskLatents]:
    """Streamed mask latents (v1.5 ``iter_mask_latents``), one [1, 1, 4, h, w] per video chunk.

    Chunks are the mask video's bytes in 1, 4, 4, ... frames
    (``core.frame_counts.iter_video_chunks``); channel 0 is thresholded at 127.5. The
    concatenation equals :func:`pack_mask_latents`.
    """
    for index, chunk in enumerate(mask_chunks):
        expected = 1 if index == 0 else FRAMES_PER_LATENT
        if chunk.ndim != 4 or chunk.shape[0] != expected:
            raise MaskLatentError(
                f"mask chunk {index} has shape {tuple(chunk.shape)}: expected [{expected}, 3, H, W] "
                "(chunks of 1, then 4 frames, as core.frame_counts.iter_video_chunks yields)"
            )
        signed = (chunk[:, 0] > MASK_THRESHOLD).to(torch.float32) * 2 - 1
        small = _downsample_mask(signed)
        yield repeat(small, "t h w -> 1 1 (t k) h w", k=FRAMES_PER_LATENT // chunk.shape[0])
