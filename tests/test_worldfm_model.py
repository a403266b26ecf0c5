"""The WorldFM frame model (``core/worldfm/model.py``): parity, positional embedding, loader."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import fixture_cases, load_json, require_fixture, sibling
from inspatio_nodes.core.worldfm.model import (
    DEFAULT_CONFIG,
    WorldFMCheckpointError,
    WorldFMConfig,
    WorldFMModel,
    load_worldfm,
    save_worldfm_safetensors,
    sincos_position_table,
    timestep_frequencies,
)
from safetensors.torch import load_file, save_file

MODEL_CASES = fixture_cases("*worldfm_model*_io*.safetensors")
TIMESTEP_KEYS = ("t999", "t200")


def tiny_config(**overrides) -> WorldFMConfig:
    sizes = {
        "depth": 2,
        "hidden_size": 32,
        "num_heads": 2,
        "mlp_hidden": 64,
        "input_size": 8,
        "pe_interpolation": 0.125,
    }
    return WorldFMConfig(**(sizes | overrides))


def random_model(config: WorldFMConfig, seed: int = 0) -> WorldFMModel:
    generator = torch.Generator().manual_seed(seed)
    model = WorldFMModel(config)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(
                torch.randn(parameter.shape, generator=generator) / math.sqrt(parameter.shape[-1])
            )
    return model.eval()


def released_style_state(model: WorldFMModel) -> dict[str, torch.Tensor]:
    """The model's tensors plus the keys the release carries but inference never reads."""
    config = model.config
    d = config.hidden_size
    state = dict(model.state_dict())
    state["pos_embed"] = torch.zeros(1, config.base_size**2, d)
    state["y_embedder.y_proj.fc2.weight"] = torch.zeros(d, d)
    state["plucker_proj.0.weight"] = torch.zeros(d, 6)
    for index in range(config.depth):
        state[f"blocks.{index}.cross_attn.q_linear.weight"] = torch.zeros(d, d)
    return state


def _model_case(case_path):
    io = load_file(str(require_fixture(case_path)))
    weights_path = require_fixture(sibling(case_path, "io", "weights"))
    debug = load_file(str(require_fixture(sibling(case_path, "io", "debug"))))
    config = load_json(require_fixture(sibling(case_path, "io", "config", ".json")))
    model = load_worldfm(weights_path, num_heads=config["model_constructor"]["num_heads"])
    return io, debug, config, model


@pytest.mark.parametrize("case_path", MODEL_CASES)
def test_loader_infers_the_official_constructor_from_shapes(case_path):
    _, _, config, model = _model_case(case_path)
    constructor = config["model_constructor"]
    assert model.config.depth == constructor["depth"]
    assert model.config.hidden_size == constructor["hidden_size"]
    assert model.config.patch_size == constructor["patch_size"]
    assert model.config.input_size == constructor["input_size"]
    assert model.config.pe_interpolation == pytest.approx(constructor["pe_interpolation"], abs=0)
    assert model.config.in_channels == constructor["in_channels"]
    assert model.config.mlp_hidden == int(constructor["hidden_size"] * constructor["mlp_ratio"])


@pytest.mark.parametrize("case_path", MODEL_CASES)
def test_forward_matches_the_official_model_at_both_timesteps(case_path):
    io, _, _, model = _model_case(case_path)
    with torch.no_grad():
        for key in TIMESTEP_KEYS:
            out = model(
                io["inputs.z"], io[f"inputs.timestep_{key}"], io["inputs.cond1"], io["inputs.cond2"]
            )
            torch.testing.assert_close(out, io[f"model.{key}.out"], atol=1e-5, rtol=0)
        strip = torch.cat([io["inputs.z"], io["inputs.cond1"], io["inputs.cond2"]], dim=-1)
        full = model.forward_strip(strip, io["inputs.timestep_t999"])
    torch.testing.assert_close(full, io["model.t999.full_width"], atol=1e-5, rtol=0)


