"""The InSpatio-WorldFM frame model: a PixArt-Σ DiT over a three-panel latent strip.

Place in the data flow: the 1/2-step sampler (``sampler.py``) calls :class:`WorldFMModel` with
the noisy target latent, the latent of the point-cloud render (``cond1``) and the latent of the
selected reference view (``cond2``). The three are placed side by side in width,
``[noisy | render | reference]``, patchified into one token strip and processed by PixArt-Σ blocks
with full joint self-attention; the prediction for the target panel is returned.

Follows ``worldfm/diffusion/model/nets/PixArtWorldFMMS.py`` (``PixArtWorldFMMS``, tri-condition
branch, ``disable_cross_attn=True``) of inspatio/worldfm at 8881a7b. Parameter names equal the
released state-dict keys, so the checkpoint loads strictly on every tensor the model uses
(:func:`load_worldfm`, reading through ``core/wan/checkpoints.read_weights``).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated

import torch
import torch.nn.functional as F
from einops import rearrange
from safetensors.torch import save_file
from torch import Tensor, nn

from ..types import TimeEmbedding, Tokens
from ..wan.checkpoints import CheckpointError, read_weights

FrameLatents = Annotated[Tensor, "B 4 h w SDXL-VAE latents already multiplied by the VAE scale"]
ModelOutput = Annotated[Tensor, "B out_channels h w target panel (channels 0-3: v-prediction)"]
Timesteps = Annotated[Tensor, "B int64 DDPM timestep in [0, 999]"]
PositionTable = Annotated[Tensor, "N D float32 fixed 2D sin-cos table"]

#: The strip is [noisy target | point-cloud render | reference view] along the width.
PANELS = 3
#: Working memory of a forward pass, in elements: attention scores per head and token pair (the
#: math attention backend materialises them, with their softmax) and MLP activations per token
#: and hidden unit.
ATTENTION_SCORE_COPIES = 2
MLP_ACTIVATION_COPIES = 4
#: Width of the sinusoidal timestep features, independent of the model width (PixArt).
TIMESTEP_FREQUENCY_DIM = 256
MAX_PERIOD = 10000.0
#: Six modulation vectors per block: shift/scale/gate for attention, then for the MLP.
BLOCK_MODULATIONS = 6
FINAL_MODULATIONS = 2
LAYER_NORM_EPS = 1e-6
#: pe_interpolation of the service is image_size / 512 and image_size = 8 · latent size.
VAE_STRIDE = 8
PE_REFERENCE_IMAGE_SIZE = 512


@dataclass(frozen=True)
class WorldFMConfig:
    """Sizes of a PixArt-Σ WorldFM model. Defaults: the released XL/2 at 512 px.

    input_size: latent side the model was built for (image_size / 8); it fixes the base grid of
    the positional embedding (input_size / patch_size), not the size of the inputs.
    pe_interpolation: divisor of the positional-embedding coordinates (image_size / 512).
    out_channels: 8 for the released ``pred_sigma`` head; only the first 4 are a prediction.
    """

    depth: int = 28
    hidden_size: int = 1152
    num_heads: int = 16
    patch_size: int = 2
    in_channels: int = 4
    out_channels: int = 8
    mlp_hidden: int = 4608
    input_size: int = 64
    pe_interpolation: float = 1.0

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"WorldFMConfig: hidden_size {self.hidden_size} is not divisible by num_heads "
                f"{self.num_heads}; pick a head count that divides the width"
            )
        if self.hidden_size % 4:
            raise ValueError(
                f"WorldFMConfig: hidden_size {self.hidden_size} must be a multiple of 4 for the "
                "2D sin-cos positional embedding"
            )

    @property
    def base_size(self) -> int:
        return self.input_size // self.patch_size

    @classmethod
    def for_latent_size(cls, input_size: int, **sizes: int) -> WorldFMConfig:
        """A config whose pe_interpolation follows the service rule image_size / 512."""
        return cls(
            input_size=input_size,
            pe_interpolation=input_size * VAE_STRIDE / PE_REFERENCE_IMAGE_SIZE,
            **sizes,
        )


#: The released model: XL/2 at 512 px (64×64 latents).
DEFAULT_CONFIG = WorldFMConfig()


def sincos_position_table(
    hidden_size: int, rows: int, columns: int, base_size: int, pe_interpolation: float
) -> PositionTable:
    """PixArt's fixed 2D sin-cos table for a rows×columns token grid, squeezed into base_size.

    Each axis is scaled to the square base grid: a 3-panel strip of 3·rows columns puts column
    c at c/3, so the three panels share one coordinate range and do not restart at 0. The
    coordinates are float32 with a rounding after each division (upstream numpy arithmetic);
    the sines are taken in float64 and the table is cast to float32. Layout per token:
    [sin(col·ω), cos(col·ω), sin(row·ω), cos(row·ω)], each hidden_size/4 wide.
    """

    def coordinates(count: int) -> Tensor:
        positions = torch.arange(count, dtype=torch.float32)
        # Tensor divisors keep true float32 division (a Python scalar may become a reciprocal).
        positions = positions / torch.tensor(count / base_size, dtype=torch.float32)
        return positions / torch.tensor(pe_interpolation, dtype=torch.float32)

    quarter = hidden_size // 4
    frequencies = 1.0 / MAX_PERIOD ** (torch.arange(quarter, dtype=torch.float64) / quarter)

    def embed(positions: Tensor) -> Tensor:
        angles = positions.to(torch.float64)[:, None] * frequencies[None]
        return torch.cat([angles.sin(), angles.cos()], dim=-1)

    column_table = embed(coordinates(columns))  # [columns, D/2]
    row_table = embed(coordinates(rows))  # [rows, D/2]
    table = torch.cat(
        [
            column_table[None].expand(rows, columns, -1),
            row_table[:, None].expand(rows, columns, -1),
        ],
        dim=-1,
    )
    return rearrange(table, "r c d -> (r c) d").to(torch.float32)


def timestep_frequencies(timesteps: Timesteps) -> Annotated[Tensor, "B 256 [cos | sin]"]:
    """Sinusoidal timestep features, cos first, formed in float32 as upstream does."""
    half = TIMESTEP_FREQUENCY_DIM // 2
    exponents = -math.log(MAX_PERIOD) * torch.arange(
        half, dtype=torch.float32, device=timesteps.device
    )
    frequencies = torch.exp(exponents / half)
    angles = timesteps.to(torch.float32)[:, None] * frequencies[None]
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)


def modulate(tokens: Tokens, shift: Tensor, scale: Tensor) -> Tokens:
    return tokens * (1 + scale) + shift


class PatchEmbed(nn.Module):
    def __init__(self, config: WorldFMConfig) -> None:
        super().__init__()
        self.proj = nn.Conv2d(
            config.in_channels,
            config.hidden_size,
            kernel_size=config.patch_size,
            stride=config.patch_size,
        )

    def forward(self, strip: Tensor) -> Tokens:
        return rearrange(self.proj(strip), "b d h w -> b (h w) d")


class TimestepEmbedder(nn.Module):
    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(TIMESTEP_FREQUENCY_DIM, hidden_size),
            nn.SiLU(),
            nn.Linear(hidden_size, hidden_size),
        )

    def forward(self, timesteps: Timesteps) -> TimeEmbedding:
        dtype = self.mlp[0].weight.dtype
        # Upstream casts t to the model dtype first: in bfloat16, t = 999 becomes 1000.
        features = timestep_frequencies(timesteps.to(dtype)).to(dtype)
        return self.mlp(features)


class SelfAttention(nn.Module):
    def __init__(self, hidden_size: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(hidden_size, 3 * hidden_size)
        self.proj = nn.Linear(hidden_size, hidden_size)

    def forward(self, tokens: Tokens) -> Tokens:
        q, k, v = rearrange(
            self.qkv(tokens), "b n (three hd dh) -> three b hd n dh", three=3, hd=self.num_heads
        )
        # Bidirectional over all three panels: no mask, no RoPE, no qk-norm.
        attended = F.scaled_dot_product_attention(q, k, v)
        return self.proj(rearrange(attended, "b hd n dh -> b n (hd dh)"))


class Mlp(nn.Module):
    def __init__(self, hidden_size: int, mlp_hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(hidden_size, mlp_hidden)
        self.fc2 = nn.Linear(mlp_hidden, hidden_size)

    def forward(self, tokens: Tokens) -> Tokens:
        return self.fc2(F.gelu(self.fc1(tokens), approximate="tanh"))


class WorldFMBlock(nn.Module):
    """PixArt-Σ block with adaLN-single modulation; the cross-attention is disabled upstream."""

    def __init__(self, config: WorldFMConfig) -> None:
        super().__init__()
        self.attn = SelfAttention(config.hidden_size, config.num_heads)
        self.mlp = Mlp(config.hidden_size, config.mlp_hidden)
        self.scale_shift_table = nn.Parameter(torch.zeros(BLOCK_MODULATIONS, config.hidden_size))

    def forward(self, tokens: Tokens, shared_modulation: Tensor) -> Tokens:
        modulation = self.scale_shift_table[None] + rearrange(
            shared_modulation, "b (six d) -> b six d", six=BLOCK_MODULATIONS
        )
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = modulation[
            :, :, None
        ].unbind(1)
        normalised = F.layer_norm(tokens, tokens.shape[-1:], eps=LAYER_NORM_EPS)
        tokens = tokens + gate_msa * self.attn(modulate(normalised, shift_msa, scale_msa))
        normalised = F.layer_norm(tokens, tokens.shape[-1:], eps=LAYER_NORM_EPS)
        return tokens + gate_mlp * self.mlp(modulate(normalised, shift_mlp, scale_mlp))


class FinalLayer(nn.Module):
    """T2IFinalLayer: modulated by the timestep embedding itself (temb), not by t_block's output."""

    def __init__(self, config: WorldFMConfig) -> None:
        super().__init__()
        self.linear = nn.Linear(config.hidden_size, config.patch_size**2 * config.out_channels)
        self.scale_shift_table = nn.Parameter(torch.zeros(FINAL_MODULATIONS, config.hidden_size))

    def forward(self, tokens: Tokens, time_embedding: TimeEmbedding) -> Tensor:
        shift, scale = (self.scale_shift_table[None] + time_embedding[:, None])[:, :, None].unbind(
            1
        )
        normalised = F.layer_norm(tokens, tokens.shape[-1:], eps=LAYER_NORM_EPS)
        return self.linear(modulate(normalised, shift, scale))


