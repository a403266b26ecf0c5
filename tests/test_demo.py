"""`python -m inspatio_nodes demo`: the files it writes, its option errors, and the full generation."""

from __future__ import annotations

import numpy
import pytest
import torch
from inspatio_nodes.__main__ import main
from inspatio_nodes.core.wan.checkpoints import save_dit
from inspatio_nodes.core.wan.dit import CausalWanDiT
from inspatio_nodes.core.wan.vae import WanVAE
from inspatio_nodes.demo import DemoError, DemoOptions, run_demo
from PIL import Image
from safetensors.torch import save_file
from test_nodes_model import TINY_DIT, TINY_VAE

WIDTH, HEIGHT, FRAMES = 96, 64, 5
SAME_PIXEL_FRACTION = 0.99
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _options(out, **overrides) -> DemoOptions:
    return DemoOptions(out=out, frames=FRAMES, width=WIDTH, height=HEIGHT, **overrides)


def test_demo_writes_render_mask_contact_sheet_and_path_preview(tmp_path):
    written = run_demo(_options(tmp_path / "demo"))
    for sequence in ("source", "render", "mask"):
        pngs = sorted(written[sequence].glob("*.png"))
        assert len(pngs) == FRAMES
        assert Image.open(pngs[0]).size == (WIDTH, HEIGHT)
    mask_values = set(
        numpy.unique(numpy.asarray(Image.open(max(written["mask"].glob("*.png"))))).tolist()
    )
    assert mask_values <= {0, 255} and 0 in mask_values  # the orbit opens holes by the last frame
    assert Image.open(written["contact_sheet"]).size[0] > WIDTH
    preview = Image.open(written["camera_path"])
    assert preview.size[0] == 2 * preview.size[1]


def test_first_render_frame_is_the_room_seen_from_the_source_camera(tmp_path):
    # The preset starts at the source camera: frame 0 is fully known and shows the room. Pixels on
    # the ball's silhouette may take the ball's colour: the official soft z-buffer lets a near
    # neighbour's float-rounding sliver outweigh the far wall behind it.
    written = run_demo(_options(tmp_path))
    first_mask = numpy.asarray(Image.open(min(written["mask"].glob("*.png"))))
    assert first_mask.min() == 255
    source = numpy.asarray(Image.open(min(written["source"].glob("*.png")))).astype(int)
    render = numpy.asarray(Image.open(min(written["render"].glob("*.png")))).astype(int)
    same = numpy.abs(source - render).max(axis=-1) <= 1
    assert same.mean() > SAME_PIXEL_FRACTION


def test_unknown_preset_is_refused_with_the_valid_names(tmp_path):
    with pytest.raises(DemoError, match="valid presets: .*orbit_left"):
        run_demo(_options(tmp_path, preset="barrel_roll"))


def test_generation_files_must_come_together(tmp_path):
    with pytest.raises(DemoError, match="missing: --vae, --prompt-embeds"):
        run_demo(_options(tmp_path, checkpoint=tmp_path / "dit.safetensors"))


def test_command_line_reports_option_errors_without_a_traceback(tmp_path, capsys):
    code = main(["demo", "--out", str(tmp_path), "--preset", "barrel_roll"])
    assert code == 2
    assert "demo: unknown preset" in capsys.readouterr().err


def test_full_generation_runs_the_world_model_on_tiny_weights(tmp_path):
    torch.manual_seed(0)
    save_dit(CausalWanDiT(TINY_DIT), tmp_path / "dit.safetensors")
    save_file(
        {k: v.contiguous() for k, v in WanVAE(TINY_VAE).state_dict().items()},
        str(tmp_path / "vae.safetensors"),
    )
    save_file(
        {"embeddings": torch.randn(4, TINY_DIT.text_dim)}, str(tmp_path / "prompt.safetensors")
    )
    written = run_demo(
        _options(
            tmp_path / "out",
            checkpoint=tmp_path / "dit.safetensors",
            vae=tmp_path / "vae.safetensors",
            prompt_embeds=tmp_path / "prompt.safetensors",
        )
    )
    generated = sorted(written["generated"].glob("*.png"))
    assert len(generated) == FRAMES
    assert Image.open(generated[0]).size == (WIDTH, HEIGHT)
