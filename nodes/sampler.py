"""World-model nodes: Initialize World Cache (encode the conditions, allocate the KV cache) and
InSpatio World Sampler.

Place in the data flow: Render Condition (``INSPATIO_RENDER``: render, mask and the source video
aligned with the camera path) + CONDITIONING + the Wan VAE → **Initialize World Cache**: the
source video and the render are encoded by the streaming codec built from ComfyUI's VAE object,
the mask is packed into the DiT's 4 mask channels, the prompt is cut or padded to the model's
text length; the DiT is loaded with a memory estimate that includes the KV cache, and
``core.world.prepare_cache`` allocates the fixed-capacity KV cache and computes the text K/V once
→ ``INSPATIO_WORLD_STATE`` →
**InSpatio World Sampler**: a ``core.world.Session`` on that cache generates every block
(prefill + denoising steps), each decoded as it finishes → LATENT (ComfyUI raw space) and IMAGE
frames. The progress bar advances per denoising step, shows the last frame of each finished
block, and a Cancel is honoured between steps.

ComfyUI keeps node outputs alive between prompts (COMFYUI.md §13.5), so the cache rides in the
state inside a mutable :class:`CacheHolder` that the sampler releases when it ends (success,
error or cancel). A later run on the same cached state (a new seed) prepares the cache again.

The frame-count policy is v1.5's: the run is padded to whole blocks by repeating the last frame
(``core/scene.py``), and the frames are cut back to the render's count. The per-block loop
follows ``pipeline/causal_inference.py`` through ``core/world.py``; this module only moves data
between the codec, the session and ComfyUI.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import comfy as cf
from .errors import reported_as
from .loaders import CODEC_OR_VAE, WorldModel

if TYPE_CHECKING:
    import torch

    from ..core.cache import SpatiotemporalCache
    from ..core.codec import LatentCodec
    from ..core.render import RenderCondition
    from ..core.types import MaskLatents, RenderLatents, TextEmbeddings, VideoFrames, VideoLatents
    from ..core.world import SamplerConfig, Session

CATEGORY = "InSpatio/World"
# core.schedule's RELEASED_DENOISING_STEPS and RELEASED_SHIFT, repeated here because widget
# defaults are read at start-up, before the core may be imported (a test keeps them equal).
RELEASED_DENOISING_STEPS = "1000, 750, 500, 250"
RELEASED_SHIFT = 5.0
MIN_SHIFT, MAX_SHIFT = 0.01, 100.0
MAX_BLOCKS = 10_000


class CacheHolder:
    """The KV cache of a world state, on the compute device, until a sampler run releases it.

    Mutable on purpose inside the frozen :class:`WorldState`: ComfyUI caches the state between
    prompts, and the device buffers must not stay alive with it.
    """

    def __init__(self, cache: SpatiotemporalCache | None = None) -> None:
        self.cache = cache

    def release(self) -> None:
        """Free the buffers now (even if a traceback still refers to the cache) and forget them."""
        if self.cache is not None:
            self.cache.release()
        self.cache = None


@dataclass(frozen=True)
class WorldState:
    """What ``INSPATIO_WORLD_STATE`` carries: every per-run input of the sampler.

    Latents and text are on the CPU, normalised Wan2.1 ``[1, G, C, h, w]`` with G a whole number of
    blocks; ``valid_frames`` is the number of frames the output is cut back to; ``cache`` holds the
    prepared KV cache on the device until the next sampler run ends.
    """

    model: WorldModel
    text: TextEmbeddings
    reference: VideoLatents
    render: RenderLatents
    mask: MaskLatents
    valid_frames: int
    decoder: cf.ManagedModel
    decoder_memory: int
    cache: CacheHolder

    @property
    def latent_frames(self) -> int:
        return int(self.reference.shape[1])

    @property
    def latent_size(self) -> tuple[int, int]:
        height, width = self.reference.shape[-2:]
        return int(height), int(width)


def _load_world_model(
    model: WorldModel,
    latent_size: tuple[int, int],
    codec: cf.ManagedModel,
    codec_memory: int,
) -> None:
    """Load the DiT beside the codec, with room for the KV cache, the text K/V and the codec's
    activations; select the model's attention backend."""
    from ..core import attention
    from ..core.world import session_memory_bytes

    memory = session_memory_bytes(model.config, *latent_size, dtype=model.dtype)
    cf.load_to_device(model.managed, memory + codec_memory, alongside=(codec,))
    attention.set_backend(model.attention_backend)