class WorldFMModel(nn.Module):
    """PixArt-Σ tri-condition frame model; attribute names equal the released checkpoint keys."""

    def __init__(self, config: WorldFMConfig) -> None:
        super().__init__()
        self.config = config
        self.x_embedder = PatchEmbed(config)
        self.t_embedder = TimestepEmbedder(config.hidden_size)
        self.t_block = nn.Sequential(
            nn.SiLU(), nn.Linear(config.hidden_size, BLOCK_MODULATIONS * config.hidden_size)
        )
        self.blocks = nn.ModuleList(WorldFMBlock(config) for _ in range(config.depth))
        self.final_layer = FinalLayer(config)
        # Not a parameter or buffer: the released file has no usable table (upstream drops it).
        self._position_tables: dict[tuple, Tensor] = {}

    def forward(
        self,
        noisy: FrameLatents,
        timesteps: Timesteps,
        render_latent: FrameLatents,
        reference_latent: FrameLatents,
    ) -> ModelOutput:
        """The target panel of the output: all out_channels; the first 4 are the v-prediction."""
        panel_width = noisy.shape[-1]
        strip = self.forward_strip(
            torch.cat([noisy, render_latent, reference_latent], dim=-1), timesteps
        )
        return strip[..., :panel_width]

    def forward_strip(
        self, strip: Annotated[Tensor, "B C h 3w"], timesteps: Timesteps
    ) -> Annotated[Tensor, "B out h 3w"]:
        """The model on a pre-concatenated strip, returning all three panels."""
        config = self.config
        p = config.patch_size
        rows, columns = strip.shape[-2] // p, strip.shape[-1] // p
        tokens = self.x_embedder(strip) + self._positions(rows, columns, strip)
        time_embedding = self.t_embedder(timesteps.to(strip.device))
        shared_modulation = self.t_block(time_embedding)
        for block in self.blocks:
            tokens = block(tokens, shared_modulation)
        patches = self.final_layer(tokens, time_embedding)
        return rearrange(patches, "b (h w) (p q c) -> b c (h p) (w q)", h=rows, w=columns, p=p, q=p)

    def _positions(self, rows: int, columns: int, like: Tensor) -> PositionTable:
        """The fixed table for this token grid, built once per grid, device and dtype."""
        key = (rows, columns, like.device, like.dtype)
        if key not in self._position_tables:
            config = self.config
            table = sincos_position_table(
                config.hidden_size, rows, columns, config.base_size, config.pe_interpolation
            )
            self._position_tables[key] = table.to(device=like.device, dtype=like.dtype)
        return self._position_tables[key]


