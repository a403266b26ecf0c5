"""The pack inside a real ComfyUI server: loading, /object_info, and prompts run end to end.

Runs when ``COMFYUI_DIR`` points to a ComfyUI checkout (skipped otherwise). ``COMFYUI_PYTHON``
names the interpreter that has ComfyUI's requirements (default: this one). The server starts
headless on the CPU (COMFYUI.md §12.3) with an ``extra_model_paths.yaml`` that loads the pack from a
folder of another name and maps tiny model files into the model folders; prompts are POSTed to
``/prompt`` and followed over the websocket until the server reports them finished.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

from conftest import REPO_ROOT

COMFYUI_DIR = os.environ.get("COMFYUI_DIR")
pytestmark = pytest.mark.skipif(not COMFYUI_DIR, reason="COMFYUI_DIR does not point to a ComfyUI checkout")

SERVER_READY_LINE = "To see the GUI go to"
PACK_FOLDER_NAME = "any-folder-name"  # ComfyUI users clone the pack into a folder of any name
TORCHVISION_STAND_IN = {
    # ComfyUI imports torchvision at start-up; a CPU-only torch may have no matching build
    # (COMFYUI.md §12.4). Nothing these tests run uses it, so a stand-in that refuses use is enough.
    "__init__.py": "from . import models, transforms\n",
    "models.py": "def __getattr__(name):\n    raise AttributeError(f'torchvision stand-in has no {name}')\n",
    "transforms.py": "def __getattr__(name):\n    raise AttributeError(f'torchvision stand-in has no {name}')\n",
}


class ComfyServer:
    """A ComfyUI process on a free local port and a websocket client following its prompts."""

    def __init__(self, root: Path, python: str):
        self.root = root
        self.log: list[str] = []
        self.port = _free_port()
        environment = dict(os.environ)
        if _needs_torchvision_stand_in(python):
            stand_in = root / "stand_ins" / "torchvision"
            stand_in.mkdir(parents=True)
            for name, text in TORCHVISION_STAND_IN.items():
                (stand_in / name).write_text(text)
            environment["PYTHONPATH"] = os.pathsep.join(
                [str(stand_in.parent), environment.get("PYTHONPATH", "")]
            )
        for folder in ("output", "input", "temp"):
            (root / folder).mkdir(exist_ok=True)
        self.process = subprocess.Popen(
            [
                python, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
                "--disable-auto-launch", "--extra-model-paths-config", str(root / "extra_model_paths.yaml"),
                "--output-directory", str(root / "output"), "--input-directory", str(root / "input"),
                "--temp-directory", str(root / "temp"), "--database-url", "sqlite:///:memory:",
            ],
            cwd=COMFYUI_DIR, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        # Reading the log until the ready line blocks without polling; the loop ends at EOF if the
        # server dies during start-up.
        for line in self.process.stdout:
            self.log.append(line)
            if SERVER_READY_LINE in line:
                break
        else:
            raise RuntimeError("ComfyUI did not start:\n" + "".join(self.log[-60:]))

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def get_json(self, route: str) -> dict:
        with urllib.request.urlopen(f"http://{self.address}{route}") as response:
            return json.loads(response.read())

    def run_prompt(self, prompt: dict) -> dict:
        """POST a prompt, follow it over the websocket until it finishes; its /history entry."""
        import websocket

        client_id = str(uuid.uuid4())
        connection = websocket.WebSocket()
        connection.connect(f"ws://{self.address}/ws?clientId={client_id}")
        try:
            body = json.dumps({"prompt": prompt, "client_id": client_id}).encode()
            request = urllib.request.Request(f"http://{self.address}/prompt", data=body)
            try:
                with urllib.request.urlopen(request) as response:
                    prompt_id = json.loads(response.read())["prompt_id"]
            except urllib.error.HTTPError as error:
                raise AssertionError(f"prompt refused: {error.read().decode()}") from error
            self.events: list[dict] = []
            while True:
                message = connection.recv()
                if not isinstance(message, str):
                    continue  # binary preview images sent with progress updates
                event = json.loads(message)
                self.events.append(event)
                data = event.get("data", {})
                if data.get("prompt_id") != prompt_id:
                    continue
                if event["type"] == "execution_error":
                    raise AssertionError(f"prompt failed: {json.dumps(data, indent=1)[-4000:]}")
                if event["type"] == "executing" and data.get("node") is None:
                    break
        finally:
            connection.close()
        return self.get_json(f"/history/{prompt_id}")[prompt_id]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.communicate()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _needs_torchvision_stand_in(python: str) -> bool:
    check = subprocess.run([python, "-c", "import torchvision"], capture_output=True)
    return check.returncode != 0


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("comfyui")
    packs = root / "packs"
    packs.mkdir()
    (packs / PACK_FOLDER_NAME).symlink_to(REPO_ROOT, target_is_directory=True)
    (root / "extra_model_paths.yaml").write_text(
        "inspatio_test:\n"
        f"    base_path: {root}\n"
        "    custom_nodes: packs\n"
        "    diffusion_models: models/diffusion_models\n"
        "    vae: models/vae\n"
        "    vae_approx: models/vae_approx\n"
        "    inspatio: models/inspatio\n"
    )
    running = ComfyServer(root, os.environ.get("COMFYUI_PYTHON", sys.executable))
    yield running
    running.stop()


def test_server_loads_the_pack_and_lists_every_node(server):
    import inspatio_nodes

    object_info = server.get_json("/object_info")

    failed = [line for line in server.log if "IMPORT FAILED" in line and PACK_FOLDER_NAME in line]
    assert failed == []
    missing = sorted(set(inspatio_nodes.NODE_CLASS_MAPPINGS) - set(object_info))
    assert missing == []
    for node_id in inspatio_nodes.NODE_CLASS_MAPPINGS:
        assert object_info[node_id]["python_module"] == f"custom_nodes.{PACK_FOLDER_NAME}"