@pytest.mark.parametrize("case_path", MODEL_CASES)
def test_sub_module_activations_match_the_official_debug_trace(case_path):
    io, debug, _, model = _model_case(case_path)
    captured: dict[str, torch.Tensor] = {}
    hooks = [
        model.x_embedder.register_forward_hook(
            lambda m, i, o: captured.__setitem__("x_embedder", o)
        )
    ]
    hooks += [
        model.t_embedder.register_forward_hook(
            lambda m, i, o: captured.__setitem__("t_embedder", o)
        )
    ]
    hooks += [
        model.t_block.register_forward_hook(lambda m, i, o: captured.__setitem__("t_block", o))
    ]
    hooks += [
        model.final_layer.register_forward_hook(
            lambda m, i, o: captured.__setitem__("final_layer", o)
        )
    ]
    for index, block in enumerate(model.blocks):
        hooks.append(
            block.register_forward_hook(
                lambda m, i, o, name=f"blocks.{index}": captured.__setitem__(name, o)
            )
        )
    config = model.config
    for key in TIMESTEP_KEYS:
        captured.clear()
        timestep = io[f"inputs.timestep_{key}"]
        with torch.no_grad():
            model(io["inputs.z"], timestep, io["inputs.cond1"], io["inputs.cond2"])
        rows, columns = (
            size // config.patch_size for size in io["model.t999.full_width"].shape[-2:]
        )
        captured["pos_embed"] = sincos_position_table(
            config.hidden_size, rows, columns, config.base_size, config.pe_interpolation
        )[None]
        captured["timestep_frequency"] = timestep_frequencies(timestep)
        for name, value in captured.items():
            torch.testing.assert_close(
                value, debug[f"debug.{key}.{name}"], atol=1e-5, rtol=0, msg=name
            )
    for hook in hooks:
        hook.remove()


def test_position_table_squeezes_the_three_panel_strip_into_the_base_grid():
    hidden, rows, base, pe_interpolation = 16, 2, 2, 0.5
    columns = 3 * rows
    table = sincos_position_table(hidden, rows, columns, base, pe_interpolation)
    quarter = hidden // 4
    for row in range(rows):
        for column in range(columns):
            # Columns advance by 1/3 of a row step: the panels share one coordinate range.
            column_position = column / (columns / base) / pe_interpolation
            row_position = row / (rows / base) / pe_interpolation
            omegas = [10000 ** (-k / quarter) for k in range(quarter)]
            expected = (
                [math.sin(column_position * w) for w in omegas]
                + [math.cos(column_position * w) for w in omegas]
                + [math.sin(row_position * w) for w in omegas]
                + [math.cos(row_position * w) for w in omegas]
            )
            torch.testing.assert_close(
                table[row * columns + column], torch.tensor(expected), atol=1e-6, rtol=0
            )


def test_timestep_features_put_cosines_first():
    features = timestep_frequencies(torch.tensor([0, 999]))
    assert features.shape == (2, 256)
    assert torch.all(features[0, :128] == 1.0) and torch.all(features[0, 128:] == 0.0)
    assert features[1, 0] == pytest.approx(math.cos(999.0), abs=1e-4)
    assert features[1, 128] == pytest.approx(math.sin(999.0), abs=1e-4)


def test_output_is_the_target_panel_and_depends_on_both_conditions():
    model = random_model(tiny_config())
    generator = torch.Generator().manual_seed(1)
    noisy, render, reference = (torch.randn(1, 4, 8, 8, generator=generator) for _ in range(3))
    t = torch.tensor([999])
    with torch.no_grad():
        out = model(noisy, t, render, reference)
        full = model.forward_strip(torch.cat([noisy, render, reference], -1), t)
        swapped = model(noisy, t, reference, render)
    assert out.shape == (1, 8, 8, 8)
    assert torch.equal(out, full[..., :8])
    assert not torch.allclose(out, swapped)


