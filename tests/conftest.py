"""Shared test helpers: the parity-fixture directory and discovery of fixture cases, and a
simulated ComfyUI host for the node tests (``folder_paths``, the progress bar, one torch thread).

Parity tests take the fixture directory from ``INSPATIO_FIXTURES`` (default ``../shared/fixtures``
beside the repository) and discover their files by pattern, because other fixture sets with the
same schema but other file names, sizes and constants are run through the same tests. Rules:

- the directory does not exist            -> the parity tests fail (they cannot check anything);
- no file of a kind is present            -> that kind's tests are skipped, with the reason;
- a present file the test cannot read     -> the test fails.
"""

from __future__ import annotations

import json
import os
import sys
import types
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def fixture_dir() -> Path:
    configured = os.environ.get("INSPATIO_FIXTURES")
    if configured:
        return Path(configured).expanduser().resolve()
    return (REPO_ROOT / ".." / "shared" / "fixtures").resolve()


def fixture_cases(pattern: str) -> list:
    """One pytest param per file in the fixture directory matching the glob ``pattern``.

    Use as ``@pytest.mark.parametrize("case_path", fixture_cases("*dit_sampler*_io*.safetensors"))``.
    """
    directory = fixture_dir()
    if not directory.is_dir():
        # Handed to the test, whose require_fixture() fails with the reason.
        return [pytest.param(directory / pattern, id="fixture-dir-missing")]
    found = sorted(directory.glob(pattern))
    if not found:
        return [
            pytest.param(
                None,
                marks=pytest.mark.skip(reason=f"no fixture matching {pattern!r} in {directory}"),
                id="absent",
            )
        ]
    return [pytest.param(path, id=path.stem) for path in found]


def require_fixture(path: Path | None) -> Path:
    """The case path handed to a parity test; fails loudly when the directory is missing."""
    assert path is not None
    if not path.parent.is_dir():
        pytest.fail(
            f"fixture directory {path.parent} does not exist: set INSPATIO_FIXTURES to the "
            "directory holding the parity fixtures (default ../shared/fixtures)"
        )
    if not path.is_file():
        pytest.fail(f"fixture file {path} is missing")
    return path


def sibling(path: Path, role: str, new_role: str, suffix: str | None = None) -> Path:
    """The companion of a fixture file: ``x_io.safetensors`` -> ``x_weights.safetensors``.

    ``role`` is the last underscore-separated token of the stem to replace; ``suffix`` changes the
    extension (``.json`` for configs).
    """
    stem = path.stem
    head, sep, tail = stem.rpartition(f"_{role}")
    if not sep:
        pytest.fail(
            f"cannot derive the {new_role!r} file from {path.name}: no '_{role}' in its name"
        )
    name = f"{head}_{new_role}{tail}{suffix or path.suffix}"
    return path.with_name(name)


def load_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        pytest.fail(f"cannot read fixture {path}: {error}")


# --- a simulated ComfyUI host ----------------------------------------------------------------

SUPPORTED_EXTENSIONS = {".safetensors", ".pth"}
HOST_PREVIEW_SIZE = 64  # ComfyUI's --preview-size, as the simulated host reports it


def fake_folder_paths(base: Path, yaml_folders: dict[str, list[str]]) -> types.ModuleType:
    """A ``folder_paths`` stand-in whose folder table already holds extra_model_paths.yaml entries.

    As in ComfyUI, a YAML key the host does not know arrives with an empty extension set. The
    input and output folders are ``base/input`` and ``base/output``.
    """
    module = types.ModuleType("folder_paths")
    module.models_dir = str(base / "models")
    module.supported_pt_extensions = set(SUPPORTED_EXTENSIONS)
    module.folder_names_and_paths = {
        "diffusion_models": (
            [str(base / "models" / "diffusion_models")],
            set(SUPPORTED_EXTENSIONS),
        ),
        **{key: (list(folders), set()) for key, folders in yaml_folders.items()},
    }

    def get_filename_list(key: str) -> list[str]:
        folders, extensions = module.folder_names_and_paths[key]
        return sorted(
            path.name
            for folder in folders
            if Path(folder).is_dir()
            for path in Path(folder).iterdir()
            if path.suffix in extensions
        )

    def get_full_path(key: str, name: str) -> str | None:
        folders, _ = module.folder_names_and_paths[key]
        found = [Path(folder) / name for folder in folders if (Path(folder) / name).is_file()]
        return str(found[0]) if found else None

    module.get_filename_list = get_filename_list
    module.get_full_path = get_full_path
    module.get_input_directory = lambda: str(base / "input")
    module.get_output_directory = lambda: str(base / "output")
    return module


@pytest.fixture
def inside_comfyui(monkeypatch, tmp_path):
    """Install a fake ``folder_paths`` with a YAML-mapped ``inspatio`` folder; yields (module, yaml dir)."""
    from inspatio_nodes.nodes import comfy as cf

    yaml_folder = tmp_path / "yaml_models" / "inspatio"
    yaml_folder.mkdir(parents=True)
    module = fake_folder_paths(tmp_path, {cf.PACK_MODEL_FOLDER: [str(yaml_folder)]})
    monkeypatch.setitem(sys.modules, "folder_paths", module)
    monkeypatch.setattr(cf, "_registered_folders", set())
    return module, yaml_folder


@pytest.fixture
def host_progress(monkeypatch) -> list[tuple]:
    """ComfyUI's progress bar and preview size installed; yields the ``(value, total, preview)``
    of every ``update_absolute`` call, in order."""
    reports = []

    class HostProgressBar:
        def __init__(self, total):
            self.total = total

        def update_absolute(self, value, total=None, preview=None):
            reports.append((value, total, preview))

    monkeypatch.setitem(
        sys.modules, "comfy.utils", types.SimpleNamespace(ProgressBar=HostProgressBar)
    )
    monkeypatch.setitem(
        sys.modules,
        "comfy.cli_args",
        types.SimpleNamespace(args=types.SimpleNamespace(preview_size=HOST_PREVIEW_SIZE)),
    )
    return reports


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny convolutions run many times faster on one thread than split across busy shared cores;
    use with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def fixture_cases_holding(pattern: str, tensor_prefix: str) -> list:
    """``fixture_cases(pattern)`` narrowed to the safetensors files holding a tensor whose name
    starts with ``tensor_prefix``: several fixture kinds share a file-name pattern and are told
    apart by their keys (e.g. the v1 render-warp case holds ``warp_in.*``). When none does, one
    skipped param says so; a missing directory stays a case so that require_fixture() fails."""
    cases = fixture_cases(pattern)
    kept = [case for case in cases if _holds_tensor(case.values[0], tensor_prefix)]
    if kept:
        return kept
    reason = f"no {pattern} fixture holds {tensor_prefix}* tensors"
    return [pytest.param(None, marks=pytest.mark.skip(reason=reason), id="no-such-case")]


def _holds_tensor(path: Path | None, tensor_prefix: str) -> bool:
    if path is None or not path.is_file():
        return True
    from safetensors import safe_open

    with safe_open(str(path), "pt") as tensors:
        names = tensors.keys()  # a safetensors file handle is not iterable itself
    return any(name.startswith(tensor_prefix) for name in names)