def _prepare_cache(
    model: WorldModel,
    text: TextEmbeddings,
    latent_size: tuple[int, int],
    sampler: SamplerConfig | None = None,
) -> SpatiotemporalCache:
    """The run's KV cache with the prompt's text K/V, on the loaded model's device."""
    from ..core.world import prepare_cache

    height, width = latent_size
    return prepare_cache(
        model.managed.module, text, latent_height=height, latent_width=width, sampler=sampler
    )


def _encode_stream(
    codec: Any,
    frames: VideoFrames,
    chunks: list[list[int]],
    device: torch.device,
    bar: cf.ProgressBar,
) -> VideoLatents:
    """Encode the padded video block by block through one codec stream (CPU latents)."""
    import torch

    state = codec.new_state()
    latents = []
    for block in chunks:
        cf.check_interrupted()
        chunk = frames[torch.tensor(block)].to(device)
        latents.append(codec.encode(chunk[None], state).float().cpu())
        bar.update()
    return torch.cat(latents, dim=1)


class InSpatioWorldCacheInit:
    NODE = "Initialize World Cache"
    CATEGORY = CATEGORY
    DESCRIPTION = (
        "Encodes the source video and the render with the Wan VAE, packs the mask and the "
        "prompt: everything the world sampler needs, computed once."
    )
    RETURN_TYPES = ("INSPATIO_WORLD_STATE",)
    RETURN_NAMES = ("world_state",)
    OUTPUT_TOOLTIPS = ("The encoded conditions, for InSpatio World Sampler.",)
    FUNCTION = "initialize"

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                "world_model": (
                    "INSPATIO_WORLD_MODEL",
                    {"tooltip": "From Load InSpatio-World Model."},
                ),
                "vae": (
                    "VAE",
                    {"tooltip": "The Wan2.1 VAE (Load VAE with wan_2.1_vae.safetensors)."},
                ),
                "positive": (
                    "CONDITIONING",
                    {
                        "tooltip": "The prompt, from CLIPTextEncode with a Wan (umT5) text encoder.",
                    },
                ),
                "condition": (
                    "INSPATIO_RENDER",
                    {
                        "tooltip": "From Render Condition: the render, its mask and the aligned source video.",
                    },
                ),
            }
        }

    def initialize(
        self, world_model: WorldModel, vae: Any, positive: list, condition: RenderCondition
    ) -> tuple[WorldState]:
        import torch

        from ..core.frame_counts import block_frame_indices, padded_frame_indices
        from ..core.splat import pack_mask_latents

        node = self.NODE
        config = world_model.config
        text = cf.conditioning_to_text_embeddings(
            node, "positive", positive, config.text_len, config.text_dim
        )
        valid_frames = condition.num_frames
        blocks = block_frame_indices(valid_frames)
        height, width = condition.render.shape[-2:]
        decoder = cf.vae_codec(node, "vae", vae)
        decoder_memory = cf.vae_working_memory(vae, height, width)
        device = cf.load_to_device(decoder, decoder_memory)
        bar = cf.progress_bar(2 * len(blocks))
        with torch.inference_mode(), reported_as(node, "condition"):
            reference = _encode_stream(decoder.module, condition.source_frames, blocks, device, bar)
            render_latents = _encode_stream(decoder.module, condition.render, blocks, device, bar)
            padded_mask = condition.mask[torch.tensor(padded_frame_indices(valid_frames)), 0]
            mask_latents = pack_mask_latents(padded_mask * 2.0 - 1.0)  # known +1, hole -1
        latent_size = (int(reference.shape[-2]), int(reference.shape[-1]))
        _load_world_model(world_model, latent_size, decoder, decoder_memory)
        with torch.inference_mode(), reported_as(node, "positive"):
            cache = _prepare_cache(world_model, text, latent_size)
        state = WorldState(
            model=world_model,
            text=text,
            reference=reference,
            render=render_latents,
            mask=mask_latents,
            valid_frames=valid_frames,
            decoder=decoder,
            decoder_memory=decoder_memory,
            cache=CacheHolder(cache),
        )
        return (state,)


