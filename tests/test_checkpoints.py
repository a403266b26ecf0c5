"""Loading the DiT: every accepted key layout and file kind, and a clear error for each wrong file."""

from __future__ import annotations

import io
import subprocess
import sys

import pytest
import torch
from inspatio_nodes.core.wan.checkpoints import (
    CheckpointError,
    infer_dit_config,
    load_dit,
    normalise_dit_keys,
    save_dit,
)
from inspatio_nodes.core.wan.dit import CausalWanDiT, WanDiTConfig
from safetensors.torch import save_file
from test_dit import tiny_dit

# A head dim of 128 (as released) lets the config be inferred from the shapes alone.
INFERABLE = {"dim": 256, "num_heads": 2, "ffn_dim": 64, "freq_dim": 16, "num_layers": 2}
INFERABLE |= {"text_dim": 16, "text_len": 512}


class NotWeights:
    """Pickling this needs code execution, so a weights-only load must refuse it."""


def inferable_model():
    return tiny_dit(seed=3, **INFERABLE)


def prefixed(model, layout: str) -> dict[str, torch.Tensor]:
    state = model.state_dict()
    if layout == "fsdp":
        # Training dumps wrap every block: model.blocks.0._fsdp_wrapped_module.self_attn.q.weight
        wrapped = {}
        for key, tensor in state.items():
            if key.startswith("blocks."):
                _, index, rest = key.split(".", 2)
                key = f"blocks.{index}._fsdp_wrapped_module.{rest}"
            wrapped["model." + key] = tensor
        return wrapped
    return {layout + key: tensor for key, tensor in state.items()}


def port_layout(model) -> dict[str, torch.Tensor]:
    """The third-party port's re-packaged keys: fused q/k/v and cross k/v, renamed modules."""
    state = dict(model.state_dict())
    for index in range(model.config.num_layers):
        block = f"blocks.{index}"
        for kind in ("weight", "bias"):
            qkv = [state.pop(f"{block}.self_attn.{n}.{kind}") for n in ("q", "k", "v")]
            state[f"{block}.self_attention.qkv.{kind}"] = torch.cat(qkv)
            kv = [state.pop(f"{block}.cross_attn.{n}.{kind}") for n in ("k", "v")]
            state[f"{block}.cross_attention.kv.{kind}"] = torch.cat(kv)
    renames = {
        ".self_attn.o.": ".self_attention.output.",
        ".self_attn.norm_q.": ".self_attention.query_norm.",
        ".self_attn.norm_k.": ".self_attention.key_norm.",
        ".norm3.": ".cross_attention_norm.",
        ".cross_attn.q.": ".cross_attention.query.",
        ".cross_attn.o.": ".cross_attention.output.",
        ".cross_attn.norm_q.": ".cross_attention.query_norm.",
        ".cross_attn.norm_k.": ".cross_attention.key_norm.",
        ".ffn.": ".feed_forward.",
    }
    ported = {}
    for key, tensor in state.items():
        for released, port in renames.items():
            key = key.replace(released, port)
        key = key.replace("time_projection.", "time_modulation.").replace(
            "head.head.", "head.linear."
        )
        ported[key] = tensor
    return ported


def write(state: dict[str, torch.Tensor], path, metadata: dict[str, str] | None = None):
    if path.suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, str(path), metadata=metadata)
    else:
        torch.save(state, str(path))
    return path


def assert_same_weights(loaded, model):
    expected = model.state_dict()
    assert loaded.state_dict().keys() == expected.keys()
    assert all(torch.equal(loaded.state_dict()[k], expected[k]) for k in expected)


def test_saved_tiny_model_round_trips_with_its_config_in_metadata(tmp_path):
    model = tiny_dit()
    save_dit(model, tmp_path / "tiny.safetensors")
    loaded = load_dit(tmp_path / "tiny.safetensors")
    assert loaded.config == model.config
    assert_same_weights(loaded, model)


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
@pytest.mark.parametrize("layout", ["model.", "model.diffusion_model.", "", "fsdp"])
def test_released_key_layouts_load_with_an_inferred_config(tmp_path, layout, suffix):
    model = inferable_model()
    path = write(prefixed(model, layout), tmp_path / f"dit{suffix}")
    loaded = load_dit(path)
    assert loaded.config == model.config
    assert_same_weights(loaded, model)