def test_released_style_pth_loads_and_its_safetensors_copy_gives_the_same_output(tmp_path):
    model = random_model(tiny_config())
    state = {f"module.{key}": value for key, value in released_style_state(model).items()}
    torch.save({"state_dict": state}, tmp_path / "worldfm_2-step.pth")
    loaded = load_worldfm(tmp_path / "worldfm_2-step.pth", num_heads=2)
    save_worldfm_safetensors(
        tmp_path / "worldfm_2-step.pth", tmp_path / "copy.safetensors", num_heads=2
    )
    copied = load_worldfm(tmp_path / "copy.safetensors")
    assert loaded.config == model.config == copied.config
    inputs = [torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    with torch.no_grad():
        expected = model(inputs[0], torch.tensor([200]), inputs[1], inputs[2])
        assert torch.equal(loaded(inputs[0], torch.tensor([200]), inputs[1], inputs[2]), expected)
        assert torch.equal(copied(inputs[0], torch.tensor([200]), inputs[1], inputs[2]), expected)


def test_missing_keys_are_listed(tmp_path):
    state = released_style_state(random_model(tiny_config()))
    del state["blocks.1.mlp.fc2.weight"]
    save_file(state, str(tmp_path / "broken.safetensors"))
    with pytest.raises(
        WorldFMCheckpointError, match=r"missing 1 keys \['blocks.1.mlp.fc2.weight'\]"
    ):
        load_worldfm(tmp_path / "broken.safetensors", num_heads=2)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda s: s.__setitem__("csize_embedder.mlp.0.weight", torch.zeros(2, 2)),
            "micro-conditioning",
        ),
        (lambda s: s.__setitem__("blocks.0.attn.q_norm.weight", torch.zeros(2)), "qk-norm"),
        (
            lambda s: s.__setitem__("x_embedder.proj.weight", torch.zeros(32, 8, 2, 2)),
            "8-channel latents",
        ),
        (lambda s: s.__setitem__("pos_embed", torch.zeros(1, 64 * 64, 32)), "1024-px"),
        (lambda s: s.pop("plucker_proj.0.weight"), "text-to-image"),
    ],
    ids=["micro-conditioning", "qk-norm", "in-channels", "1024px", "text-to-image"],
)
def test_other_pixart_variants_are_named(tmp_path, edit, message):
    state = released_style_state(random_model(tiny_config()))
    edit(state)
    save_file(state, str(tmp_path / "other.safetensors"))
    with pytest.raises(WorldFMCheckpointError, match=message):
        load_worldfm(tmp_path / "other.safetensors", num_heads=2)


def test_default_config_has_the_released_shapes_and_size():
    with torch.device("meta"):
        model = WorldFMModel(DEFAULT_CONFIG)
    state = model.state_dict()
    assert state["x_embedder.proj.weight"].shape == (1152, 4, 2, 2)
    assert state["t_block.1.weight"].shape == (6912, 1152)
    assert state["blocks.27.attn.qkv.weight"].shape == (3456, 1152)
    assert state["blocks.27.mlp.fc1.weight"].shape == (4608, 1152)
    assert state["blocks.0.scale_shift_table"].shape == (6, 1152)
    assert state["final_layer.scale_shift_table"].shape == (2, 1152)
    assert state["final_layer.linear.weight"].shape == (32, 1152)
    used_parameters = sum(parameter.numel() for parameter in model.parameters())
    assert 450e6 < used_parameters < 460e6  # ≈ 457M used of ≈ 612M in the file


def test_head_count_follows_the_pixart_head_width_when_the_file_does_not_record_it(tmp_path):
    model = random_model(tiny_config(hidden_size=144, num_heads=2, mlp_hidden=288))
    torch.save(released_style_state(model), tmp_path / "worldfm.pth")
    assert load_worldfm(tmp_path / "worldfm.pth").config.num_heads == 2
    # 32 wide is no multiple of 72: the head count must be given.
    torch.save(released_style_state(random_model(tiny_config())), tmp_path / "small.pth")
    with pytest.raises(WorldFMCheckpointError, match="pass num_heads"):
        load_worldfm(tmp_path / "small.pth")
