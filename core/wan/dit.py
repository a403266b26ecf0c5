"""The causal Wan2.1 DiT of InSpatio-World (36 input channels, KV-cached self-attention).

Place in the data flow: the block sampler (:mod:`core.world`) calls the model once per block to
prefill the KV cache with the context (t = 0) and four times to predict the flow of the block being
denoised. Inputs are latents in the DiT's normalised space, layout ``[B, G, 36, h, w]`` =
``[noisy 16 | mask 4 | render 16]``; the output is the flow ``noise − x0``, ``[B, G, 16, h, w]``.

Follows ``wan/modules/causal_model.py`` (``CausalWanModel``, ``CausalWanAttentionBlock``,
``CausalHead``) and ``wan/modules/model.py`` (``sinusoidal_embedding_1d``, ``WanRMSNorm``,
``WanLayerNorm``) of the official InSpatio-World v1 code. Module and parameter names are those of
the released checkpoint after its ``model.`` prefix is stripped, so loading is a strict
``load_state_dict``. Longer than the usual 300 lines because the whole network reads best in one
place, top (config) to bottom (forward).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from ..attention import AttentionCall, attention, model_rope_table, rope_cached_attention
from ..cache import SpatiotemporalCache
from ..codec import SPATIAL_STRIDE  # pixels per latent cell: the error speaks in pixels
from ..types import (
    FlowPrediction,
    Keys,
    ModelInput,
    Modulation,
    Queries,
    TextEmbeddings,
    TextKV,
    TimeEmbedding,
    Tokens,
    Values,
)

LATENT_CHANNELS = 16
MASK_CHANNELS = 4
CONDITION_CHANNELS = MASK_CHANNELS + LATENT_CHANNELS  # [mask 4 | render 16]
MODEL_INPUT_CHANNELS = LATENT_CHANNELS + CONDITION_CHANNELS
RELEASED_HEAD_DIM = 128
SINUSOID_BASE = 10_000.0
BLOCK_MODULATIONS = 6  # shift, scale, gate for self-attention, then for the FFN
HEAD_MODULATIONS = 2  # shift, scale


@dataclass(frozen=True)
class WanDiTConfig:
    """Sizes of a causal Wan DiT. The defaults are the released InSpatio-World 1.3B model."""

    dim: int = 1536
    ffn_dim: int = 8960
    freq_dim: int = 256
    num_heads: int = 12
    num_layers: int = 30
    text_dim: int = 4096
    text_len: int = 512
    in_dim: int = MODEL_INPUT_CHANNELS
    out_dim: int = LATENT_CHANNELS
    patch_size: tuple[int, int, int] = field(default=(1, 2, 2))
    eps: float = 1e-6

    def __post_init__(self) -> None:
        # JSON configs give the patch as a list; the config must stay hashable and comparable.
        object.__setattr__(self, "patch_size", tuple(self.patch_size))
        if self.dim % self.num_heads:
            raise ValueError(f"dim={self.dim} is not divisible by num_heads={self.num_heads}")
        if self.in_dim != MODEL_INPUT_CHANNELS:
            raise ValueError(
                f"in_dim={self.in_dim}: an InSpatio-World DiT takes {MODEL_INPUT_CHANNELS} channels "
                "[noisy 16 | mask 4 | render 16]"
            )
        if self.out_dim != LATENT_CHANNELS:
            raise ValueError(
                f"out_dim={self.out_dim}: the DiT predicts {LATENT_CHANNELS} latent channels"
            )
        if self.freq_dim % 2:
            raise ValueError(f"freq_dim={self.freq_dim} must be even ([cos | sin] halves)")

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    @property
    def patch_volume(self) -> int:
        return math.prod(self.patch_size)

    def tokens_per_frame(self, latent_height: int, latent_width: int) -> int:
        """Tokens of one latent frame; never a 1560 literal (that is only the 60×104 release size)."""
        _, patch_h, patch_w = self.patch_size
        if latent_height % patch_h or latent_width % patch_w:
            raise ValueError(
                f"latent size {latent_height}x{latent_width} is not divisible by the patch "
                f"{patch_h}x{patch_w}: use a pixel size that is a multiple of "
                f"{SPATIAL_STRIDE * patch_h}x{SPATIAL_STRIDE * patch_w}"
            )
        return (latent_height // patch_h) * (latent_width // patch_w)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> WanDiTConfig:
        return cls(**json.loads(text))


def sinusoidal_embedding(freq_dim: int, timestep: Tensor) -> Tensor:
    """``[cos | sin]`` of ``t ⊗ 10000^(−k/half)``, float64 ``[B, freq_dim]`` (official order: cos first)."""
    half = freq_dim // 2
    position = timestep.to(torch.float64)
    exponents = torch.arange(half, dtype=torch.float64, device=timestep.device) / half
    phases = torch.outer(position, torch.pow(SINUSOID_BASE, -exponents))
    return torch.cat([torch.cos(phases), torch.sin(phases)], dim=1)


class RMSNorm(nn.Module):
    """RMS norm over the full model width, computed in float32 and cast back before the weight."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tokens) -> Tokens:
        x32 = x.float()
        normed = x32 * torch.rsqrt(x32.pow(2).mean(dim=-1, keepdim=True) + self.eps)
        return normed.type_as(x) * self.weight


