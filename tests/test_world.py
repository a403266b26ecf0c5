"""The block sampler and the streaming Session: official parity, streaming, fixed memory, bad input."""

from __future__ import annotations

from collections import defaultdict

import pytest
import torch
from conftest import fixture_cases, load_json, require_fixture, sibling
from einops import rearrange
from inspatio_nodes.core.schedule import FlowMatchSchedule
from inspatio_nodes.core.wan.checkpoints import load_dit
from inspatio_nodes.core.wan.dit import LATENT_CHANNELS, MASK_CHANNELS, WanDiTConfig
from inspatio_nodes.core.world import (
    CONTEXT_FRAME_OFFSET,
    ReplayedNoise,
    SamplerConfig,
    SeededNoise,
    Session,
    WorldInputError,
    generate,
    prepare_cache,
)
from safetensors.torch import load_file
from test_dit import tiny_dit

DIT_ATOL = 1e-4  # fixtures/README.md: float32 official vs float64 re-implementation agree to 1.5e-6
SAMPLER_CASES = fixture_cases("*dit_sampler*_io*.safetensors")


def weights_path(io_path, config: dict):
    """The weights the fixture config names (``weights_file``) when that file is there, else the
    ``_weights`` sibling of the io file (a renamed copy of a set keeps its old recorded name)."""
    named = io_path.with_name(config.get("weights_file", ""))
    if "weights_file" in config and named.is_file():
        return named
    return sibling(io_path, "io", "weights")


class SamplerCase:
    """One parity case: the model, the sampler settings and every recorded tensor."""

    def __init__(self, io_path) -> None:
        config = load_json(sibling(io_path, "io", "config", ".json"))
        model_fields = set(WanDiTConfig.__dataclass_fields__)
        self.config = config
        self.model_config = WanDiTConfig(
            **{k: v for k, v in config["model_config"].items() if k in model_fields}
        )
        self.model = load_dit(weights_path(io_path, config), config=self.model_config)
        self.io = load_file(str(io_path))
        debug_path = sibling(io_path, "io", "debug")
        self.debug = load_file(str(debug_path)) if debug_path.is_file() else {}
        sampler = config["sampler"]
        latent = config["latent"]
        self.frames_per_block = latent["num_frame_per_block"]
        self.num_blocks = latent["num_blocks"]
        self.batch = latent["B"]
        self.steps = len(sampler["warped_steps"])
        self.sampler = SamplerConfig(
            frames_per_block=self.frames_per_block,
            denoise_frame_offset=sampler["denoise_freqs_offset"],
            schedule=FlowMatchSchedule(
                denoising_steps=tuple(sampler["denoising_step_list_config"]),
                shift=sampler["timestep_shift"],
                num_train_timesteps=sampler["num_train_timesteps"],
            ),
        )

    def noise_in_call_order(self) -> list[torch.Tensor]:
        """Per block the initial noise slice, then the block's re-noise tensors (block-major)."""
        renoise_per_block = self.steps - 1
        sequence = []
        for block in range(self.num_blocks):
            start = block * self.frames_per_block
            sequence.append(self.io["noise"][:, start : start + self.frames_per_block])
            for step in range(renoise_per_block):
                flat = self.io["renoise"][block * renoise_per_block + step]
                sequence.append(rearrange(flat, "(b g) c h w -> b g c h w", b=self.batch))
        return sequence

    def generate(self) -> torch.Tensor:
        return generate(
            self.model,
            self.io["text_embeds"],
            self.io["ref_latent"],
            self.io["render_latent"],
            self.io["mask_latent"],
            noise=ReplayedNoise(self.noise_in_call_order()),
            sampler=self.sampler,
        )


def record_calls(model):
    """Every DiT call: (kind, inputs, timestep, output, cache snapshot after a prefill)."""
    calls = []

    def hook(module, args, kwargs, output):
        latents, timestep, cache = args
        prefill = kwargs["write_offset"] is not None
        snapshot = None
        if prefill:
            rows = latents.shape[1] * module.config.tokens_per_frame(
                latents.shape[3], latents.shape[4]
            )
            snapshot = [
                (k[:, :rows].clone(), v[:, :rows].clone()) for k, v in zip(cache.keys, cache.values)
            ]
        calls.append(
            dict(
                prefill=prefill,
                latents=latents,
                timestep=timestep,
                output=output,
                kv=snapshot,
                **kwargs,
            )
        )

    handle = model.register_forward_hook(hook, with_kwargs=True)
    return calls, handle


