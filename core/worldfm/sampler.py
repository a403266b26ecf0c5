"""The 1- and 2-step WorldFM sampler, image preprocessing and the latent codec boundary.

Place in the data flow: the anchor render (``core/point_render.py``) and the selected reference view
(``bank.py``) are encoded by the host's VAE into ``cond1`` / ``cond2``; the distilled frame model
(``model.py``) is evaluated at t = 999 (and, for 2 steps, again at t = 200 after re-noising); the
clean latent is decoded by the host's VAE and converted to uint8 pixels. :func:`iter_frames` runs
that per target pose (upstream ``step3_render_one`` + ``step4_infer_one``), with the bank's
reference latents encoded once instead of every frame and the noise seeded per frame.

Follows ``modules/worldfm_infer.py`` (``WorldFMTriConditionInprocess.infer_from_render_u8``,
``_preprocess_u8_tensor``, ``_preprocess_pil_to_tensor``) and ``run_pipeline.py`` of
inspatio/worldfm at 8881a7b. The VAE is
whatever the host provides (ComfyUI's SDXL-style AutoencoderKL), reached only through
:class:`ImageCodec`, so this module never loads one.

The network output is used as a *v*-prediction although upstream calls it ``eps``:
``x0 = a·x_t − s·v`` for ``x_t = a·x0 + s·ε`` (the epsilon formula is off by ~700).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Annotated

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image as PILImage
from torch import Tensor

from ..camera import check_intrinsics, check_rigid
from ..point_render import render_points_hard
from ..types import Intrinsics, WorldToCamera
from .bank import ReferenceLatentCache, WorldFMScene
from .model import VAE_STRIDE, FrameLatents, WorldFMModel
from .selector import RELEASED_SELECTION, Selection, SelectionParams, select_reference

ImageU8 = Annotated[Tensor, "H W 3 uint8 RGB"]
FramesU8 = Annotated[Tensor, "B H W 3 uint8 RGB"]
ModelPixels = Annotated[Tensor, "B 3 H W float, [-1, 1] (may overshoot after bicubic resize)"]
RawLatents = Annotated[Tensor, "B 4 h w VAE latents before the scale factor"]

NUM_TRAIN_TIMESTEPS = 1000
BETA_START = 1e-4
BETA_END = 0.02
#: Timesteps of the distilled samplers: one call at 999, or 999 then 200 (``mid_t``).
STEP_TIMESTEPS = {1: (999,), 2: (999, 200)}
#: The SDXL VAE scale factor, upstream's fallback when the VAE config has none.
SDXL_LATENT_SCALE = 0.13025
#: Channels 0-3 are the prediction; 4-7 are the unused learned-variance head.
PREDICTION_CHANNELS = 4
#: Output pixels: clamp(127.5·x + 128, 0, 255) then truncation (run_pipeline.py).
PIXEL_HALF_RANGE = 127.5
PIXEL_OFFSET = 128.0
U8_MAX = 255.0
#: Model pixels are (x − 0.5) / 0.5 of [0, 1] pixels (torchvision Normalize(0.5, 0.5)).
UNIT_TO_SIGNED = 0.5


class WorldFMSamplerError(ValueError):
    """A sampler input that cannot be used, with what to change."""


@dataclass(frozen=True)
class ImageCodec:
    """The host's image VAE: pixels in [-1, 1] ``[B, 3, H, W]`` <-> raw latents ``[B, 4, h, w]``.

    ``scale`` multiplies encoded latents before they reach the model, and divides the sample
    before decoding (``scaling_factor`` of the VAE config; 0.13025 for the SDXL VAE). Upstream
    encodes with ``latent_dist.sample()``; an adapter may return the mean or a sample. Pixels
    may arrive on any device (references are prepared on the CPU); the codec places them.
    """

    encode: Callable[[ModelPixels], RawLatents]
    decode: Callable[[RawLatents], ModelPixels]
    scale: float = SDXL_LATENT_SCALE


@dataclass(frozen=True)
class FrameNoise:
    """The noise of one frame: the initial latent and one re-noising draw per later step."""

    initial: FrameLatents
    renoise: tuple[FrameLatents, ...] = ()


def alphas_cumprod() -> Annotated[Tensor, "1000 float64"]:
    """ᾱ_t of the linear β schedule (1e-4 -> 0.02 over 1000 steps), in float64."""
    # numpy's linspace (start + i·step, last value set to the end), which upstream uses;
    # torch.linspace rounds differently in the last bit.
    step = (BETA_END - BETA_START) / (NUM_TRAIN_TIMESTEPS - 1)
    betas = torch.arange(NUM_TRAIN_TIMESTEPS, dtype=torch.float64) * step + BETA_START
    betas[-1] = BETA_END
    return torch.cumprod(1.0 - betas, dim=0)


def signal_and_noise_scales(timestep: int) -> tuple[Tensor, Tensor]:
    """(a_t, s_t) = (ᾱ_t^0.5, (1 − ᾱ_t)^0.5), formed in float32 from ᾱ_t cast to float32."""
    alpha_bar = alphas_cumprod()[timestep].to(torch.float32)
    return alpha_bar**0.5, (1.0 - alpha_bar) ** 0.5


def frame_generator(seed: int, frame_index: int) -> torch.Generator:
    """A CPU generator private to one frame of a seeded sequence.

    Derived from (seed, frame index) by hashing, so a sequence is reproducible from its seed and
    any single frame can be regenerated alone, on any device.
    """
    digest = hashlib.sha256(f"worldfm:{seed}:{frame_index}".encode()).digest()
    return torch.Generator(device="cpu").manual_seed(int.from_bytes(digest[:8], "little") >> 1)


def frame_noise(
    seed: int, frame_index: int, latent_shape: tuple[int, ...], steps: int
) -> FrameNoise:
    """The initial noise and re-noising draws of frame ``frame_index`` (float32, CPU)."""
    timesteps = _timesteps(steps)
    generator = frame_generator(seed, frame_index)
    draws = [torch.randn(latent_shape, generator=generator) for _ in timesteps]
    return FrameNoise(initial=draws[0], renoise=tuple(draws[1:]))


@torch.no_grad()
def sample_latent(
    model: WorldFMModel,
    render_latent: FrameLatents,
    reference_latent: FrameLatents,
    noise: FrameNoise,
    steps: int,
) -> FrameLatents:
    """The clean target latent (scaled latent space) after 1 or 2 distilled steps."""
    timesteps = _timesteps(steps)
    if len(noise.renoise) != len(timesteps) - 1:
        raise WorldFMSamplerError(
            f"a {steps}-step sample needs {len(timesteps) - 1} re-noising tensors, got "
            f"{len(noise.renoise)}: build the noise with frame_noise(..., steps={steps})"
        )
    device, dtype = render_latent.device, render_latent.dtype
    # The model runs in its own dtype (float16 on CUDA upstream); the sampler arithmetic is
    # float32, and only the next model input and the result are cast back, as upstream does.
    latent = noise.initial.to(device=device, dtype=dtype)
    batch = latent.shape[0]
    for step, timestep in enumerate(timesteps):
        t = torch.full((batch,), timestep, dtype=torch.int64, device=device)
        velocity = model(latent, t, render_latent, reference_latent)[:, :PREDICTION_CHANNELS]
        signal, noise_scale = (value.to(device) for value in signal_and_noise_scales(timestep))
        clean = signal * latent.to(torch.float32) - noise_scale * velocity.to(torch.float32)
        if step + 1 < len(timesteps):
            next_timestep = timesteps[step + 1]
            next_signal, next_noise = (
                value.to(device) for value in signal_and_noise_scales(next_timestep)
            )
            renoise = noise.renoise[step].to(device=device, dtype=torch.float32)
            latent = (next_signal * clean + next_noise * renoise).to(dtype)
    return clean.to(dtype)


def preprocess_u8(
    image: ImageU8, target_height: int, target_width: int
) -> Annotated[Tensor, "3 H W"]:
    """Upstream ``_preprocess_u8_tensor``: cover-resize (bicubic), centre crop, map to [-1, 1].

    The resize keeps the aspect ratio with scale max(th/H, tw/W) and sizes rounded half to even
    (Python ``round``); bicubic without antialias and without clamping, so values may overshoot
    [-1, 1] exactly as upstream's do.
    """
    if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != torch.uint8:
        raise WorldFMSamplerError(
            f"expected an RGB uint8 image [H, W, 3], got {tuple(image.shape)} {image.dtype}"
        )
    height, width = image.shape[:2]
    pixels = image.permute(2, 0, 1)[None].to(torch.float32) / U8_MAX
    factor = max(target_height / height, target_width / width)
    resized_height, resized_width = round(height * factor), round(width * factor)
    if (resized_height, resized_width) != (height, width):
        pixels = F.interpolate(
            pixels, size=(resized_height, resized_width), mode="bicubic", align_corners=False
        )
    top, left = (resized_height - target_height) // 2, (resized_width - target_width) // 2
    cropped = pixels[0, :, top : top + target_height, left : left + target_width]
    return (cropped - UNIT_TO_SIGNED) / UNIT_TO_SIGNED


def preprocess_reference(
    image: ImageU8, target_height: int, target_width: int
) -> Annotated[Tensor, "3 H W"]:
    """Upstream ``_preprocess_pil_to_tensor`` for the reference view (``cond2``).

    A different resampler from the render path: PIL bicubic (antialiased) cover-resize, then
    torchvision's centre crop, whose offsets are rounded (half to even) rather than floored.
    A same-size resize is a copy in PIL, so a reference already at the image size is untouched.
    """
    if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != torch.uint8:
        raise WorldFMSamplerError(
            f"expected an RGB uint8 image [H, W, 3], got {tuple(image.shape)} {image.dtype}"
        )
    height, width = image.shape[:2]
    factor = max(target_height / height, target_width / width)
    resized_height, resized_width = round(height * factor), round(width * factor)
    picture = PILImage.fromarray(image.cpu().numpy())
    picture = picture.resize((resized_width, resized_height), PILImage.BICUBIC)
    top = round((resized_height - target_height) / 2)
    left = round((resized_width - target_width) / 2)
    picture = picture.crop((left, top, left + target_width, top + target_height))
    pixels = torch.from_numpy(np.asarray(picture).copy()).permute(2, 0, 1).to(torch.float32)
    return (pixels / U8_MAX - UNIT_TO_SIGNED) / UNIT_TO_SIGNED


def encode_image(codec: ImageCodec, image: ImageU8, image_size: int) -> FrameLatents:
    """The model-space latent (VAE latent × scale) of an anchor render at image_size²."""
    pixels = preprocess_u8(image, image_size, image_size)[None]
    return codec.encode(pixels) * codec.scale


def encode_reference(codec: ImageCodec, image: ImageU8, image_size: int) -> FrameLatents:
    """The model-space latent of a reference view at image_size² (the PIL path upstream uses)."""
    pixels = preprocess_reference(image, image_size, image_size)[None]
    return codec.encode(pixels) * codec.scale


def decode_to_u8(codec: ImageCodec, latent: FrameLatents) -> FramesU8:
    """Decoded frames as uint8 [B, H, W, 3]: clamp(127.5·x + 128, 0, 255), truncated."""
    pixels = codec.decode(latent / codec.scale)
    values = (PIXEL_HALF_RANGE * pixels.to(torch.float32) + PIXEL_OFFSET).clamp(0.0, U8_MAX)
    return values.to(torch.uint8).permute(0, 2, 3, 1)


def generate_frame(
    model: WorldFMModel,
    codec: ImageCodec,
    render: ImageU8,
    reference_latent: FrameLatents,
    *,
    seed: int,
    frame_index: int,
    steps: int = 2,
) -> FramesU8:
    """One output frame from its anchor render and the (cached) reference latent.

    The render is brought to the model's image size (input_size · 8, 512 for the release) as
    upstream does. Each frame is independent; its noise comes from (seed, frame_index) only.
    """
    image_size = model.config.input_size * VAE_STRIDE
    render_latent = encode_image(codec, render, image_size).to(reference_latent)
    noise = frame_noise(seed, frame_index, tuple(reference_latent.shape), steps)
    return decode_to_u8(codec, sample_latent(model, render_latent, reference_latent, noise, steps))


def _timesteps(steps: int) -> tuple[int, ...]:
    if steps not in STEP_TIMESTEPS:
        raise WorldFMSamplerError(
            f"steps must be one of {sorted(STEP_TIMESTEPS)} (the distilled WorldFM checkpoints), "
            f"got {steps}: use 1 with worldfm_1-step and 2 with worldfm_2-step"
        )
    return STEP_TIMESTEPS[steps]


def iter_frames(
    model: WorldFMModel,
    codec: ImageCodec,
    scene: WorldFMScene,
    intrinsics: Intrinsics,
    world_to_camera: WorldToCamera,
    *,
    seed: int,
    steps: int = 2,
    selection: SelectionParams = RELEASED_SELECTION,
    references: ReferenceLatentCache | None = None,
) -> Iterator[tuple[int, FramesU8, Selection]]:
    """Frame by frame: anchor render, reference selection, generation -> (index, frame, choice).

    ``intrinsics`` is the target K for the render canvas (used as given, as upstream);
    ``world_to_camera`` is [T, 4, 4] canonical Tcw. Pass a ``references`` cache to reuse the
    encoded bank views across calls on the same scene and codec.
    """
    check_intrinsics(intrinsics, "target intrinsics")
    check_rigid(world_to_camera, "target world_to_camera")
    image_size = model.config.input_size * VAE_STRIDE
    if references is None:
        references = ReferenceLatentCache(
            scene.bank, scene.render_size, lambda image: encode_reference(codec, image, image_size)
        )
    size = scene.render_size
    for index, pose in enumerate(world_to_camera.reshape(-1, 4, 4)):
        render, depth = render_points_hard(scene.cloud, intrinsics, pose, size, size)
        chosen = select_reference(scene.database, depth[0], intrinsics, pose, selection)
        frame = generate_frame(
            model,
            codec,
            render[0],
            references[chosen.best],
            seed=seed,
            frame_index=index,
            steps=steps,
        )
        yield index, frame, chosen