def parse_denoising_steps(node: str, text: str) -> tuple[int, ...]:
    """``"1000, 750, 500, 250"`` → ``(1000, 750, 500, 250)``, with an error naming the widget."""
    try:
        steps = tuple(int(value) for value in text.replace(",", " ").split())
    except ValueError:
        steps = ()
    if not steps:
        raise cf.NodeInputError(
            node,
            "denoising_steps",
            f"is {text!r}; give comma-separated timesteps in 1..1000 such as {RELEASED_DENOISING_STEPS!r}",
        )
    return steps


class InSpatioWorldSampler:
    NODE = "InSpatio World Sampler"
    CATEGORY = CATEGORY
    DESCRIPTION = (
        "Generates the video block by block (3 latent frames each) with the causal DiT and its KV "
        "cache, and decodes each block as it finishes."
    )
    RETURN_TYPES = ("LATENT", "IMAGE")
    RETURN_NAMES = ("latent", "frames")
    OUTPUT_TOOLTIPS = (
        "Generated latents in ComfyUI's raw Wan2.1 space (core VAE Decode works), whole blocks.",
        "Decoded frames, cut to the render's frame count.",
    )
    FUNCTION = "sample"

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                "world_state": (
                    "INSPATIO_WORLD_STATE",
                    {"tooltip": "From Initialize World Cache."},
                ),
                "seed": (
                    "INT",
                    {
                        "default": 0,
                        "min": 0,
                        "max": cf.MAX_SEED,
                        "control_after_generate": True,
                        "tooltip": "Seed of the noise; the same inputs and seed give the same video.",
                    },
                ),
                "denoising_steps": (
                    "STRING",
                    {
                        "default": RELEASED_DENOISING_STEPS,
                        "tooltip": "Timesteps before the shift warp; the release was distilled for "
                        "1000, 750, 500, 250.",
                    },
                ),
                "shift": (
                    "FLOAT",
                    {
                        "default": RELEASED_SHIFT,
                        "min": MIN_SHIFT,
                        "max": MAX_SHIFT,
                        "step": 0.01,
                        "tooltip": "Timestep shift of the flow-matching schedule (5 in the release).",
                    },
                ),
                "num_blocks": (
                    "INT",
                    {
                        "default": 0,
                        "min": 0,
                        "max": MAX_BLOCKS,
                        "tooltip": "Blocks to generate (3 latent frames, 12 video frames each); 0 or "
                        "more than the video has = all.",
                    },
                ),
            },
            "optional": {
                "decoder": (
                    CODEC_OR_VAE,
                    {
                        "tooltip": "Decoder for the frames: the Wan VAE (default: the cache's VAE) or "
                        "TAEHV (Load TAEHV), about 20× cheaper.",
                    },
                ),
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, denoising_steps: str) -> bool | str:
        try:
            parse_denoising_steps(cls.NODE, denoising_steps)
        except cf.NodeInputError as error:
            return str(error)
        return True

    def sample(
        self,
        world_state: WorldState,
        seed: int,
        denoising_steps: str,
        shift: float,
        num_blocks: int,
        decoder: Any = None,
    ) -> tuple[dict, torch.Tensor]:
        try:
            return self._sample(world_state, seed, denoising_steps, shift, num_blocks, decoder)
        finally:
            # Whatever the outcome (a widget refused, an error, a Cancel), no device buffers stay
            # alive in ComfyUI's output cache.
            world_state.cache.release()
            cf.release_memory()

    def _sample(
        self,
        world_state: WorldState,
        seed: int,
        denoising_steps: str,
        shift: float,
        num_blocks: int,
        decoder: Any,
    ) -> tuple[dict, torch.Tensor]:
        import torch

        from ..core.codec import to_comfy_latent
        from ..core.schedule import FlowMatchSchedule
        from ..core.world import SamplerConfig, SeededNoise, Session, cache_mismatch

        node = self.NODE
        if num_blocks < 0:
            raise cf.NodeInputError(
                node, "num_blocks", f"is {num_blocks}; use 0 for all blocks or a positive count"
            )
        if not shift > 0:
            raise cf.NodeInputError(
                node, "shift", f"is {shift}; the timestep shift must be positive (5 in the release)"
            )
        with reported_as(node, "denoising_steps"):
            schedule = FlowMatchSchedule(
                denoising_steps=parse_denoising_steps(node, denoising_steps), shift=shift
            )
        sampler = SamplerConfig(schedule=schedule)
        available = world_state.latent_frames // sampler.frames_per_block
        blocks = available if num_blocks == 0 else min(num_blocks, available)
        model = world_state.model
        latent_height, latent_width = world_state.latent_size

        codec, codec_memory = world_state.decoder, world_state.decoder_memory
        if decoder is not None:
            codec, codec_memory = cf.streaming_codec(node, "decoder", decoder), 0
        _load_world_model(model, world_state.latent_size, codec, codec_memory)

        steps = len(schedule.denoising_steps)
        bar = cf.progress_bar(blocks * steps)
        holder = world_state.cache
        with torch.inference_mode(), reported_as(node, "world_state"):
            if holder.cache is None or cache_mismatch(
                holder.cache,
                model.managed.module,
                batch=world_state.text.shape[0],
                latent_height=latent_height,
                latent_width=latent_width,
                sampler=sampler,
            ):
                # Released by an earlier run on this (host-cached) state, or prepared for a device
                # the model has left: prepare it again, text K/V included.
                holder.release()
                holder.cache = _prepare_cache(
                    model, world_state.text, world_state.latent_size, sampler
                )
            session = Session(
                model.managed.module,
                world_state.text,
                latent_height=latent_height,
                latent_width=latent_width,
                noise=SeededNoise(seed),
                sampler=sampler,
                cache=holder.cache,
            )
            latents, frames = _generate_and_decode(session, codec.module, world_state, blocks, bar)
        raw = to_comfy_latent(latents)
        image = cf.frames_to_image(frames[: world_state.valid_frames])
        return (cf.latent_output(raw), image)