@pytest.mark.parametrize("case_path", SAMPLER_CASES)
def test_replayed_sampler_matches_official_per_step_and_output(case_path):
    case = SamplerCase(require_fixture(case_path))
    calls, handle = record_calls(case.model)
    output = case.generate()
    handle.remove()

    assert CONTEXT_FRAME_OFFSET == case.config["sampler"]["context_freqs_offset"]
    denoise_calls = [call for call in calls if not call["prefill"]]
    assert len(denoise_calls) == case.num_blocks * case.steps
    for index, call in enumerate(denoise_calls):
        block, step = divmod(index, case.steps)
        prefix = f"block{block}.step{step}"
        noisy = call["latents"][:, :, :LATENT_CHANNELS]
        assert torch.equal(call["timestep"], case.io[f"{prefix}.timestep"][:, 0])
        torch.testing.assert_close(noisy, case.io[f"{prefix}.x_t"], atol=DIT_ATOL, rtol=0)
        torch.testing.assert_close(
            call["output"], case.io[f"{prefix}.flow_pred"], atol=DIT_ATOL, rtol=0
        )
        x0 = case.sampler.schedule.x0_from_flow(noisy, call["output"], call["timestep"][0])
        torch.testing.assert_close(x0, case.io[f"{prefix}.x0_pred"], atol=DIT_ATOL, rtol=0)
    torch.testing.assert_close(output, case.io["output"], atol=DIT_ATOL, rtol=0)


@pytest.mark.parametrize("case_path", SAMPLER_CASES)
def test_prefill_writes_post_rope_keys_and_plain_values_like_official(case_path):
    case = SamplerCase(require_fixture(case_path))
    if not case.debug:
        pytest.skip(f"no debug file beside {case_path.name}")
    calls, handle = record_calls(case.model)
    case.generate()
    handle.remove()

    prefills = [call for call in calls if call["prefill"]]
    checked = 0
    for block, call in enumerate(prefills):
        context_key = f"block{block}.context_frames"
        if context_key not in case.debug:
            continue
        torch.testing.assert_close(call["latents"], case.debug[context_key], atol=DIT_ATOL, rtol=0)
        for layer, (keys, values) in enumerate(call["kv"]):
            torch.testing.assert_close(
                keys, case.debug[f"block{block}.kv_cache.layer{layer}.k"], atol=DIT_ATOL, rtol=0
            )
            torch.testing.assert_close(
                values, case.debug[f"block{block}.kv_cache.layer{layer}.v"], atol=DIT_ATOL, rtol=0
            )
        checked += 1
    assert checked > 0


@pytest.mark.parametrize("case_path", SAMPLER_CASES)
def test_submodule_activations_match_official_debug(case_path):
    case = SamplerCase(require_fixture(case_path))
    if not case.debug:
        pytest.skip(f"no debug file beside {case_path.name}")
    model = case.model
    names = ["patch_embedding", "time_embedding", "time_projection", "head"]
    names += [f"blocks.{layer}" for layer in range(model.config.num_layers)]
    outputs = defaultdict(list)
    handles = [
        model.get_submodule(name).register_forward_hook(
            lambda module, args, output, name=name: outputs[name].append(output)
        )
        for name in names
    ]
    case.generate()
    for handle in handles:
        handle.remove()

    calls_per_block = 1 + case.steps  # the prefill, then the denoising steps
    checked = 0
    for key, expected in case.debug.items():
        if not key.startswith("debug."):
            continue
        _, block, label, name = key.split(".", 3)
        if name == "text_embedding":
            actual = model.embed_text(case.io["text_embeds"])
        else:
            call_in_block = 0 if label == "context" else 1 + int(label.removeprefix("step"))
            actual = outputs[name][
                int(block.removeprefix("block")) * calls_per_block + call_in_block
            ]
        torch.testing.assert_close(
            actual, expected, atol=DIT_ATOL, rtol=0, msg=lambda m, key=key: f"{key}: {m}"
        )
        checked += 1
    assert checked > 0


# --- streaming, memory and inputs on a tiny random model -----------------------------------------

TINY_LATENT = (4, 6)


