"""The block-autoregressive sampler of InSpatio-World and its streaming :class:`Session`.

Place in the data flow: above this module the codecs turn the source video, the splat render and
its mask into latents (normalised Wan2.1 space, layout ``[B, G, C, h, w]``); below it the decoder
turns the generated latents back into frames. Per block of ``frames_per_block`` latent frames the
session prefills the KV cache with the reference block (and the previous block's clean prediction)
at t = 0, then runs the denoising steps conditioned on the block's mask and render latents.
:func:`generate` is exactly the concatenation of :meth:`Session.step` over the blocks.

Follows ``pipeline/causal_inference.py`` (``CausalInferencePipeline.inference``) of the official
v1 code, whose loop is identical in v1.5. Noise comes from a private seeded generator, drawn on the
CPU so a seed gives the same video on every device, or from an explicit sequence of tensors (the
parity fixtures replay the official run): per block the initial noise, then each re-noise.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

import torch
from torch import Tensor

from .cache import CONTEXT_BLOCKS, CacheShape, SpatiotemporalCache
from .schedule import FlowMatchSchedule
from .types import MaskLatents, ModelInput, RenderLatents, TextEmbeddings, VideoLatents
from .wan.dit import LATENT_CHANNELS, MASK_CHANNELS, CausalWanDiT, WanDiTConfig

RELEASED_FRAMES_PER_BLOCK = 3
TEXT_AXES = ("batch", "text tokens", "text dim")
LATENT_AXES = ("batch", "latent frames", "channels", "latent height", "latent width")
CONTEXT_FRAME_OFFSET = 0  # the reference block sits at RoPE frames 0.., the previous block after it
CLEAN_TIMESTEP = 0.0


class WorldInputError(ValueError):
    """Latents or embeddings handed to the sampler that cannot be used, and how to fix them."""


@dataclass(frozen=True)
class SamplerConfig:
    """Block size, RoPE placement of the noisy block and denoising schedule. Defaults: the release's.

    ``denoise_frame_offset`` is the RoPE frame position of the noisy block: after a full context
    (reference block + previous block), even in block 0 whose context is only the reference block
    (official v1 hard-codes 6; v1.5 writes it ``2 * FRAMES_PER_BLOCK``).
    """

    frames_per_block: int = RELEASED_FRAMES_PER_BLOCK
    denoise_frame_offset: int = CONTEXT_BLOCKS * RELEASED_FRAMES_PER_BLOCK
    schedule: FlowMatchSchedule = field(default_factory=FlowMatchSchedule)

    def __post_init__(self) -> None:
        if self.frames_per_block < 1:
            raise ValueError(f"frames_per_block must be at least 1, got {self.frames_per_block}")
        context_frames = CONTEXT_BLOCKS * self.frames_per_block
        if self.denoise_frame_offset < context_frames:
            raise ValueError(
                f"denoise_frame_offset={self.denoise_frame_offset} would put the noisy block on the "
                f"RoPE frames of the {context_frames}-frame context: use at least {context_frames}"
            )


class NoiseSource(Protocol):
    def draw(self, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> Tensor: ...


class SeededNoise:
    """Standard normal noise from a private generator, drawn in float32 on the CPU then moved."""

    def __init__(self, seed: int) -> None:
        self.generator = torch.Generator(device="cpu").manual_seed(seed)

    def draw(self, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> Tensor:
        noise = torch.randn(shape, generator=self.generator, dtype=torch.float32, device="cpu")
        return noise.to(device=device, dtype=dtype)


class ReplayedNoise:
    """Noise given in advance, in call order: per block the initial noise, then every re-noise."""

    def __init__(self, tensors: Iterable[Tensor]) -> None:
        self._tensors: Iterator[Tensor] = iter(tensors)
        self._drawn = 0

    def draw(self, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> Tensor:
        noise = next(self._tensors, None)
        if noise is None:
            raise WorldInputError(
                f"the replayed noise ran out after {self._drawn} tensors: give one initial noise per "
                "block and one per re-noise step"
            )
        if tuple(noise.shape) != tuple(shape):
            raise WorldInputError(
                f"replayed noise tensor {self._drawn} has shape {tuple(noise.shape)}, expected {shape}"
            )
        self._drawn += 1
        return noise.to(device=device, dtype=dtype)


def session_memory_bytes(
    config: WanDiTConfig,
    latent_height: int,
    latent_width: int,
    *,
    batch: int = 1,
    dtype: torch.dtype = torch.bfloat16,
    frames_per_block: int = RELEASED_FRAMES_PER_BLOCK,
) -> int:
    """Bytes a session keeps allocated: the KV cache plus the text K/V (not the model weights)."""
    return _cache_shape(config, latent_height, latent_width, batch, frames_per_block).total_bytes(
        dtype
    )


def _cache_shape(
    config: WanDiTConfig, latent_height: int, latent_width: int, batch: int, frames_per_block: int
) -> CacheShape:
    tokens_per_frame = config.tokens_per_frame(latent_height, latent_width)
    return CacheShape(
        num_layers=config.num_layers,
        num_heads=config.num_heads,
        head_dim=config.head_dim,
        batch=batch,
        capacity_tokens=CONTEXT_BLOCKS * frames_per_block * tokens_per_frame,
        text_tokens=config.text_len,
    )


def _pad_to_model_input(latents: VideoLatents) -> ModelInput:
    """Clean context frames carry zeros (not −1) in the mask and render channels."""
    b, g, _, h, w = latents.shape
    zeros = latents.new_zeros(b, g, MASK_CHANNELS + LATENT_CHANNELS, h, w)
    return torch.cat([latents, zeros], dim=2)


def prepare_cache(
    model: CausalWanDiT,
    text: TextEmbeddings,
    *,
    latent_height: int,
    latent_width: int,
    sampler: SamplerConfig | None = None,
) -> SpatiotemporalCache:
    """The fixed KV buffers of a run on ``[B, G, C, latent_height, latent_width]`` latents, in the
    model's dtype and on its device, holding the prompt's text K/V (computed here, once).

    Any number of sessions on this prompt and latent size may reuse it one after the other: each
    session's first prefill overwrites the rows it reads.
    """
    sampler = sampler or SamplerConfig()
    parameter = next(model.parameters())
    _check_layout("text embeddings", text, TEXT_AXES)
    _check_finite("text embeddings", text)
    shape = _cache_shape(
        model.config, latent_height, latent_width, text.shape[0], sampler.frames_per_block
    )
    cache = SpatiotemporalCache(shape, dtype=parameter.dtype, device=parameter.device)
    with torch.no_grad():
        cache.set_text(model.text_kv(text.to(device=parameter.device, dtype=parameter.dtype)))
    return cache


def cache_mismatch(
    cache: SpatiotemporalCache,
    model: CausalWanDiT,
    *,
    batch: int,
    latent_height: int,
    latent_width: int,
    sampler: SamplerConfig | None = None,
) -> str | None:
    """Why ``cache`` cannot serve a session of this model and latent size, or None when it can."""
    if cache.released:
        return "the cache was released (prepare a new one for every run after its release)"
    sampler = sampler or SamplerConfig()
    parameter = next(model.parameters())
    expected = _cache_shape(
        model.config, latent_height, latent_width, batch, sampler.frames_per_block
    )
    if cache.shape != expected:
        return f"the cache was prepared for {cache.shape}, this session needs {expected}"
    if (cache.dtype, cache.device) != (parameter.dtype, parameter.device):
        return (
            f"the cache is {cache.dtype} on {cache.device}, the model {parameter.dtype} on "
            f"{parameter.device}"
        )
    return None


class Session:
    """One streamed generation: :meth:`step` turns one block of conditions into one block of latents.

    The model's dtype and device are the session's (fp32 on the CPU for parity, bf16 on CUDA).
    The KV cache is overwritten every block, never re-allocated. A ``cache`` from
    :func:`prepare_cache` is reused as it is (its text K/V are those of the prompt it was prepared
    with, so ``text`` only gives the batch size); without one the session prepares its own.
    """

    def __init__(
        self,
        model: CausalWanDiT,
        text: TextEmbeddings,
        *,
        latent_height: int,
        latent_width: int,
        noise: NoiseSource,
        sampler: SamplerConfig | None = None,
        cache: SpatiotemporalCache | None = None,
    ) -> None:
        self.model = model
        self.sampler = sampler or SamplerConfig()
        self.noise = noise
        parameter = next(model.parameters())
        self.dtype, self.device = parameter.dtype, parameter.device
        self.latent_size = (latent_height, latent_width)
        _check_layout("text embeddings", text, TEXT_AXES)
        self.batch = text.shape[0]
        self.tokens_per_frame = model.config.tokens_per_frame(latent_height, latent_width)
        if cache is None:
            cache = prepare_cache(
                model,
                text,
                latent_height=latent_height,
                latent_width=latent_width,
                sampler=self.sampler,
            )
        else:
            problem = cache_mismatch(
                cache,
                model,
                batch=self.batch,
                latent_height=latent_height,
                latent_width=latent_width,
                sampler=self.sampler,
            )
            if problem is not None:
                raise WorldInputError(
                    f"the prepared cache does not fit this session: {problem}; prepare it with "
                    "prepare_cache() for the same model, prompt batch, latent size and block size"
                )
        self.cache = cache
        self.previous: VideoLatents | None = None

    @torch.no_grad()
    def step(
        self,
        reference: VideoLatents,
        render: RenderLatents,
        mask: MaskLatents,
        *,
        on_step: Callable[[int], None] | None = None,
    ) -> VideoLatents:
        """The next block: ``[B, frames_per_block, 16, h, w]`` clean latents (the last step's x0).

        ``on_step(index)`` runs after each denoising step (progress; raise from it to cancel, which
        leaves the session at the previous block).
        """
        reference, render, mask = (
            self._checked(name, latents, channels)
            for name, latents, channels in (
                ("reference latents", reference, LATENT_CHANNELS),
                ("render latents", render, LATENT_CHANNELS),
                ("mask latents", mask, MASK_CHANNELS),
            )
        )
        self._prefill(reference)
        condition = torch.cat([mask, render], dim=2)
        schedule = self.sampler.schedule
        timesteps = schedule.warped_timesteps.to(self.device)
        noisy = self.noise.draw(tuple(reference.shape), self.dtype, self.device)
        for index, timestep in enumerate(timesteps):
            flow = self.model(
                torch.cat([noisy, condition], dim=2),
                timestep.expand(self.batch),
                self.cache,
                frame_offset=self.sampler.denoise_frame_offset,
                read_len=self.cache.context_tokens,
                write_offset=None,
            )
            clean = schedule.x0_from_flow(noisy, flow, timestep)
            if index + 1 < len(timesteps):
                fresh = self.noise.draw(tuple(clean.shape), clean.dtype, self.device)
                noisy = schedule.add_noise(clean, fresh, timesteps[index + 1])
            if on_step is not None:
                on_step(index)
        self.previous = clean
        return clean

    def _prefill(self, reference: VideoLatents) -> None:
        """Overwrite the cache from row 0 with the reference block and the previous prediction."""
        context_latents = (
            reference if self.previous is None else torch.cat([reference, self.previous], dim=1)
        )
        context = _pad_to_model_input(context_latents)
        clean_timestep = torch.full((self.batch,), CLEAN_TIMESTEP, device=self.device)
        self.model(
            context,
            clean_timestep,
            self.cache,
            frame_offset=CONTEXT_FRAME_OFFSET,
            read_len=0,
            write_offset=0,
        )
        self.cache.mark_prefilled(context.shape[1] * self.tokens_per_frame)

    def _checked(self, name: str, latents: Tensor, channels: int) -> Tensor:
        _check_layout(name, latents, LATENT_AXES)
        expected = (self.batch, self.sampler.frames_per_block, channels, *self.latent_size)
        if tuple(latents.shape) != expected:
            raise WorldInputError(
                f"{name} have shape {tuple(latents.shape)}; one block must be {expected} "
                f"[{', '.join(LATENT_AXES)}]"
            )
        _check_finite(name, latents)
        return latents.to(device=self.device, dtype=self.dtype)


def _check_layout(name: str, tensor: Tensor, axes: tuple[str, ...]) -> None:
    """One dimension per axis of ``axes``: a missing batch axis is the usual mistake."""
    if tensor.ndim == len(axes):
        return
    hint = (
        " (a missing batch axis? add it with tensor[None])" if tensor.ndim == len(axes) - 1 else ""
    )
    raise WorldInputError(
        f"{name} have {tensor.ndim} dimensions, shape {tuple(tensor.shape)}; expected "
        f"{len(axes)}: [{', '.join(axes)}]{hint}"
    )


def _check_finite(name: str, tensor: Tensor) -> None:
    if not torch.isfinite(tensor).all():
        raise WorldInputError(
            f"{name} contain NaN or infinite values: check the encoder or the conditioning"
        )


def generate(
    model: CausalWanDiT,
    text: TextEmbeddings,
    reference: VideoLatents,
    render: RenderLatents,
    mask: MaskLatents,
    *,
    noise: NoiseSource,
    sampler: SamplerConfig | None = None,
) -> VideoLatents:
    """The offline sampler: every block of ``[B, G, C, h, w]`` inputs through one :class:`Session`."""
    sampler = sampler or SamplerConfig()
    _check_layout("text embeddings", text, TEXT_AXES)
    latents = {"reference": reference, "render": render, "mask": mask}
    for name, tensor in latents.items():
        _check_layout(f"{name} latents", tensor, LATENT_AXES)
    lengths = {name: tensor.shape[1] for name, tensor in latents.items()}
    if len(set(lengths.values())) != 1:
        raise WorldInputError(
            f"latent frame counts differ ({lengths}): the reference, render and mask latents must "
            "cover the same frames"
        )
    frames = reference.shape[1]
    if frames == 0 or frames % sampler.frames_per_block:
        raise WorldInputError(
            f"{frames} latent frames are not a whole number of {sampler.frames_per_block}-frame blocks: "
            "pad or truncate the video to whole blocks"
        )
    session = Session(
        model,
        text,
        latent_height=reference.shape[3],
        latent_width=reference.shape[4],
        noise=noise,
        sampler=sampler,
    )
    step = sampler.frames_per_block
    blocks = [
        session.step(
            reference[:, start : start + step],
            render[:, start : start + step],
            mask[:, start : start + step],
        )
        for start in range(0, frames, step)
    ]
    return torch.cat(blocks, dim=1)
