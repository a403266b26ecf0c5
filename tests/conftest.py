"""Shared test helpers: the parity-fixture directory and discovery of fixture cases.

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
        pytest.fail(f"cannot derive the {new_role!r} file from {path.name}: no '_{role}' in its name")
    name = f"{head}_{new_role}{tail}{suffix or path.suffix}"
    return path.with_name(name)


def load_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        pytest.fail(f"cannot read fixture {path}: {error}")
