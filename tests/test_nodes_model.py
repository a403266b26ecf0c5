"""Model-side nodes (loaders, Initialize World Cache, World Sampler, Decode) called outside ComfyUI.

Tiny models with the real architectures and random weights: a causal DiT saved with its config in
the safetensors metadata, a small-width Wan2.1 VAE behind a stand-in of ComfyUI's VAE object, a
TAEHV file, and a synthetic scene rendered by the Render Condition node's own function.
"""

from __future__ import annotations

import dataclasses
import sys
import types

import pytest
import torch
from inspatio_nodes.core.codec import from_comfy_latent, to_comfy_latent
from inspatio_nodes.core.paths import CameraPath
from inspatio_nodes.core.render import render_condition
from inspatio_nodes.core.scene import scene_from_video
from inspatio_nodes.core.splat import pack_mask_latents
from inspatio_nodes.core.wan.checkpoints import save_dit
from inspatio_nodes.core.wan.dit import CausalWanDiT, WanDiTConfig
from inspatio_nodes.core.wan.taehv import TAEHV
from inspatio_nodes.core.wan.vae import WanVAE, WanVAEConfig
from inspatio_nodes.core.world import SeededNoise, generate
from inspatio_nodes.demo import HostVAE
from inspatio_nodes.nodes import comfy as cf
from inspatio_nodes.nodes.decode import InSpatioDecode
from inspatio_nodes.nodes.loaders import (
    InSpatioPromptEmbeddingsLoader,
    InSpatioTAEHVLoader,
    InSpatioWorldModelLoader,
)
from inspatio_nodes.nodes.sampler import (
    InSpatioWorldCacheInit,
    InSpatioWorldSampler,
    parse_denoising_steps,
)
from safetensors.torch import save_file

#: The tiny models of every model-side test (the demo, workflow and server tests import them).
TINY_DIT = WanDiTConfig(
    dim=32, ffn_dim=64, freq_dim=16, num_heads=2, num_layers=2, text_dim=8, text_len=6
)
TINY_VAE = WanVAEConfig(base_dim=8)
HEIGHT, WIDTH = 16, 32
VALID_FRAMES = 10  # padded to 21 frames = 6 latent frames = 2 blocks, cut back to 10
PADDED_FRAMES = 21
PADDED_LATENT_FRAMES = 6
PROMPT_TOKENS = 4
RELEASED_STEPS = "1000, 750, 500, 250"
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    save_dit(CausalWanDiT(TINY_DIT), folder / "tiny_world.safetensors")
    save_file(
        {key: value.contiguous() for key, value in TAEHV().state_dict().items()},
        str(folder / "taew.safetensors"),
    )
    save_file(
        {"embeddings": torch.randn(PROMPT_TOKENS, TINY_DIT.text_dim)},
        str(folder / "prompt.safetensors"),
    )
    return folder


@pytest.fixture(scope="module")
def world_model(tiny_files):
    (model,) = InSpatioWorldModelLoader().load(
        str(tiny_files / "tiny_world.safetensors"), "fp32", "auto"
    )
    return model


@pytest.fixture(scope="module")
def host_vae():
    torch.manual_seed(1)
    return HostVAE(WanVAE(TINY_VAE).eval())


@pytest.fixture(scope="module")
def prompt(tiny_files):
    (conditioning,) = InSpatioPromptEmbeddingsLoader().load(str(tiny_files / "prompt.safetensors"))
    return conditioning


