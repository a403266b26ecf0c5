"""The repository root is a ComfyUI custom-node folder and, installed, the `inspatio_nodes` package."""

from __future__ import annotations

import subprocess
import sys

from conftest import REPO_ROOT


def test_package_imports_as_inspatio_nodes_from_the_repository_root():
    import inspatio_nodes

    assert inspatio_nodes.__file__ is not None
    assert (REPO_ROOT / "__init__.py").samefile(inspatio_nodes.__file__)
    assert isinstance(inspatio_nodes.NODE_CLASS_MAPPINGS, dict)
    assert inspatio_nodes.WEB_DIRECTORY == "./web"


def test_core_never_imports_comfyui():
    forbidden = (
        "import comfy",
        "from comfy",
        "import folder_paths",
        "from folder_paths",
        "import server",
        "from server",
        "import nodes",
        "from nodes",
    )
    offenders = [
        f"{path.relative_to(REPO_ROOT)}: {line.strip()}"
        for folder in ("core", "kernels")
        for path in (REPO_ROOT / folder).rglob("*.py")
        for line in path.read_text().splitlines()
        if line.strip().startswith(forbidden)
    ]
    assert offenders == []


def test_importing_the_pack_does_no_heavy_work():
    heavy = ["inspatio_nodes.core.wan.dit", "triton", "kornia", "scipy", "cv2"]
    code = f"import sys, inspatio_nodes; print([m for m in {heavy!r} if m in sys.modules])"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