# --- checkpoints -------------------------------------------------------------------------------

#: Keys of the released file that the inference path never reads (upstream drops ``pos_embed``
#: and loads with strict=False; the text branch is disabled and Plücker/PRoPE are dead code).
UNUSED_KEY_PREFIXES = ("pos_embed", "y_embedder.", "plucker_proj.")
UNUSED_KEY_PART = ".cross_attn."
#: Wrappers that training frameworks put in front of the keys.
WRAPPER_PREFIXES = ("module.", "model.diffusion_model.", "model.", "_fsdp_wrapped_module.")
#: PixArt-XL heads are 72 wide (1152 / 16); used when a file does not record its head count.
PIXART_HEAD_DIM = 72
CONFIG_METADATA_KEY = "worldfm_config"
#: Image sizes of other PixArt releases (pixels) -> what they are.
OTHER_PIXART_RESOLUTIONS = {1024: "a 1024-px PixArt-Σ/α model", 2048: "a 2K PixArt-Σ model"}
#: Key fragments of other PixArt variants -> what they are.
OTHER_VARIANT_KEYS = {
    "csize_embedder.": "a PixArt-α multi-scale model with micro-conditioning (csize_embedder)",
    "ar_embedder.": "a PixArt-α multi-scale model with micro-conditioning (ar_embedder)",
    ".q_norm.": "a PixArt variant with qk-norm in attention",
    ".k_norm.": "a PixArt variant with qk-norm in attention",
}