def tiny_inputs(blocks: int, frames_per_block: int = 3, seed: int = 0, batch: int = 1):
    generator = torch.Generator().manual_seed(seed)
    frames = blocks * frames_per_block
    h, w = TINY_LATENT

    def normal(*shape):
        return torch.randn(*shape, generator=generator)

    mask = torch.sign(normal(batch, frames, MASK_CHANNELS, h, w))
    return (
        normal(batch, 5, 24),
        normal(batch, frames, LATENT_CHANNELS, h, w),
        normal(batch, frames, LATENT_CHANNELS, h, w),
        mask,
    )


def tiny_session(model, text, noise=None) -> Session:
    """A session over :data:`TINY_LATENT` latents, seeded noise 0 unless ``noise`` is given."""
    height, width = TINY_LATENT
    noise = SeededNoise(0) if noise is None else noise
    return Session(model, text, latent_height=height, latent_width=width, noise=noise)


def test_streamed_session_equals_offline_sampler():
    model = tiny_dit()
    text, reference, render, mask = tiny_inputs(blocks=3)
    offline = generate(model, text, reference, render, mask, noise=SeededNoise(7))

    session = tiny_session(model, text, SeededNoise(7))
    streamed = [
        session.step(reference[:, s : s + 3], render[:, s : s + 3], mask[:, s : s + 3])
        for s in range(0, 9, 3)
    ]

    assert torch.equal(torch.cat(streamed, dim=1), offline)


def test_same_seed_same_video_other_seed_other_video():
    model = tiny_dit()
    inputs = tiny_inputs(blocks=2)
    first = generate(model, *inputs, noise=SeededNoise(3))
    assert torch.equal(first, generate(model, *inputs, noise=SeededNoise(3)))
    assert not torch.allclose(first, generate(model, *inputs, noise=SeededNoise(4)))


def test_cache_is_allocated_once_over_twenty_blocks():
    model = tiny_dit()
    text, reference, render, mask = tiny_inputs(blocks=1)
    session = tiny_session(model, text)
    buffers = session.cache.buffers()
    pointers = [buffer.data_ptr() for buffer in buffers]
    shapes = [buffer.shape for buffer in buffers]
    text_kv = session.cache.text

    for _ in range(20):
        session.step(reference, render, mask)

    assert [b.data_ptr() for b in session.cache.buffers()] == pointers
    assert [b.shape for b in session.cache.buffers()] == shapes
    assert all(a is b for a, b in zip(session.cache.buffers(), buffers))
    assert session.cache.text is text_kv
    assert session.cache.context_tokens == 2 * 3 * model.config.tokens_per_frame(*TINY_LATENT)


def streamed(session, reference, render, mask, frames_per_block=3):
    """Every block of the inputs through ``session``, concatenated along the frames."""
    starts = range(0, reference.shape[1], frames_per_block)
    window = [slice(start, start + frames_per_block) for start in starts]
    return torch.cat(
        [session.step(reference[:, w], render[:, w], mask[:, w]) for w in window], dim=1
    )


def prepared_tiny_cache(model, text):
    height, width = TINY_LATENT
    return prepare_cache(model, text, latent_height=height, latent_width=width)


def test_session_on_a_prepared_cache_equals_one_that_prepares_its_own():
    model = tiny_dit()
    text, reference, render, mask = tiny_inputs(blocks=2)
    cache = prepared_tiny_cache(model, text)
    height, width = TINY_LATENT

    session = Session(
        model, text, latent_height=height, latent_width=width, noise=SeededNoise(5), cache=cache
    )
    on_prepared = streamed(session, reference, render, mask)

    assert session.cache is cache
    assert torch.equal(
        on_prepared, streamed(tiny_session(model, text, SeededNoise(5)), reference, render, mask)
    )