class LayerNorm(nn.LayerNorm):
    """LayerNorm computed in float32 whatever the model dtype (official ``WanLayerNorm``)."""

    def forward(self, x: Tokens) -> Tokens:
        weight = None if self.weight is None else self.weight.float()
        bias = None if self.bias is None else self.bias.float()
        return F.layer_norm(x.float(), self.normalized_shape, weight, bias, self.eps).type_as(x)


class Projections(nn.Module):
    """The q/k/v/o Linear layers (with bias) and the RMS norms of q and k, shared by both attentions."""

    def __init__(self, config: WanDiTConfig) -> None:
        super().__init__()
        self.num_heads = config.num_heads
        self.q = nn.Linear(config.dim, config.dim)
        self.k = nn.Linear(config.dim, config.dim)
        self.v = nn.Linear(config.dim, config.dim)
        self.o = nn.Linear(config.dim, config.dim)
        self.norm_q = RMSNorm(config.dim, config.eps)
        self.norm_k = RMSNorm(config.dim, config.eps)

    def split_heads(self, x: Tokens) -> Queries:
        return rearrange(x, "b n (hd dh) -> b n hd dh", hd=self.num_heads)

    def merge_heads_and_project(self, x: Queries) -> Tokens:
        return self.o(rearrange(x, "b n hd dh -> b n (hd dh)"))


class SelfAttention(Projections):
    """Self-attention of the video tokens; keys and values run through the KV cache."""

    def forward(self, x: Tokens, call: AttentionCall, cache_k: Keys, cache_v: Values) -> Tokens:
        """``call`` and the layer's cache go to :func:`~core.attention.rope_cached_attention`."""
        q = self.split_heads(self.norm_q(self.q(x)))
        k = self.split_heads(self.norm_k(self.k(x)))
        v = self.split_heads(self.v(x))
        attended = rope_cached_attention(q, k, v, call, cache_k, cache_v)
        return self.merge_heads_and_project(attended)


class CrossAttention(Projections):
    """Attention from the video tokens to the whole padded text: no RoPE and no padding mask."""

    def text_kv(self, text_tokens: Tokens) -> TextKV:
        """The K/V of the embedded text, ``[2, B, L, Hd, Dh]``: computed once per prompt."""
        keys = self.split_heads(self.norm_k(self.k(text_tokens)))
        return torch.stack([keys, self.split_heads(self.v(text_tokens))])

    def forward(self, x: Tokens, text_kv: TextKV) -> Tokens:
        q = self.split_heads(self.norm_q(self.q(x)))
        return self.merge_heads_and_project(attention(q, text_kv[0], text_kv[1]))