class WorldFMCheckpointError(CheckpointError):
    """A weight file that is not a usable WorldFM frame model, saying what it is instead."""


def load_worldfm(path: str | Path, num_heads: int | None = None) -> WorldFMModel:
    """The frame model of ``worldfm_1-step.pth`` / ``worldfm_2-step.pth`` or a safetensors copy.

    The config is read from the file's metadata (copies written by :func:`save_worldfm_safetensors`)
    or inferred from tensor shapes; ``num_heads`` overrides the head count, which shapes alone
    cannot tell (PixArt-XL: 72-wide heads). Loading is strict on every key the model uses.
    """
    tensors, metadata = read_weights(path)
    tensors = _strip_wrappers(tensors)
    state = _used_state(tensors, path)
    config = _config_from(state, tensors.get("pos_embed"), metadata, path, num_heads)
    model = WorldFMModel(config)
    expected = set(model.state_dict())
    missing = sorted(expected - set(state))
    unexpected = sorted(set(state) - expected)
    if missing or unexpected:
        raise WorldFMCheckpointError(
            f"{path} does not match a WorldFM model of depth {config.depth} and width "
            f"{config.hidden_size}: missing {len(missing)} keys {missing[:8]}, unexpected "
            f"{len(unexpected)} keys {unexpected[:8]}. Use worldfm_1-step.pth or "
            "worldfm_2-step.pth from the inspatio/worldfm release"
        )
    mismatched = [
        key for key, value in model.state_dict().items() if value.shape != state[key].shape
    ]
    if mismatched:
        raise WorldFMCheckpointError(
            f"{path} has tensors of unexpected shape for the inferred config {config}: "
            f"{mismatched[:8]}"
        )
    model.load_state_dict(state, strict=True)
    return model.eval()


def save_worldfm_safetensors(
    source: str | Path, destination: str | Path, num_heads: int | None = None
) -> None:
    """Write a safetensors copy holding only the used tensors, with the config in its metadata."""
    model = load_worldfm(source, num_heads=num_heads)
    config_json = json.dumps(asdict(model.config))
    state = {key: value.contiguous() for key, value in model.state_dict().items()}
    save_file(state, str(destination), metadata={CONFIG_METADATA_KEY: config_json})