def test_sessions_in_a_row_on_one_prepared_cache_equal_fresh_sessions():
    model = tiny_dit()
    text, reference, render, mask = tiny_inputs(blocks=2)
    cache = prepared_tiny_cache(model, text)
    height, width = TINY_LATENT
    pointers = [buffer.data_ptr() for buffer in cache.buffers()]

    for seed in (1, 2):
        reused = Session(
            model,
            text,
            latent_height=height,
            latent_width=width,
            noise=SeededNoise(seed),
            cache=cache,
        )
        fresh = tiny_session(model, text, SeededNoise(seed))
        assert torch.equal(
            streamed(reused, reference, render, mask), streamed(fresh, reference, render, mask)
        )
    assert [buffer.data_ptr() for buffer in cache.buffers()] == pointers


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("latent size", "prepared for .*capacity_tokens"),
        ("batch", "prepared for .*batch=1"),
        ("dtype", "torch.float64 on cpu, the model torch.float32"),
    ],
)
def test_session_refuses_a_prepared_cache_that_does_not_fit(change, message):
    model = tiny_dit()
    text, *_ = tiny_inputs(blocks=1)
    height, width = TINY_LATENT
    cache = prepared_tiny_cache(model.double() if change == "dtype" else model, text)
    model.float()
    if change == "batch":
        text = text.expand(2, -1, -1)
    if change == "latent size":
        height *= 2

    with pytest.raises(WorldInputError, match=f"prepared cache does not fit.*{message}"):
        Session(
            model, text, latent_height=height, latent_width=width, noise=SeededNoise(0), cache=cache
        )


def test_later_blocks_see_the_previous_prediction():
    model = tiny_dit()
    text, reference, render, mask = tiny_inputs(blocks=1)
    same_noise = ReplayedNoise([torch.zeros_like(reference)] * 8)
    session = tiny_session(model, text, same_noise)
    first = session.step(reference, render, mask)
    second = session.step(reference, render, mask)
    assert not torch.allclose(first, second)


def test_release_sampler_places_the_noisy_block_after_two_blocks():
    assert SamplerConfig().denoise_frame_offset == 6
    with pytest.raises(ValueError, match="use at least 6"):
        SamplerConfig(denoise_frame_offset=3)


def test_frame_count_not_a_whole_number_of_blocks_is_refused():
    model = tiny_dit()
    text, reference, render, mask = tiny_inputs(blocks=2)
    with pytest.raises(WorldInputError, match="whole number of 3-frame blocks"):
        generate(model, text, reference[:, :4], render[:, :4], mask[:, :4], noise=SeededNoise(0))


def test_mismatched_condition_and_reference_lengths_are_refused():
    model = tiny_dit()
    text, reference, render, mask = tiny_inputs(blocks=2)
    with pytest.raises(WorldInputError, match="frame counts differ"):
        generate(model, text, reference, render[:, :3], mask, noise=SeededNoise(0))


def test_latent_size_not_divisible_by_the_patch_is_refused_by_the_session():
    model = tiny_dit()
    text, *_ = tiny_inputs(blocks=1)
    with pytest.raises(ValueError, match="not divisible by the patch"):
        Session(model, text, latent_height=5, latent_width=6, noise=SeededNoise(0))


def test_block_of_the_wrong_shape_is_refused():
    model = tiny_dit()
    text, reference, render, mask = tiny_inputs(blocks=1)
    session = tiny_session(model, text)
    with pytest.raises(WorldInputError, match="mask latents have shape"):
        session.step(reference, render, mask[:, :, :2])


def test_text_without_a_batch_axis_is_refused_with_the_layout():
    model = tiny_dit()
    text, reference, render, mask = tiny_inputs(blocks=1)
    with pytest.raises(WorldInputError, match=r"text embeddings have 2 dimensions") as error:
        generate(model, text[0], reference, render, mask, noise=SeededNoise(0))
    assert "[batch, text tokens, text dim]" in str(error.value)
    with pytest.raises(WorldInputError, match=r"text embeddings have 2 dimensions"):
        tiny_session(model, text[0])


@pytest.mark.parametrize("input_index, name", [(1, "reference"), (2, "render"), (3, "mask")])
def test_latents_without_a_batch_axis_are_refused_by_name(input_index, name):
    model = tiny_dit()
    inputs = list(tiny_inputs(blocks=1))
    inputs[input_index] = inputs[input_index][0]
    with pytest.raises(WorldInputError, match=rf"{name} latents have 4 dimensions") as error:
        generate(model, *inputs, noise=SeededNoise(0))
    assert "[batch, latent frames, channels, latent height, latent width]" in str(error.value)
    assert "missing batch axis" in str(error.value)


def test_session_step_refuses_latents_of_the_wrong_rank():
    model = tiny_dit()
    text, reference, render, mask = tiny_inputs(blocks=1)
    session = tiny_session(model, text)
    with pytest.raises(WorldInputError, match="render latents have 6 dimensions"):
        session.step(reference, render[None], mask)