def synthetic_condition(frames: int = VALID_FRAMES):
    """A slanted textured plane seen by a static video camera, rendered along a sideways dolly."""
    generator = torch.Generator().manual_seed(2)
    video = torch.rand(frames, 3, HEIGHT, WIDTH, generator=generator) * 2 - 1
    rows = torch.linspace(2.0, 3.0, HEIGHT)[:, None].expand(HEIGHT, WIDTH)
    depth = rows.expand(frames, HEIGHT, WIDTH).clone()
    intrinsics = torch.tensor([[20.0, 0.0, WIDTH / 2], [0.0, 20.0, HEIGHT / 2], [0.0, 0.0, 1.0]])
    scene = scene_from_video(video, depth, intrinsics, fps=8.0, resolution=None)
    poses = torch.eye(4, dtype=torch.float64).repeat(frames, 1, 1)
    poses[:, 0, 3] = torch.linspace(0.0, 0.3, frames, dtype=torch.float64)
    return render_condition(scene, CameraPath(world_to_camera=poses))


@pytest.fixture(scope="module")
def world_state(world_model, host_vae, prompt):
    (state,) = InSpatioWorldCacheInit().initialize(
        world_model, host_vae, prompt, synthetic_condition()
    )
    return state


def run_sampler(world_state, seed=0, num_blocks=0, **extra):
    return InSpatioWorldSampler().sample(
        world_state, seed, RELEASED_STEPS, 5.0, num_blocks, **extra
    )


# --- declarations ----------------------------------------------------------------------------


MODEL_NODES = (
    InSpatioWorldModelLoader,
    InSpatioTAEHVLoader,
    InSpatioPromptEmbeddingsLoader,
    InSpatioWorldCacheInit,
    InSpatioWorldSampler,
    InSpatioDecode,
)


@pytest.mark.parametrize("node", MODEL_NODES, ids=lambda node: node.__name__)
def test_every_node_is_declared_in_the_inspatio_category_with_a_tooltip_per_input(node):
    import inspatio_nodes

    declared = node.INPUT_TYPES()
    inputs = {**declared["required"], **declared.get("optional", {})}

    assert inspatio_nodes.NODE_CLASS_MAPPINGS[node.__name__] is node
    assert node.__name__.startswith("InSpatio") and node.CATEGORY.startswith("InSpatio")
    assert callable(getattr(node(), node.FUNCTION))
    assert len(node.OUTPUT_TOOLTIPS) == len(node.RETURN_TYPES) == len(node.RETURN_NAMES)
    assert [name for name, (_, options) in inputs.items() if not options.get("tooltip")] == []


def test_model_sockets_cannot_be_wired_into_core_nodes():
    assert InSpatioWorldModelLoader.RETURN_TYPES == ("INSPATIO_WORLD_MODEL",)
    assert InSpatioTAEHVLoader.RETURN_TYPES == ("INSPATIO_CODEC",)
    assert InSpatioWorldCacheInit.RETURN_TYPES == ("INSPATIO_WORLD_STATE",)
    seed_options = InSpatioWorldSampler.INPUT_TYPES()["required"]["seed"][1]
    assert seed_options["control_after_generate"] is True


def test_sampler_widget_defaults_are_the_release_schedule():
    from inspatio_nodes.core.schedule import RELEASED_DENOISING_STEPS, RELEASED_SHIFT

    required = InSpatioWorldSampler.INPUT_TYPES()["required"]
    steps = parse_denoising_steps("test", required["denoising_steps"][1]["default"])

    assert steps == RELEASED_DENOISING_STEPS
    assert required["shift"][1]["default"] == RELEASED_SHIFT


def test_importing_the_pack_imports_neither_torch_nor_the_core():
    import subprocess

    code = "import sys, inspatio_nodes; print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('inspatio_nodes.core')))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


# --- loaders -----------------------------------------------------------------------------------