def _used_state(tensors: dict[str, Tensor], path: str | Path) -> dict[str, Tensor]:
    for fragment, variant in OTHER_VARIANT_KEYS.items():
        if any(fragment in key for key in tensors):
            raise WorldFMCheckpointError(
                f"{path} is {variant}, not an InSpatio-WorldFM frame model (keys containing "
                f"'{fragment}'): use worldfm_1-step.pth or worldfm_2-step.pth"
            )
    has_cross_attention = any(UNUSED_KEY_PART in key for key in tensors)
    if has_cross_attention and not any(key.startswith("plucker_proj.") for key in tensors):
        raise WorldFMCheckpointError(
            f"{path} has cross-attention weights but no plucker_proj: it is a PixArt text-to-image "
            "checkpoint (its cross-attention is used), not an InSpatio-WorldFM frame model"
        )
    return {
        key: value
        for key, value in tensors.items()
        if not key.startswith(UNUSED_KEY_PREFIXES) and UNUSED_KEY_PART not in key
    }


def _strip_wrappers(tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    for prefix in WRAPPER_PREFIXES:
        if tensors and all(key.startswith(prefix) for key in tensors):
            return _strip_wrappers({key[len(prefix) :]: value for key, value in tensors.items()})
    return tensors


def _config_from(
    state: dict[str, Tensor],
    square_position_table: Tensor | None,
    metadata: dict[str, str],
    path: str | Path,
    num_heads: int | None,
) -> WorldFMConfig:
    if CONFIG_METADATA_KEY in metadata:
        stored = json.loads(metadata[CONFIG_METADATA_KEY])
        if num_heads is not None:
            stored["num_heads"] = num_heads
        return WorldFMConfig(**stored)
    patch_weight = state.get("x_embedder.proj.weight")
    if patch_weight is None:
        raise WorldFMCheckpointError(
            f"{path} has no x_embedder.proj.weight: it is not a PixArt / WorldFM checkpoint"
        )
    hidden_size, in_channels, patch_size, _ = patch_weight.shape
    if in_channels != DEFAULT_CONFIG.in_channels:
        raise WorldFMCheckpointError(
            f"{path} embeds {in_channels}-channel latents, WorldFM embeds "
            f"{DEFAULT_CONFIG.in_channels}: it is another PixArt variant (e.g. with a mask channel)"
        )
    depth = len({key.split(".")[1] for key in state if key.startswith("blocks.")})
    final_rows = (
        state["final_layer.linear.weight"].shape[0] if "final_layer.linear.weight" in state else 0
    )
    input_size = DEFAULT_CONFIG.input_size
    if square_position_table is not None:
        # The constructor's square table (never used): its side is input_size / patch.
        input_size = math.isqrt(square_position_table.shape[-2]) * patch_size
    image_size = input_size * VAE_STRIDE
    if image_size in OTHER_PIXART_RESOLUTIONS:
        raise WorldFMCheckpointError(
            f"{path} is {OTHER_PIXART_RESOLUTIONS[image_size]} "
            f"(positional grid for {image_size} px), "
            f"while WorldFM is a {DEFAULT_CONFIG.input_size * VAE_STRIDE}-px model"
        )
    heads = num_heads if num_heads is not None else hidden_size // PIXART_HEAD_DIM
    if heads < 1 or hidden_size % heads:
        raise WorldFMCheckpointError(
            f"{path}: cannot tell the head count of a {hidden_size}-wide model from its shapes; "
            "pass num_heads explicitly"
        )
    return WorldFMConfig.for_latent_size(
        input_size,
        depth=depth,
        hidden_size=hidden_size,
        num_heads=heads,
        patch_size=patch_size,
        in_channels=in_channels,
        out_channels=final_rows // patch_size**2,
        mlp_hidden=state["blocks.0.mlp.fc1.weight"].shape[0]
        if "blocks.0.mlp.fc1.weight" in state
        else 0,
    )


def forward_working_memory(config: WorldFMConfig, dtype: torch.dtype) -> int:
    """Bytes one forward pass needs besides the weights: attention scores and MLP activations."""
    tokens = PANELS * config.base_size**2
    element = torch.empty((), dtype=dtype).element_size()
    scores = ATTENTION_SCORE_COPIES * config.num_heads * tokens**2
    activations = MLP_ACTIVATION_COPIES * tokens * config.mlp_hidden
    return element * (scores + activations)