def _generate_and_decode(
    session: Session, codec: LatentCodec, world_state: WorldState, blocks: int, bar: cf.ProgressBar
) -> tuple[VideoLatents, VideoFrames]:
    """The first ``blocks`` blocks of the session, each decoded as soon as it is generated (one
    decoder stream, so the frames equal one decode of all latents); CPU latents and frames."""
    import torch

    def step_done(_: int) -> None:
        bar.update()
        cf.check_interrupted()  # between denoising steps; the session stays at the last block

    block = session.sampler.frames_per_block
    decode_state = codec.new_state()
    latents, frames = [], []
    for index in range(blocks):
        window = slice(index * block, (index + 1) * block)
        clean = session.step(
            world_state.reference[:, window],
            world_state.render[:, window],
            world_state.mask[:, window],
            on_step=step_done,
        )
        block_frames = codec.decode(clean, decode_state)[0].float().cpu()
        latents.append(clean.float().cpu())
        frames.append(block_frames)
        bar.update(0, preview=cf.frames_to_image(block_frames[-1:])[0])
    return torch.cat(latents, dim=1), torch.cat(frames)


NODE_CLASSES = (InSpatioWorldCacheInit, InSpatioWorldSampler)
NODE_CLASS_MAPPINGS = {node.__name__: node for node in NODE_CLASSES}
NODE_DISPLAY_NAME_MAPPINGS = {node.__name__: node.NODE for node in NODE_CLASSES}
