"""World-model nodes: Initialize World Cache (encode the conditions) and InSpatio World Sampler.

Place in the data flow: Render Condition (``INSPATIO_RENDER``: render, mask and the source video
aligned with the camera path) + CONDITIONING + the Wan VAE → **Initialize World Cache**: the
source video and the render are encoded by the streaming codec built from ComfyUI's VAE object,
the mask is packed into the DiT's 4 mask channels, the prompt is cut or padded to the model's
text length → ``INSPATIO_WORLD_STATE`` →
**InSpatio World Sampler**: the DiT is loaded with a memory estimate that includes the KV cache,
a ``core.world.Session`` caches the text K/V and holds the fixed-capacity KV cache, and every block
is generated (prefill + denoising steps) and decoded as it finishes → LATENT (ComfyUI raw space)
and IMAGE frames. The progress bar advances per denoising step, shows the last frame of each
finished block, and a Cancel is honoured between steps.

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

    from ..core.codec import LatentCodec
    from ..core.render import RenderCondition
    from ..core.types import MaskLatents, RenderLatents, TextEmbeddings, VideoFrames, VideoLatents
    from ..core.world import Session

CATEGORY = "InSpatio/World"
# core.schedule's RELEASED_DENOISING_STEPS and RELEASED_SHIFT, repeated here because widget
# defaults are read at start-up, before the core may be imported (a test keeps them equal).
RELEASED_DENOISING_STEPS = "1000, 750, 500, 250"
RELEASED_SHIFT = 5.0
MIN_SHIFT, MAX_SHIFT = 0.01, 100.0
MAX_BLOCKS = 10_000


@dataclass(frozen=True)
class WorldState:
    """What ``INSPATIO_WORLD_STATE`` carries: every per-run input of the sampler, on the CPU.

    Latents are normalised Wan2.1 ``[1, G, C, h, w]`` with G a whole number of blocks;
    ``valid_frames`` is the number of frames the output is cut back to.
    """

    model: WorldModel
    text: TextEmbeddings
    reference: VideoLatents
    render: RenderLatents
    mask: MaskLatents
    valid_frames: int
    decoder: cf.ManagedModel
    decoder_memory: int

    @property
    def latent_frames(self) -> int:
        return int(self.reference.shape[1])


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
        state = WorldState(
            model=world_model,
            text=text,
            reference=reference,
            render=render_latents,
            mask=mask_latents,
            valid_frames=valid_frames,
            decoder=decoder,
            decoder_memory=decoder_memory,
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
        import torch

        from ..core import attention
        from ..core.codec import to_comfy_latent
        from ..core.schedule import FlowMatchSchedule
        from ..core.world import SamplerConfig, SeededNoise, Session, session_memory_bytes

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
        block = sampler.frames_per_block
        available = world_state.latent_frames // block
        blocks = available if num_blocks == 0 else min(num_blocks, available)
        model = world_state.model
        _, _, _, latent_height, latent_width = world_state.reference.shape

        codec, codec_memory = world_state.decoder, world_state.decoder_memory
        if decoder is not None:
            codec, codec_memory = cf.streaming_codec(node, "decoder", decoder), 0
        memory = session_memory_bytes(
            model.config, latent_height, latent_width, dtype=model.dtype, frames_per_block=block
        )
        device = cf.load_to_device(model.managed, memory + codec_memory, alongside=(codec,))
        attention.set_backend(model.attention_backend)

        steps = len(schedule.denoising_steps)
        bar = cf.progress_bar(blocks * steps)
        with torch.inference_mode(), reported_as(node, "world_state"):
            session = Session(
                model.managed.module,
                world_state.text.to(device),
                latent_height=latent_height,
                latent_width=latent_width,
                noise=SeededNoise(seed),
                sampler=sampler,
            )
            latents, frames = _generate_and_decode(session, codec.module, world_state, blocks, bar)
            del session  # frees the KV cache before the outputs are handed on
        cf.release_memory()
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