class AttentionBlock(nn.Module):
    """One transformer block: modulated self-attention, cross-attention, modulated FFN."""

    def __init__(self, config: WanDiTConfig) -> None:
        super().__init__()
        self.norm1 = LayerNorm(config.dim, eps=config.eps, elementwise_affine=False)
        self.self_attn = SelfAttention(config)
        # norm3 is the only affine LayerNorm (cross_attn_norm=True in the released config).
        self.norm3 = LayerNorm(config.dim, eps=config.eps, elementwise_affine=True)
        self.cross_attn = CrossAttention(config)
        self.norm2 = LayerNorm(config.dim, eps=config.eps, elementwise_affine=False)
        self.ffn = nn.Sequential(
            nn.Linear(config.dim, config.ffn_dim),
            nn.GELU(approximate="tanh"),
            nn.Linear(config.ffn_dim, config.dim),
        )
        self.modulation = nn.Parameter(
            torch.randn(1, BLOCK_MODULATIONS, config.dim) / config.dim**0.5
        )

    def forward(
        self,
        x: Tokens,
        time_modulation: Modulation,
        text_kv: TextKV,
        call: AttentionCall,
        cache_k: Keys,
        cache_v: Values,
    ) -> Tokens:
        shift_attn, scale_attn, gate_attn, shift_ffn, scale_ffn, gate_ffn = (
            self.modulation + time_modulation
        ).unbind(dim=1)
        attended = self.self_attn(
            self.norm1(x) * (1 + scale_attn[:, None]) + shift_attn[:, None],
            call,
            cache_k,
            cache_v,
        )
        x = x + attended * gate_attn[:, None]
        x = x + self.cross_attn(self.norm3(x), text_kv)
        fed = self.ffn(self.norm2(x) * (1 + scale_ffn[:, None]) + shift_ffn[:, None])
        return x + fed * gate_ffn[:, None]


class Head(nn.Module):
    """Final modulated LayerNorm and projection to patch pixels; modulated by e, not e0."""

    def __init__(self, config: WanDiTConfig) -> None:
        super().__init__()
        self.norm = LayerNorm(config.dim, eps=config.eps, elementwise_affine=False)
        self.head = nn.Linear(config.dim, config.out_dim * config.patch_volume)
        self.modulation = nn.Parameter(
            torch.randn(1, HEAD_MODULATIONS, config.dim) / config.dim**0.5
        )

    def forward(self, x: Tokens, time_embedding: TimeEmbedding) -> Tokens:
        shift, scale = (self.modulation + time_embedding[:, None]).unbind(dim=1)
        return self.head(self.norm(x) * (1 + scale[:, None]) + shift[:, None])