def test_world_model_loader_reads_a_tiny_checkpoint_in_the_chosen_dtype(tiny_files, world_model):
    (half,) = InSpatioWorldModelLoader().load(
        str(tiny_files / "tiny_world.safetensors"), "bf16", "sdpa"
    )

    assert world_model.config == TINY_DIT and world_model.dtype == torch.float32
    assert half.dtype == torch.bfloat16 and half.attention_backend == "sdpa"
    assert world_model.managed.patcher is None  # outside ComfyUI nothing manages it


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (("missing.safetensors", "fp32", "auto"), "input 'checkpoint'.*not a file"),
        (("tiny_world.safetensors", "fp8", "auto"), "input 'weight_dtype'.*'fp8'"),
        (("tiny_world.safetensors", "fp32", "sage-2"), "input 'attention'.*'sage-2'"),
    ],
)
def test_world_model_loader_errors_name_the_node_and_the_input(tiny_files, arguments, message):
    checkpoint, *rest = arguments
    with pytest.raises(cf.NodeInputError, match=f"Load InSpatio-World Model: {message}"):
        InSpatioWorldModelLoader().load(str(tiny_files / checkpoint), *rest)


def test_world_model_loader_names_the_input_when_given_a_codec_file(tiny_files):
    with pytest.raises(cf.NodeInputError, match="input 'checkpoint' cannot be used"):
        InSpatioWorldModelLoader().load(str(tiny_files / "taew.safetensors"), "fp32", "auto")


def test_taehv_loader_gives_a_streaming_codec(tiny_files):
    (codec,) = InSpatioTAEHVLoader().load(str(tiny_files / "taew.safetensors"))

    frames = codec.module.decode(torch.zeros(1, 2, 16, 2, 4), codec.module.new_state())
    assert frames.shape == (1, 5, 3, 16, 32)


def test_prompt_embeddings_become_conditioning(prompt, tiny_files):
    embeddings = prompt[0][0]

    assert embeddings.shape == (1, PROMPT_TOKENS, TINY_DIT.text_dim)
    with pytest.raises(cf.NodeInputError, match="input 'embeddings'.*'embeddings'"):
        InSpatioPromptEmbeddingsLoader().load(str(tiny_files / "tiny_world.safetensors"))


# --- Initialize World Cache --------------------------------------------------------------------