@pytest.mark.parametrize("input_index", [1, 2, 3])
def test_nan_inputs_are_refused(input_index):
    model = tiny_dit()
    inputs = list(tiny_inputs(blocks=1))
    inputs[input_index] = inputs[input_index].clone()
    inputs[input_index][0, 1, 0, 0, 0] = float("nan")
    with pytest.raises(WorldInputError, match="NaN"):
        generate(model, *inputs, noise=SeededNoise(0))


def test_nan_text_is_refused():
    model = tiny_dit()
    text, *_ = tiny_inputs(blocks=1)
    text[0, 0, 0] = float("nan")
    with pytest.raises(WorldInputError, match="text embeddings contain NaN"):
        tiny_session(model, text)


def test_replayed_noise_that_runs_out_says_what_is_missing():
    model = tiny_dit()
    text, reference, render, mask = tiny_inputs(blocks=1)
    with pytest.raises(WorldInputError, match="ran out after 2 tensors"):
        generate(
            model,
            text,
            reference,
            render,
            mask,
            noise=ReplayedNoise([torch.zeros_like(reference)] * 2),
        )


def test_progress_callback_runs_after_every_denoising_step():
    model = tiny_dit()
    text, reference, render, mask = tiny_inputs(blocks=1)
    session = tiny_session(model, text)
    seen = []
    session.step(reference, render, mask, on_step=seen.append)
    assert seen == list(range(len(session.sampler.schedule.denoising_steps)))


def test_bf16_session_follows_the_fp32_one():
    inputs = tiny_inputs(blocks=2)
    full = generate(tiny_dit(), *inputs, noise=SeededNoise(0))
    half = generate(tiny_dit(dtype=torch.bfloat16), *inputs, noise=SeededNoise(0))
    assert half.dtype == torch.bfloat16
    # bf16 keeps 8 mantissa bits; a few percent of mean deviation is what two blocks accumulate.
    assert (half.float() - full).abs().mean() < 0.05 * full.abs().mean()


def test_batch_items_are_generated_independently():
    model = tiny_dit()
    text, reference, render, mask = tiny_inputs(blocks=2, batch=2)
    noise = [torch.randn(2, 3, LATENT_CHANNELS, *TINY_LATENT) for _ in range(8)]
    together = generate(model, text, reference, render, mask, noise=ReplayedNoise(noise))
    for item in range(2):
        alone = generate(
            model,
            *(x[item : item + 1] for x in (text, reference, render, mask)),
            noise=ReplayedNoise(n[item : item + 1] for n in noise),
        )
        torch.testing.assert_close(together[item : item + 1], alone, atol=1e-5, rtol=0)


def test_bf16_session_takes_x0_in_float64_and_renoises_in_float32():
    """SPEC §4 step math in a bf16 model: x0 = x_t − σ·flow in float64 cast to bf16, then
    (1 − σ)·x0 + σ·ε mixed in float32 with a bf16 ε, cast back to bf16."""
    model = tiny_dit(dtype=torch.bfloat16)
    text, reference, render, mask = tiny_inputs(blocks=1)
    schedule = SamplerConfig().schedule
    steps = len(schedule.denoising_steps)
    noise = [
        torch.randn(reference.shape, generator=torch.Generator().manual_seed(n))
        for n in range(steps)
    ]
    calls, handle = record_calls(model)
    try:
        output = generate(model, text, reference, render, mask, noise=ReplayedNoise(noise))
    finally:
        handle.remove()
    denoising = [call for call in calls if not call["prefill"]]
    assert len(denoising) == steps
    for step, call in enumerate(denoising):
        noisy = call["latents"][:, :, :LATENT_CHANNELS]
        sigma = schedule.sigma_at(call["timestep"][0])
        x0 = (noisy.double() - sigma.double() * call["output"].double()).bfloat16()
        if step + 1 == steps:
            assert torch.equal(output, x0)
            continue
        next_sigma = schedule.sigma_at(denoising[step + 1]["timestep"][0])
        fresh = noise[step + 1].bfloat16()
        renoised = ((1 - next_sigma) * x0.float() + next_sigma * fresh.float()).bfloat16()
        assert torch.equal(denoising[step + 1]["latents"][:, :, :LATENT_CHANNELS], renoised)