def test_third_party_port_layout_loads_with_released_names(tmp_path):
    model = inferable_model()
    state = port_layout(model)
    assert "blocks.0.self_attention.qkv.weight" in state
    loaded = load_dit(write(state, tmp_path / "model.safetensors"))
    assert loaded.config == model.config
    assert_same_weights(loaded, model)


def test_fsdp_layout_really_wraps_the_blocks():
    keys = prefixed(inferable_model(), "fsdp")
    assert "model.blocks.0._fsdp_wrapped_module.self_attn.q.weight" in keys


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_weights_load_in_the_requested_dtype(tmp_path, dtype):
    save_dit(tiny_dit(), tmp_path / "tiny.safetensors")
    loaded = load_dit(tmp_path / "tiny.safetensors", dtype=dtype)
    assert {p.dtype for p in loaded.parameters()} == {dtype}


def test_unsupported_dtype_is_refused(tmp_path):
    save_dit(tiny_dit(), tmp_path / "tiny.safetensors")
    with pytest.raises(CheckpointError, match="not supported"):
        load_dit(tmp_path / "tiny.safetensors", dtype=torch.float64)


def test_missing_keys_are_listed_by_prefix(tmp_path):
    state = prefixed(inferable_model(), "model.")
    for key in ("model.blocks.0.norm3.bias", "model.blocks.1.norm3.bias", "model.head.modulation"):
        del state[key]
    path = write(state, tmp_path / "dit.safetensors")
    with pytest.raises(CheckpointError, match="3 missing keys") as error:
        load_dit(path)
    assert "blocks.*.norm3.bias (2)" in str(error.value)
    assert "head.modulation (1)" in str(error.value)
    assert str(path) in str(error.value)


@pytest.mark.parametrize(
    "key, listed",
    [
        ("blocks.0.ffn.0.weight", "blocks.*.ffn.*.weight (1)"),
        ("time_embedding.0.weight", "time_embedding.*.weight (1)"),
        ("text_embedding.0.weight", "text_embedding.*.weight (1)"),
    ],
)
def test_a_missing_tensor_the_config_is_inferred_from_is_named(tmp_path, key, listed):
    state = prefixed(inferable_model(), "model.")
    del state["model." + key]
    path = write(state, tmp_path / "dit.safetensors")
    with pytest.raises(CheckpointError, match="1 missing keys") as error:
        load_dit(path)
    assert listed in str(error.value)
    assert str(path) in str(error.value)


def test_unexpected_keys_are_listed_by_prefix(tmp_path):
    state = prefixed(inferable_model(), "model.")
    state["model.blocks.0.self_attn.lora_down.weight"] = torch.zeros(2, 2)
    state["model.blocks.1.self_attn.lora_down.weight"] = torch.zeros(2, 2)
    with pytest.raises(
        CheckpointError, match=r"2 unexpected keys: blocks\.\*\.self_attn\.lora_down\.weight \(2\)"
    ):
        load_dit(write(state, tmp_path / "dit.safetensors"))


def test_base_wan_t2v_is_recognised(tmp_path):
    state = prefixed(inferable_model(), "model.")
    state["model.patch_embedding.weight"] = state["model.patch_embedding.weight"][:, :16].clone()
    with pytest.raises(CheckpointError, match="base Wan2.1 text-to-video"):
        load_dit(write(state, tmp_path / "wan_t2v.safetensors"))


def test_image_to_video_wan_is_recognised(tmp_path):
    state = prefixed(inferable_model(), "")
    state["img_emb.proj.0.weight"] = torch.zeros(4)
    state["blocks.0.cross_attn.k_img.weight"] = torch.zeros(4, 4)
    with pytest.raises(CheckpointError, match="image-to-video Wan"):
        load_dit(write(state, tmp_path / "wan_i2v.safetensors"))


@pytest.mark.parametrize(
    "keys",
    [
        [
            "encoder.conv1.weight",
            "encoder.downsamples.0.residual.0.gamma",
            "decoder.conv1.weight",
            "conv1.weight",
            "conv2.weight",
        ],
        ["encoder.0.weight", "decoder.1.weight"],  # TAEHV
    ],
)
def test_a_vae_given_as_the_dit_is_recognised(tmp_path, keys):
    with pytest.raises(CheckpointError, match="is a VAE"):
        load_dit(write({key: torch.zeros(2) for key in keys}, tmp_path / "vae.safetensors"))