def test_world_cache_pads_the_run_to_whole_blocks_and_encodes_each_stream(world_state):
    latent_size = (HEIGHT // 8, WIDTH // 8)

    assert world_state.reference.shape == (1, PADDED_LATENT_FRAMES, 16, *latent_size)
    assert world_state.render.shape == (1, PADDED_LATENT_FRAMES, 16, *latent_size)
    assert world_state.mask.shape == (1, PADDED_LATENT_FRAMES, 4, *latent_size)
    assert world_state.text.shape == (1, TINY_DIT.text_len, TINY_DIT.text_dim)
    assert world_state.valid_frames == VALID_FRAMES


def test_world_cache_mask_latents_pack_the_padded_mask_as_plus_and_minus_one(world_state):
    mask = synthetic_condition().mask[:, 0]
    padded = torch.cat([mask, mask[-1:].expand(PADDED_FRAMES - VALID_FRAMES, -1, -1)])

    assert torch.equal(world_state.mask, pack_mask_latents(padded * 2 - 1))


def test_world_cache_source_latents_equal_one_whole_encode_of_the_padded_video(
    world_state, host_vae
):
    condition = synthetic_condition()
    last = condition.source_frames[-1:]
    padded = torch.cat(
        [condition.source_frames, last.expand(PADDED_FRAMES - VALID_FRAMES, -1, -1, -1)]
    )
    codec = cf.vae_codec("test", "vae", host_vae).module

    whole = codec.encode(padded[None], codec.new_state())

    torch.testing.assert_close(world_state.reference, whole, rtol=0, atol=1e-5)


def fresh_state(world_model, host_vae, prompt):
    (state,) = InSpatioWorldCacheInit().initialize(
        world_model, host_vae, prompt, synthetic_condition()
    )
    return state


def test_world_cache_allocates_the_kv_cache_with_the_prompt_text_kv(world_model, host_vae, prompt):
    state = fresh_state(world_model, host_vae, prompt)
    cache = state.cache.cache
    tokens_per_frame = TINY_DIT.tokens_per_frame(HEIGHT // 8, WIDTH // 8)
    context_blocks, frames_per_block = 2, 3

    assert cache.shape.capacity_tokens == context_blocks * frames_per_block * tokens_per_frame
    assert (cache.shape.num_layers, cache.shape.batch) == (TINY_DIT.num_layers, 1)
    assert cache.dtype == world_model.dtype and len(cache.text) == TINY_DIT.num_layers
    expected_text_kv = world_model.managed.module.text_kv(state.text)
    assert all(torch.equal(got, want) for got, want in zip(cache.text, expected_text_kv))


def test_world_cache_refuses_a_vae_of_another_kind(world_model, prompt):
    not_a_vae = HostVAE(torch.nn.Conv2d(3, 4, 1))

    with pytest.raises(
        cf.NodeInputError, match="Initialize World Cache: input 'vae' cannot be used"
    ):
        InSpatioWorldCacheInit().initialize(world_model, not_a_vae, prompt, synthetic_condition())


# --- World Sampler ------------------------------------------------------------------------------


def test_sampler_outputs_raw_latents_and_frames_cut_to_the_render(world_state):
    latent, frames = run_sampler(world_state)

    assert latent["samples"].shape == (1, 16, PADDED_LATENT_FRAMES, HEIGHT // 8, WIDTH // 8)
    assert frames.shape == (VALID_FRAMES, HEIGHT, WIDTH, 3)
    assert 0 <= frames.min() and frames.max() <= 1


def test_sampler_equals_the_core_offline_generator_for_the_same_seed(world_state):
    latent, _ = run_sampler(world_state, seed=7)
    model = world_state.model.managed.module

    expected = generate(
        model,
        world_state.text,
        world_state.reference,
        world_state.render,
        world_state.mask,
        noise=SeededNoise(7),
    )

    assert torch.equal(latent["samples"], to_comfy_latent(expected))


def test_sampler_releases_the_cache_when_sampling_ends(world_model, host_vae, prompt):
    state = fresh_state(world_model, host_vae, prompt)
    cache = state.cache.cache

    run_sampler(state, seed=1)

    assert state.cache.cache is None
    assert cache.released and cache.buffers() == [] and cache.text == []


def test_sampler_run_again_on_a_released_state_equals_a_fresh_run(world_model, host_vae, prompt):
    state = fresh_state(world_model, host_vae, prompt)
    run_sampler(state, seed=1)

    again, again_frames = run_sampler(state, seed=2)
    fresh, fresh_frames = run_sampler(fresh_state(world_model, host_vae, prompt), seed=2)

    assert torch.equal(again["samples"], fresh["samples"])
    assert torch.equal(again_frames, fresh_frames)
    assert state.cache.cache is None


def test_sampler_is_deterministic_per_seed(world_state):
    first, _ = run_sampler(world_state, seed=3)
    again, _ = run_sampler(world_state, seed=3)
    other, _ = run_sampler(world_state, seed=4)

    assert torch.equal(first["samples"], again["samples"])
    assert not torch.equal(first["samples"], other["samples"])


def test_sampler_streamed_frames_equal_one_decode_of_all_latents(world_state):
    latent, frames = run_sampler(world_state, seed=5)
    codec = world_state.decoder.module

    whole = codec.decode(from_comfy_latent(latent["samples"]), codec.new_state())

    torch.testing.assert_close(
        frames, cf.frames_to_image(whole[0])[:VALID_FRAMES], rtol=0, atol=1e-5
    )


def test_sampler_generates_only_the_requested_blocks(world_state):
    latent, frames = run_sampler(world_state, num_blocks=1)
    full, _ = run_sampler(world_state)

    assert latent["samples"].shape[2] == 3 and frames.shape[0] == 9
    assert torch.equal(latent["samples"], full["samples"][:, :, :3])


def test_sampler_decodes_with_a_taehv_when_one_is_connected(world_state, tiny_files):
    (taehv,) = InSpatioTAEHVLoader().load(str(tiny_files / "taew.safetensors"))

    _, frames = run_sampler(world_state, decoder=taehv)

    assert frames.shape == (VALID_FRAMES, HEIGHT, WIDTH, 3)


def test_sampler_reports_every_step_and_a_preview_per_block(world_state, host_progress):
    run_sampler(world_state)

    steps = [value for value, _, preview in host_progress if preview is None]
    previews = [value for value, _, preview in host_progress if preview is not None]
    assert steps == list(range(1, 9)) and {total for _, total, _ in host_progress} == {8}
    assert previews == [4, 8]  # one per finished block, after its four steps


def test_sampler_stops_between_steps_when_cancelled_and_releases_the_cache(
    world_model, host_vae, prompt, monkeypatch
):
    class Interrupted(Exception):
        pass

    checks = []

    def throw_when_cancelled():
        checks.append(None)
        if len(checks) == 3:
            raise Interrupted

    host = types.SimpleNamespace(
        throw_exception_if_processing_interrupted=throw_when_cancelled,
        get_torch_device=lambda: torch.device("cpu"),
        intermediate_device=lambda: torch.device("cpu"),
        soft_empty_cache=lambda: None,
    )
    state = fresh_state(world_model, host_vae, prompt)
    cache = state.cache.cache
    monkeypatch.setitem(sys.modules, "comfy.model_management", host)

    with pytest.raises(Interrupted):
        run_sampler(state)
    assert len(checks) == 3
    assert state.cache.cache is None and cache.released


def test_sampler_names_the_world_state_when_its_latents_are_broken(world_model, host_vae, prompt):
    state = fresh_state(world_model, host_vae, prompt)
    broken = dataclasses.replace(state, reference=torch.full_like(state.reference, float("nan")))

    with pytest.raises(cf.NodeInputError, match="InSpatio World Sampler: input 'world_state'.*NaN"):
        run_sampler(broken)
    assert state.cache.cache is None  # released on error too


def test_sampler_refuses_unreadable_denoising_steps():
    message = InSpatioWorldSampler.VALIDATE_INPUTS("1000, seven")

    assert "InSpatio World Sampler: input 'denoising_steps'" in message
    assert InSpatioWorldSampler.VALIDATE_INPUTS(RELEASED_STEPS) is True


@pytest.mark.parametrize(
    ("widgets", "message"),
    [
        (("1000, 0", 5.0, 0), "input 'denoising_steps' cannot be used.*outside 1..1000"),
        ((RELEASED_STEPS, 0.0, 0), "input 'shift' is 0.0"),
        ((RELEASED_STEPS, 5.0, -1), "input 'num_blocks' is -1"),
    ],
)
def test_sampler_errors_name_the_widget_and_release_the_cache(
    world_model, host_vae, prompt, widgets, message
):
    state = fresh_state(world_model, host_vae, prompt)

    with pytest.raises(cf.NodeInputError, match=f"InSpatio World Sampler: {message}"):
        InSpatioWorldSampler().sample(state, 0, *widgets)
    assert state.cache.cache is None


# --- Decode -------------------------------------------------------------------------------------


def test_decode_node_streams_each_latent_like_one_whole_decode(world_state, host_vae):
    latent, frames = run_sampler(world_state, seed=9)
    codec = cf.vae_codec("test", "vae", host_vae).module

    (decoded,) = InSpatioDecode().decode(latent, host_vae)

    whole = codec.decode(from_comfy_latent(latent["samples"]), codec.new_state())
    # Per-latent and whole decodes differ only by float32 rounding of differently shaped convolutions.
    torch.testing.assert_close(decoded, cf.frames_to_image(whole[0]), rtol=0, atol=1e-5)
    torch.testing.assert_close(decoded[:VALID_FRAMES], frames, rtol=0, atol=1e-5)


def test_decode_node_refuses_an_image_latent():
    with pytest.raises(cf.NodeInputError, match="InSpatio Decode: input 'latent'"):
        InSpatioDecode().decode({"samples": torch.zeros(1, 16, 2, 4)}, None)
