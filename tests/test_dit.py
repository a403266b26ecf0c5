"""The causal DiT: cached attention (prefill, then denoise) equals one block-causal pass.

Also home of :func:`tiny_dit`, the random tiny model the engine's other test modules build on.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange
from inspatio_nodes.core import attention
from inspatio_nodes.core.attention import AttentionBackendError, RopeTable, apply_rope
from inspatio_nodes.core.cache import CacheShape, SpatiotemporalCache
from inspatio_nodes.core.codec import SPATIAL_STRIDE
from inspatio_nodes.core.wan.dit import (
    CONDITION_CHANNELS,
    LATENT_CHANNELS,
    MODEL_INPUT_CHANNELS,
    CausalWanDiT,
    WanDiTConfig,
)

NORM_WEIGHT_SPREAD = 0.1


def tiny_config(**overrides: object) -> WanDiTConfig:
    sizes = {"dim": 32, "ffn_dim": 48, "freq_dim": 16, "num_heads": 2, "num_layers": 2}
    sizes |= {"text_dim": 24, "text_len": 8}
    return WanDiTConfig(**{**sizes, **overrides})


def tiny_dit(
    seed: int = 0, dtype: torch.dtype = torch.float32, **overrides: object
) -> CausalWanDiT:
    """A tiny DiT with the real architecture and random weights (norm weights away from 1)."""
    torch.manual_seed(seed)
    model = CausalWanDiT(tiny_config(**overrides))
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                parameter.add_(NORM_WEIGHT_SPREAD * torch.randn_like(parameter))
            elif name.endswith("bias"):
                parameter.normal_(0.0, 0.02)
    return model.to(dtype).eval()


def cache_for(model: CausalWanDiT, batch: int, capacity_tokens: int) -> SpatiotemporalCache:
    config = model.config
    shape = CacheShape(
        config.num_layers,
        config.num_heads,
        config.head_dim,
        batch,
        capacity_tokens,
        config.text_len,
    )
    parameter = next(model.parameters())
    return SpatiotemporalCache(shape, dtype=parameter.dtype, device=parameter.device)


def block_causal_reference(
    model: CausalWanDiT,
    context: torch.Tensor,
    noisy_input: torch.Tensor,
    timestep: torch.Tensor,
    text: torch.Tensor,
    denoise_offset: int,
) -> torch.Tensor:
    """One pass over [context | noisy]: per-token timesteps (0 / t), context rows blind to the noisy block."""
    _, patch_h, patch_w = model.config.patch_size
    ctx_frames, noisy_frames = context.shape[1], noisy_input.shape[1]
    rows, cols = context.shape[3] // patch_h, context.shape[4] // patch_w
    to_tokens = lambda latents: rearrange(
        model.patch_embedding(rearrange(latents, "b g c h w -> b c g h w")),
        "b d g h w -> b (g h w) d",
    )
    x = torch.cat([to_tokens(context), to_tokens(noisy_input)], dim=1)
    n_ctx = ctx_frames * rows * cols
    e_ctx, e0_ctx = model.time_conditioning(torch.zeros_like(timestep), x.dtype)
    e_noisy, e0_noisy = model.time_conditioning(timestep, x.dtype)
    is_context = torch.arange(x.shape[1]) < n_ctx
    e0 = torch.where(
        is_context[None, :, None, None], e0_ctx[:, None], e0_noisy[:, None]
    )  # [B, N, 6, D]
    e = torch.where(is_context[None, :, None], e_ctx[:, None], e_noisy[:, None])  # [B, N, D]
    allowed = ~(is_context[:, None] & ~is_context[None, :])  # context queries never see noisy keys
    rope = RopeTable.for_head_dim(model.config.head_dim)

    def rotate(t: torch.Tensor) -> torch.Tensor:
        return torch.cat(
            [
                apply_rope(t[:, :n_ctx], rope, (ctx_frames, rows, cols), 0),
                apply_rope(t[:, n_ctx:], rope, (noisy_frames, rows, cols), denoise_offset),
            ],
            dim=1,
        )

    text_kv = model.text_kv(text)
    heads = model.config.num_heads
    for block, layer_text in zip(model.blocks, text_kv):
        m = block.modulation[:, None] + e0
        h = block.norm1(x) * (1 + m[:, :, 1]) + m[:, :, 0]
        attn = block.self_attn
        q = rotate(rearrange(attn.norm_q(attn.q(h)), "b n (hd dh) -> b n hd dh", hd=heads))
        k = rotate(rearrange(attn.norm_k(attn.k(h)), "b n (hd dh) -> b n hd dh", hd=heads))
        v = rearrange(attn.v(h), "b n (hd dh) -> b n hd dh", hd=heads)
        out = F.scaled_dot_product_attention(
            *(rearrange(t, "b n hd dh -> b hd n dh") for t in (q, k, v)), attn_mask=allowed
        )
        x = x + attn.o(rearrange(out, "b hd n dh -> b n (hd dh)")) * m[:, :, 2]
        x = x + block.cross_attn(block.norm3(x), layer_text)
        x = x + block.ffn(block.norm2(x) * (1 + m[:, :, 4]) + m[:, :, 3]) * m[:, :, 5]
    head_m = model.head.modulation[:, None] + e[:, :, None]
    out = model.head.head(model.head.norm(x) * (1 + head_m[:, :, 1]) + head_m[:, :, 0])
    return rearrange(
        out[:, n_ctx:],
        "b (g h w) (ph pw c) -> b g c (h ph) (w pw)",
        g=noisy_frames,
        h=rows,
        ph=patch_h,
        pw=patch_w,
    )


@pytest.mark.parametrize(
    ("num_heads", "dim", "context_frames", "latent_size"),
    [(2, 32, 3, (4, 6)), (2, 48, 6, (6, 4)), (1, 32, 6, (2, 8))],
)
def test_cached_attention_equals_block_causal_full_pass(
    num_heads, dim, context_frames, latent_size
):
    model = tiny_dit(seed=context_frames, dtype=torch.float64, dim=dim, num_heads=num_heads)
    generator = torch.Generator().manual_seed(1)
    height, width = latent_size
    frames_per_block, denoise_offset = 3, 6
    context = torch.cat(
        [
            torch.randn(
                2,
                context_frames,
                LATENT_CHANNELS,
                height,
                width,
                generator=generator,
                dtype=torch.float64,
            ),
            torch.zeros(2, context_frames, CONDITION_CHANNELS, height, width, dtype=torch.float64),
        ],
        dim=2,
    )
    noisy_input = torch.randn(
        2,
        frames_per_block,
        MODEL_INPUT_CHANNELS,
        height,
        width,
        generator=generator,
        dtype=torch.float64,
    )
    text = torch.randn(2, 5, model.config.text_dim, generator=generator, dtype=torch.float64)
    timestep = torch.tensor([937.5, 937.5], dtype=torch.float64)
    tokens_per_frame = model.config.tokens_per_frame(height, width)
    cache = cache_for(model, batch=2, capacity_tokens=6 * tokens_per_frame)

    with torch.no_grad():
        cache.set_text(model.text_kv(text))
        model(context, torch.zeros(2), cache, frame_offset=0, read_len=0, write_offset=0)
        n_ctx = context_frames * tokens_per_frame
        cached = model(
            noisy_input,
            timestep,
            cache,
            frame_offset=denoise_offset,
            read_len=n_ctx,
            write_offset=None,
        )
        reference = block_causal_reference(
            model, context, noisy_input, timestep, text, denoise_offset
        )

    torch.testing.assert_close(cached, reference, atol=1e-10, rtol=0)


def test_denoise_call_leaves_the_cache_untouched():
    model = tiny_dit()
    cache = cache_for(model, batch=1, capacity_tokens=6 * 6)
    with torch.no_grad():
        cache.set_text(model.text_kv(torch.randn(1, 3, model.config.text_dim)))
        model(
            torch.randn(1, 3, MODEL_INPUT_CHANNELS, 4, 6),
            torch.zeros(1),
            cache,
            frame_offset=0,
            read_len=0,
            write_offset=0,
        )
        before = [buffer.clone() for buffer in cache.buffers()]
        model(
            torch.randn(1, 3, MODEL_INPUT_CHANNELS, 4, 6),
            torch.full((1,), 625.0),
            cache,
            frame_offset=6,
            read_len=18,
            write_offset=None,
        )
    assert all(torch.equal(a, b) for a, b in zip(before, cache.buffers()))


def test_rope_splits_pairs_into_frame_row_col_ladders():
    rope = RopeTable.for_head_dim(128)
    assert rope.axis_pairs == (22, 21, 21)
    assert rope.max_positions == 1024  # official rope_params(1024, ...)
    assert RopeTable.for_head_dim(32).axis_pairs == (6, 5, 5)
    # Each axis restarts its own ladder at frequency 1 (position 1 rotates by 1 radian).
    for first_pair_of_axis in (0, 22, 43):
        assert rope.cos[1, first_pair_of_axis].item() == pytest.approx(
            torch.cos(torch.tensor(1.0)).item()
        )


def test_text_longer_than_the_model_text_len_is_refused():
    model = tiny_dit()
    with pytest.raises(ValueError, match="truncate"):
        model.embed_text(torch.randn(1, model.config.text_len + 1, model.config.text_dim))


def test_latent_size_not_divisible_by_the_patch_is_refused():
    with pytest.raises(ValueError, match="not divisible by the patch"):
        tiny_config().tokens_per_frame(7, 6)


def test_patch_error_gives_the_pixel_multiple_of_the_vae_stride_times_the_patch():
    config = tiny_config(patch_size=(1, 2, 3))
    _, patch_h, patch_w = config.patch_size
    with pytest.raises(ValueError, match=f"{SPATIAL_STRIDE * patch_h}x{SPATIAL_STRIDE * patch_w}"):
        config.tokens_per_frame(7, 6)


def test_backend_choice_lists_auto_first_and_refuses_unknown_names():
    names = attention.available_backends()
    assert names[0] == "auto" and "sdpa" in names
    with pytest.raises(AttentionBackendError, match="choose one of"):
        attention.set_backend("flash-attn-9")
    attention.set_backend("sdpa")
    try:
        assert attention.resolve_backend(torch.device("cpu"), torch.float32) == "sdpa"
    finally:
        attention.set_backend("auto")


def test_dit_input_with_the_wrong_channel_count_is_refused():
    model = tiny_dit()
    cache = cache_for(model, batch=1, capacity_tokens=6 * 6)
    with pytest.raises(ValueError, match=r"has 16 channels per latent frame; it takes 36"):
        model(
            torch.randn(1, 3, 16, 4, 6),
            torch.zeros(1),
            cache,
            frame_offset=0,
            read_len=0,
            write_offset=0,
        )


def test_bf16_model_casts_where_upstream_does():
    """The bf16 path: float64 sinusoid and RoPE, fp32 norms, each cast back to bf16 once.

    Upstream ``causal_model.py`` runs ``e``, ``e0`` and the modulation in the model dtype (no
    autocast there), so they stay bf16 here too.
    """
    model = tiny_dit(dtype=torch.bfloat16)
    config = model.config
    generator = torch.Generator().manual_seed(4)
    x = torch.randn(2, 12, config.dim, generator=generator).bfloat16()

    rms = model.blocks[0].self_attn.norm_q
    x32 = x.float()
    rms_fp32 = x32 * torch.rsqrt(x32.pow(2).mean(dim=-1, keepdim=True) + config.eps)
    assert torch.equal(rms(x), rms_fp32.bfloat16() * rms.weight)

    norm3 = model.blocks[0].norm3
    layer_fp32 = F.layer_norm(
        x.float(), (config.dim,), norm3.weight.float(), norm3.bias.float(), config.eps
    )
    assert torch.equal(norm3(x), layer_fp32.bfloat16())

    timestep = torch.tensor([833.3333129882812, 625.0])
    half = config.freq_dim // 2
    frequencies = 10_000.0 ** -(torch.arange(half, dtype=torch.float64) / half)
    phases = torch.outer(timestep.double(), frequencies)
    sinusoid = torch.cat([torch.cos(phases), torch.sin(phases)], dim=1).bfloat16()
    with torch.no_grad():
        embedding, modulation = model.time_conditioning(timestep, torch.bfloat16)
        assert torch.equal(embedding, model.time_embedding(sinusoid))
    assert embedding.dtype == modulation.dtype == torch.bfloat16

    heads = rearrange(x, "b (g h w) (hd dh) -> b (g h w) hd dh", g=3, h=2, w=2, hd=config.num_heads)
    rope = RopeTable.for_head_dim(config.head_dim)
    rotated_in_float64 = apply_rope(heads.double(), rope, (3, 2, 2), 6).bfloat16()
    assert torch.equal(apply_rope(heads, rope, (3, 2, 2), 6), rotated_in_float64)