@pytest.mark.parametrize(
    "keys",
    [
        [
            "token_embedding.weight",
            "blocks.0.attn.q.weight",
            "blocks.0.pos_embedding.embedding.weight",
        ],  # Wan umT5
        ["shared.weight", "encoder.block.0.layer.0.SelfAttention.q.weight"],  # Hugging Face umT5
    ],
)
def test_a_text_encoder_given_as_the_dit_is_recognised(tmp_path, keys):
    with pytest.raises(CheckpointError, match="is a text encoder"):
        load_dit(write({key: torch.zeros(2) for key in keys}, tmp_path / "umt5.safetensors"))


def test_truncated_file_is_reported(tmp_path):
    path = tmp_path / "dit.safetensors"
    save_dit(tiny_dit(), path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_dit(path)


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_pickle_that_is_not_weights_only_is_refused(tmp_path, zip_format):
    path = tmp_path / "dit.pth"
    state = {"patch_embedding.weight": torch.zeros(1), "extra": NotWeights()}
    torch.save(state, str(path), _use_new_zipfile_serialization=zip_format)
    with pytest.raises(CheckpointError, match="not weights-only") as error:
        load_dit(path)
    assert "NotWeights" in str(error.value)


def saved_bytes(zip_format: bool) -> bytes:
    buffer = io.BytesIO()
    torch.save(
        prefixed(inferable_model(), "model."), buffer, _use_new_zipfile_serialization=zip_format
    )
    return buffer.getvalue()


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(lambda: saved_bytes(zip_format=True)[:-1000], id="truncated zip checkpoint"),
        pytest.param(lambda: saved_bytes(zip_format=False)[:-1000], id="truncated legacy"),
        pytest.param(lambda: b"<!DOCTYPE html><html><body>404 Not Found</body></html>", id="html"),
        pytest.param(lambda: b'{"error": "Repository not found"}', id="json"),
        pytest.param(lambda: b"Entry not found\n", id="text"),
        pytest.param(
            lambda: (
                torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(0))
                .to(torch.uint8)
                .numpy()
                .tobytes()
            ),
            id="random bytes",
        ),
    ],
)
def test_a_pth_that_is_no_readable_checkpoint_asks_for_a_new_download(tmp_path, content):
    path = tmp_path / "dit.pth"
    path.write_bytes(content())
    with pytest.raises(CheckpointError, match="not a readable checkpoint") as error:
        load_dit(path)
    assert "download it again" in str(error.value)
    assert "weights-only" not in str(error.value)


def test_an_empty_pth_is_reported_as_an_interrupted_download(tmp_path):
    path = tmp_path / "dit.pth"
    path.write_bytes(b"")
    with pytest.raises(CheckpointError, match="is empty"):
        load_dit(path)


def test_file_that_is_no_checkpoint_is_refused(tmp_path):
    path = tmp_path / "notes.safetensors"
    path.write_text("these are not weights")
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        load_dit(path)


def test_head_count_not_inferable_asks_for_the_config_metadata(tmp_path):
    state = prefixed(tiny_dit(), "model.")  # width 32: not a multiple of the released head dim
    with pytest.raises(CheckpointError, match="inspatio_config"):
        load_dit(write(state, tmp_path / "tiny.safetensors"))


def test_metadata_config_that_contradicts_the_shapes_is_reported(tmp_path):
    model = tiny_dit()
    wrong = tiny_dit(ffn_dim=40)
    state = prefixed(model, "model.")
    path = write(
        state, tmp_path / "tiny.safetensors", metadata={"inspatio_config": wrong.config.to_json()}
    )
    with pytest.raises(CheckpointError, match="tensor shapes do not match"):
        load_dit(path)


def test_released_shapes_infer_the_released_config(tmp_path):
    with torch.device("meta"):
        released = CausalWanDiT(WanDiTConfig())
    state = normalise_dit_keys(
        {f"model.{key}": tensor for key, tensor in released.state_dict().items()}
    )
    assert (
        infer_dit_config(state, {}, tmp_path / "InSpatio-World-1.3B.safetensors") == WanDiTConfig()
    )


def test_reading_weights_does_not_import_the_dit():
    """VAE, TAEHV and WorldFM loaders read through this module; the DiT stack stays unloaded."""
    probe = (
        "import sys; from inspatio_nodes.core.wan.checkpoints import CheckpointError, read_weights; "
        "print(sorted(m for m in sys.modules if m.startswith('inspatio_nodes.')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    imported = result.stdout
    for heavy in ("core.wan.dit", "core.attention", "kernels"):
        assert f"inspatio_nodes.{heavy}" not in imported