class CausalWanDiT(nn.Module):
    """The InSpatio-World DiT. Attention state lives in a :class:`SpatiotemporalCache`."""

    def __init__(self, config: WanDiTConfig) -> None:
        super().__init__()
        self.config = config
        self.patch_embedding = nn.Conv3d(
            config.in_dim, config.dim, kernel_size=config.patch_size, stride=config.patch_size
        )
        self.text_embedding = nn.Sequential(
            nn.Linear(config.text_dim, config.dim),
            nn.GELU(approximate="tanh"),
            nn.Linear(config.dim, config.dim),
        )
        self.time_embedding = nn.Sequential(
            nn.Linear(config.freq_dim, config.dim), nn.SiLU(), nn.Linear(config.dim, config.dim)
        )
        self.time_projection = nn.Sequential(
            nn.SiLU(), nn.Linear(config.dim, BLOCK_MODULATIONS * config.dim)
        )
        self.blocks = nn.ModuleList(AttentionBlock(config) for _ in range(config.num_layers))
        self.head = Head(config)

    def embed_text(self, text: TextEmbeddings) -> Tokens:
        """Zero-pad the text to ``text_len`` rows (no padding mask follows) and project it."""
        _, length, width = text.shape
        if width != self.config.text_dim:
            raise ValueError(
                f"text embeddings have width {width}; this model expects {self.config.text_dim} (umT5-XXL)"
            )
        if length > self.config.text_len:
            raise ValueError(
                f"text embeddings have {length} tokens, more than the model's {self.config.text_len}: "
                "truncate the conditioning"
            )
        padded = F.pad(text, (0, 0, 0, self.config.text_len - length))
        return self.text_embedding(padded)

    def text_kv(self, text: TextEmbeddings) -> list[TextKV]:
        """Cross-attention K/V of every layer for one prompt."""
        text_tokens = self.embed_text(text)
        return [block.cross_attn.text_kv(text_tokens) for block in self.blocks]

    def time_conditioning(
        self, timestep: Tensor, dtype: torch.dtype
    ) -> tuple[TimeEmbedding, Modulation]:
        """``e`` ``[B, D]`` and ``e0`` ``[B, 6, D]`` of one timestep per batch item.

        Only the sinusoid is float64; ``e``, ``e0`` and the modulation math of the blocks and the
        head run in the model dtype. The spec is silent here; upstream ``causal_model.py`` runs them
        without the float32 autocast region of Wan2.1's ``model.py``, so a bf16 model rounds them
        to bf16 as the release does: matching its rounding beats a float32 detour.
        """
        embedding = self.time_embedding(
            sinusoidal_embedding(self.config.freq_dim, timestep).to(dtype)
        )
        modulation = rearrange(
            self.time_projection(embedding), "b (m d) -> b m d", m=BLOCK_MODULATIONS
        )
        return embedding, modulation

    def forward(
        self,
        latents: ModelInput,
        timestep: Tensor,
        cache: SpatiotemporalCache,
        *,
        frame_offset: int,
        read_len: int,
        write_offset: int | None,
    ) -> FlowPrediction:
        """One DiT call. ``timestep`` is ``[B]`` (one per call); the text K/V come from ``cache``.

        ``frame_offset`` places the call's frames on the RoPE time axis; with ``read_len`` and
        ``write_offset`` it forms the :class:`~core.attention.AttentionCall` of every layer.
        """
        patch_t, patch_h, patch_w = self.config.patch_size
        if latents.shape[2] != self.config.in_dim:
            raise ValueError(
                f"DiT input has {latents.shape[2]} channels per latent frame; it takes "
                f"{self.config.in_dim} as [B, G, C, h, w] = [noisy 16 | mask 4 | render 16]"
            )
        self.config.tokens_per_frame(latents.shape[3], latents.shape[4])  # refuses a cut patch
        video = rearrange(latents, "b g c h w -> b c g h w")
        patches = self.patch_embedding(video)
        _, _, frames, rows, cols = patches.shape
        x = rearrange(patches, "b d g h w -> b (g h w) d")
        time_embedding, time_modulation = self.time_conditioning(timestep, x.dtype)
        call = AttentionCall(
            # Not a buffer of the module: Module.to(bf16) would round the float64 rotations.
            rope=model_rope_table(self.config.head_dim, x.device),
            grid=(frames, rows, cols),
            frame_offset=frame_offset,
            read_len=read_len,
            write_offset=write_offset,
        )
        layers = zip(self.blocks, cache.text, cache.keys, cache.values, strict=True)
        for block, text_kv, cache_k, cache_v in layers:
            x = block(x, time_modulation, text_kv, call, cache_k, cache_v)
        patch_pixels = self.head(x, time_embedding)
        # Head channels are ordered (pt, ph, pw, c) with c fastest (official einsum 'fhwpqrc->cfphqwr').
        return rearrange(
            patch_pixels,
            "b (g h w) (pt ph pw c) -> b (g pt) c (h ph) (w pw)",
            g=frames,
            h=rows,
            w=cols,
            pt=patch_t,
            ph=patch_h,
            pw=patch_w,
        )
