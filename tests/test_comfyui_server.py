"""The pack inside a real ComfyUI server: loading, /object_info, and prompts run end to end.

Runs when ``COMFYUI_DIR`` points to a ComfyUI checkout (skipped otherwise). ``COMFYUI_PYTHON``
names the interpreter that has ComfyUI's requirements (default: this one). The server starts
headless on the CPU (COMFYUI.md §12.3) with an ``extra_model_paths.yaml`` that loads the pack from a
folder of another name and maps tiny model files into the model folders; prompts are POSTed to
``/prompt`` and followed over the websocket (websocket-client) until the server reports them
finished. Every ``workflows/api/*.json`` runs too, shrunk to test size by :func:`at_test_size`;
its umT5 text encoder, which has no tiny version ComfyUI can load, is replaced by the pack's
prompt-embedding loader.

Setting up a checkout: ``COMFYUI.md`` §12.4 (ComfyUI's requirements without torch; a torchvision
stand-in is written automatically when the interpreter has no working torchvision).
"""

from __future__ import annotations

import copy
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
from test_nodes_model import TINY_DIT
from test_nodes_worldfm import inverse_distance_image, room_panorama, save_released_style

COMFYUI_DIR = os.environ.get("COMFYUI_DIR")
pytestmark = pytest.mark.skipif(
    not COMFYUI_DIR, reason="COMFYUI_DIR does not point to a ComfyUI checkout"
)

SERVER_READY_LINE = "To see the GUI go to"
PACK_FOLDER_NAME = "any-folder-name"  # ComfyUI users clone the pack into a folder of any name
DIT_FILE = "tiny_world.safetensors"
WORLDFM_FILE = "tiny_worldfm.pth"
IMAGE_VAE_FILE = "random_taesdxl.safetensors"
WORLDFM_RENDER_SIZE = 24
WORLDFM_REFERENCE_FOCAL = 12.0
VAE_FILE = "random_wan_2.1_vae.safetensors"
TAEHV_FILE = "random_taew2_1.safetensors"
PROMPT_FILE = "prompt_embeddings.safetensors"
INPUT_IMAGE = "scene.png"
IMAGE_HEIGHT, IMAGE_WIDTH = 16, 32
PROMPT_TOKENS = 5
PATH_FRAMES = 10  # padded to 21 frames (6 latent frames, 2 blocks), cut back to 10
PADDED_FRAMES = 21
BLOCKS = 2
STEPS_PER_BLOCK = 4  # the release's denoising steps
FLOAT32_CODEC_TOLERANCE = 1e-5
UNSATURATED_STD = 0.01
VIDEO_FRAMES = 10
VIDEO_FPS = 8
FREEZE_REPEAT = 2
WORKFLOWS = sorted((REPO_ROOT / "workflows" / "api").glob("*.json"))
# Widgets of the shipped workflows that set sizes for the released model; shrunk to test size.
WIDGET_OVERRIDES = {
    "width": IMAGE_WIDTH,
    "height": IMAGE_HEIGHT,
    "freeze_repeat": FREEZE_REPEAT,
    "render_size": WORLDFM_RENDER_SIZE,
    "reference_size": WORLDFM_RENDER_SIZE,
    "reference_focal": WORLDFM_REFERENCE_FOCAL,
    "taehv": TAEHV_FILE,
}
MODEL_FILES = {  # (node, widget) -> test file
    ("InSpatioWorldModelLoader", "checkpoint"): DIT_FILE,
    ("InSpatioWorldFMModelLoader", "checkpoint"): WORLDFM_FILE,
}
IMAGE_VAE_WRITER = """
import sys

from safetensors.torch import save_file

from comfy.cli_args import args

args.cpu = True  # before any comfy module asks for a device (COMFYUI.md §12.5)
from comfy.taesd.taesd import TAESD

model = TAESD(latent_channels=4)
save_file({key: value.contiguous() for key, value in model.state_dict().items()}, sys.argv[1])
"""
VIDEO_WRITER = """
import sys
import av
import numpy as np

path, frames, height, width, fps = sys.argv[1], *map(int, sys.argv[2:])
container = av.open(path, "w")
stream = container.add_stream("libx264", rate=fps)
stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
for index in range(frames):
    ramp = np.linspace(40, 220, width)[None, :] + 3 * index + 20 * (np.arange(height)[:, None] % 2)
    grey = ramp.clip(0, 255).astype(np.uint8)
    for packet in stream.encode(av.VideoFrame.from_ndarray(np.stack([grey] * 3, -1), format="rgb24")):
        container.mux(packet)
for packet in stream.encode():
    container.mux(packet)
container.close()
"""
VAE_PARITY_CHECK = """
import importlib.util, json, sys

comfyui, repository, vae_file = sys.argv[1:4]
sys.path.insert(0, comfyui)
# The pack as ComfyUI sees it: a folder imported by path, whatever this interpreter has installed.
spec = importlib.util.spec_from_file_location(
    "inspatio_nodes", f"{repository}/__init__.py", submodule_search_locations=[repository]
)
pack = importlib.util.module_from_spec(spec)
sys.modules["inspatio_nodes"] = pack
spec.loader.exec_module(pack)
from comfy.cli_args import args

args.cpu = True  # before comfy.model_management is imported (COMFYUI.md §12.5)
import comfy.sd
import comfy.utils
import torch

from inspatio_nodes.core.codec import from_comfy_latent, to_comfy_latent
from inspatio_nodes.nodes import comfy as cf

torch.manual_seed(0)
vae = comfy.sd.VAE(sd=comfy.utils.load_torch_file(vae_file))
image = torch.rand(9, 16, 32, 3)
host_latent = vae.encode(image)
host_frames = vae.decode(host_latent)
codec = cf.vae_codec("check", "vae", vae).module
latent = to_comfy_latent(codec.encode(cf.image_to_frames("check", "image", image)[None], codec.new_state()))
frames = cf.frames_to_image(codec.decode(from_comfy_latent(host_latent), codec.new_state())[0])
print(json.dumps({
    "encode": (latent - host_latent).abs().max().item(),
    "decode": (frames - host_frames.reshape(frames.shape)).abs().max().item(),
    "frames_std": host_frames.std().item(),
}))
"""
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
        environment = comfyui_environment(root, python)
        for folder in ("output", "temp"):
            (root / folder).mkdir(exist_ok=True)
        self.process = subprocess.Popen(
            [
                python,
                "main.py",
                "--cpu",
                "--listen",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--disable-auto-launch",
                "--extra-model-paths-config",
                str(root / "extra_model_paths.yaml"),
                "--output-directory",
                str(root / "output"),
                "--input-directory",
                str(root / "input"),
                "--temp-directory",
                str(root / "temp"),
                "--database-url",
                "sqlite:///:memory:",
            ],
            cwd=COMFYUI_DIR,
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
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
            self.previews = 0
            while True:
                message = connection.recv()
                if not isinstance(message, str):
                    self.previews += 1  # binary preview images sent with progress updates
                    continue
                event = json.loads(message)
                self.events.append(event)
                data = event.get("data", {})
                if data.get("prompt_id") != prompt_id:
                    continue
                if event["type"] == "execution_error":
                    trace = "".join(data.get("traceback", []))[-3000:]
                    raise AssertionError(
                        f"{data.get('node_type')} failed: {data.get('exception_message')}\n{trace}"
                    )
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


def comfyui_environment(root: Path, python: str) -> dict[str, str]:
    """Environment for a ComfyUI process: a torchvision stand-in on PYTHONPATH when needed."""
    environment = dict(os.environ)
    check = subprocess.run([python, "-c", "import torchvision"], check=False, capture_output=True)
    if check.returncode != 0:
        stand_in = root / "stand_ins" / "torchvision"
        stand_in.mkdir(parents=True, exist_ok=True)
        for name, text in TORCHVISION_STAND_IN.items():
            (stand_in / name).write_text(text)
        environment["PYTHONPATH"] = os.pathsep.join(
            [str(stand_in.parent), environment.get("PYTHONPATH", "")]
        )
    return environment


def write_tiny_models(root: Path, python: str) -> None:
    """Model files ComfyUI's combos list, all random: a tiny DiT, a full-width Wan2.1 VAE (ComfyUI
    builds the Wan2.1 VAE at its released width whatever the file says), TAEHV, prompt embeddings,
    a tiny WorldFM frame model saved as released, and an SDXL-space image VAE (ComfyUI's tiny
    TAESD architecture, written by the server's interpreter)."""
    import torch
    from inspatio_nodes.core.wan.checkpoints import save_dit
    from inspatio_nodes.core.wan.dit import CausalWanDiT
    from inspatio_nodes.core.wan.taehv import TAEHV
    from inspatio_nodes.core.wan.vae import WanVAE
    from safetensors.torch import save_file

    folders = {
        name: root / "models" / name
        for name in ("diffusion_models", "vae", "vae_approx", "inspatio")
    }
    for folder in folders.values():
        folder.mkdir(parents=True)
    torch.manual_seed(0)
    save_dit(CausalWanDiT(TINY_DIT), folders["diffusion_models"] / DIT_FILE)
    for folder, name, module in (
        (folders["vae"], VAE_FILE, WanVAE()),
        (folders["vae_approx"], TAEHV_FILE, TAEHV()),
    ):
        save_file(
            {key: value.half().contiguous() for key, value in module.state_dict().items()},
            str(folder / name),
        )
    save_file(
        {"embeddings": torch.randn(PROMPT_TOKENS, TINY_DIT.text_dim)},
        str(folders["inspatio"] / PROMPT_FILE),
    )
    save_released_style(folders["diffusion_models"] / WORLDFM_FILE)
    command = [python, "-c", IMAGE_VAE_WRITER, str(folders["vae"] / IMAGE_VAE_FILE)]
    environment = comfyui_environment(root, python)
    subprocess.run(command, cwd=COMFYUI_DIR, env=environment, check=True, capture_output=True)


def write_inputs(root: Path, python: str) -> None:
    """The input files the prompts load: grey ramps with stripes (depth nodes give grey, so the same
    pictures serve as inverse-depth maps); videos are written by the server's interpreter (PyAV)."""
    import numpy as np
    from PIL import Image

    ramp = np.linspace(40.0, 220.0, IMAGE_WIDTH)[None, :] + 20.0 * (
        np.arange(IMAGE_HEIGHT)[:, None] % 2
    )
    grey = ramp.clip(0, 255).astype(np.uint8)
    loaded = [(node["class_type"], node["inputs"]) for node in _workflow_nodes()]
    images = {INPUT_IMAGE} | {inputs["image"] for kind, inputs in loaded if kind == "LoadImage"}
    for name in images:
        picture = _panorama_input(name) if "panorama" in name else np.stack([grey] * 3, axis=-1)
        Image.fromarray(picture).save(root / "input" / name)
    for name in {inputs["file"] for kind, inputs in loaded if kind == "LoadVideo"}:
        size = (VIDEO_FRAMES, IMAGE_HEIGHT, IMAGE_WIDTH, VIDEO_FPS)
        command = [python, "-c", VIDEO_WRITER, str(root / "input" / name), *map(str, size)]
        subprocess.run(command, check=True, capture_output=True)


def _panorama_input(name: str):
    """A 2:1 room panorama, or (for a distance file) its grey inverse-distance map written with the
    near/far of the shipped panorama scene node, so that node reads back the room's distances."""
    panorama, distance = room_panorama()
    if "distance" in name:
        scene = next(
            node["inputs"]
            for node in _workflow_nodes()
            if node["class_type"] == "InSpatioWorldFMSceneFromPanorama"
        )
        panorama = inverse_distance_image(distance, scene["distance_near"], scene["distance_far"])
    return (panorama[0].clamp(0, 1) * 255).round().byte().numpy()


def _workflow_nodes() -> list[dict]:
    return [node for path in WORKFLOWS for node in json.loads(path.read_text()).values()]


def at_test_size(workflow: dict) -> dict:
    """A shipped API workflow shrunk to the tiny models: test-size frames and paths, the tiny model
    files, and the umT5 text encoder (no tiny version loads in ComfyUI) replaced by prompt
    embeddings feeding the same CONDITIONING sockets."""
    prompt = copy.deepcopy(workflow)
    # A path K made for the template's WorldFM render size shrinks with the render.
    intrinsics_scale = next(
        (
            WORLDFM_RENDER_SIZE / node["inputs"]["render_size"]
            for node in workflow.values()
            if node["class_type"] == "InSpatioWorldFMSceneFromPanorama"
        ),
        1.0,
    )
    for node_id, node in list(prompt.items()):
        inputs = node["inputs"]
        for name, value in inputs.items():
            if not isinstance(value, list):
                override = WIDGET_OVERRIDES.get(name, value)
                inputs[name] = MODEL_FILES.get((node["class_type"], name), override)
        if node["class_type"] == "VAELoader":
            inputs["vae_name"] = _test_vae_for(prompt, node_id)
        if node["class_type"] == "InSpatioCameraPreset" and inputs["frames"]:
            inputs["frames"] = PATH_FRAMES
        if node["class_type"] == "InSpatioCameraKeyframes":
            path = json.loads(inputs["path_json"])
            last = path["frames"] - 1
            for keyframe in path["keyframes"]:
                keyframe["frame"] = round(keyframe["frame"] * (PATH_FRAMES - 1) / last)
            path["frames"] = PATH_FRAMES
            if "intrinsics" in path:
                for row in path["intrinsics"][:2]:
                    row[:] = [value * intrinsics_scale for value in row]
            inputs["path_json"] = json.dumps(path)
        if node["class_type"] == "CLIPTextEncode":
            prompt[node_id] = {
                "class_type": "InSpatioPromptEmbeddingsLoader",
                "inputs": {"embeddings": PROMPT_FILE},
            }
    return {key: node for key, node in prompt.items() if node["class_type"] != "CLIPLoader"}


def _test_vae_for(prompt: dict, vae_node: str) -> str:
    """The Wan video VAE, or the SDXL-space image VAE for a VAE that feeds WorldFM nodes."""
    consumers = [
        node["class_type"]
        for node in prompt.values()
        if any(value == [vae_node, 0] for value in node["inputs"].values())
    ]
    worldfm = any(class_type.startswith("InSpatioWorldFM") for class_type in consumers)
    return IMAGE_VAE_FILE if worldfm else VAE_FILE


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    pytest.importorskip("websocket", reason="the server tests follow prompts with websocket-client")
    root = tmp_path_factory.mktemp("comfyui")
    (root / "input").mkdir()
    python = os.environ.get("COMFYUI_PYTHON", sys.executable)
    write_tiny_models(root, python)
    write_inputs(root, python)
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
    running = ComfyServer(root, python)
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


def image_to_world_prompt() -> dict:
    """One image → scene → orbit → render → world model → frames, decoded three ways."""
    return {
        "image": {"class_type": "LoadImage", "inputs": {"image": INPUT_IMAGE}},
        "scene": {
            "class_type": "InSpatioSceneFromImages",
            "inputs": {
                "images": ["image", 0],
                "depth": ["image", 0],
                "depth_encoding": "inverse",
                "depth_near": 1.0,
                "depth_far": 4.0,
                "depth_scale": 1.0,
                "fps": 8.0,
                "fov_degrees": 60.0,
                "width": IMAGE_WIDTH,
                "height": IMAGE_HEIGHT,
            },
        },
        "path": {
            "class_type": "InSpatioCameraPreset",
            "inputs": {
                "preset": "orbit_left",
                "frames": PATH_FRAMES,
                "strength": 1.0,
                "easing": "ease_in_out",
                "radius_ratio": 1.0,
                "rotation_only": False,
                "relative_to_source": False,
                "scene": ["scene", 0],
            },
        },
        "render": {
            "class_type": "InSpatioRenderCondition",
            "inputs": {
                "scene": ["scene", 0],
                "camera_path": ["path", 0],
                "frame_alignment": "exact",
                "splat_semantics": "v1.5",
            },
        },
        "vae": {"class_type": "VAELoader", "inputs": {"vae_name": VAE_FILE}},
        "model": {
            "class_type": "InSpatioWorldModelLoader",
            "inputs": {"checkpoint": DIT_FILE, "weight_dtype": "fp32", "attention": "auto"},
        },
        "prompt": {
            "class_type": "InSpatioPromptEmbeddingsLoader",
            "inputs": {"embeddings": PROMPT_FILE},
        },
        "cache": {
            "class_type": "InSpatioWorldCacheInit",
            "inputs": {
                "world_model": ["model", 0],
                "vae": ["vae", 0],
                "positive": ["prompt", 0],
                "condition": ["render", 2],
            },
        },
        "sampler": {
            "class_type": "InSpatioWorldSampler",
            "inputs": {
                "world_state": ["cache", 0],
                "seed": 0,
                "denoising_steps": "1000, 750, 500, 250",
                "shift": 5.0,
                "num_blocks": 0,
            },
        },
        "frames": {"class_type": "PreviewImage", "inputs": {"images": ["sampler", 1]}},
        "core_decode": {
            "class_type": "VAEDecode",
            "inputs": {"samples": ["sampler", 0], "vae": ["vae", 0]},
        },
        "core_frames": {"class_type": "PreviewImage", "inputs": {"images": ["core_decode", 0]}},
        "taehv": {"class_type": "InSpatioTAEHVLoader", "inputs": {"taehv": TAEHV_FILE}},
        "taehv_decode": {
            "class_type": "InSpatioDecode",
            "inputs": {"latent": ["sampler", 0], "decoder": ["taehv", 0]},
        },
        "taehv_frames": {"class_type": "PreviewImage", "inputs": {"images": ["taehv_decode", 0]}},
    }


def test_server_lists_the_model_files_from_the_yaml_folders(server):
    object_info = server.get_json("/object_info")

    def choices(node, widget):
        return object_info[node]["input"]["required"][widget][0]

    assert choices("InSpatioWorldModelLoader", "checkpoint") == sorted([DIT_FILE, WORLDFM_FILE])
    assert choices("InSpatioTAEHVLoader", "taehv") == [TAEHV_FILE]
    assert choices("InSpatioPromptEmbeddingsLoader", "embeddings") == [PROMPT_FILE]


def test_server_runs_an_image_to_world_prompt_end_to_end(server):
    history = server.run_prompt(image_to_world_prompt())

    assert history["status"]["status_str"] == "success"
    outputs = history["outputs"]
    assert len(outputs["frames"]["images"]) == PATH_FRAMES
    assert (
        len(outputs["core_frames"]["images"]) == PADDED_FRAMES
    )  # raw LATENT: core VAE Decode works
    assert len(outputs["taehv_frames"]["images"]) == PADDED_FRAMES
    sampler_progress = [
        event["data"]
        for event in server.events
        if event["type"] == "progress" and event["data"]["node"] == "sampler"
    ]
    total_steps = BLOCKS * STEPS_PER_BLOCK
    assert [(update["value"], update["max"]) for update in sampler_progress][-1] == (
        total_steps,
        total_steps,
    )
    assert server.previews >= BLOCKS  # one preview image per finished block


def test_server_refuses_unreadable_denoising_steps_before_running(server):
    prompt = image_to_world_prompt()
    prompt["sampler"]["inputs"]["denoising_steps"] = "1000, seven"

    with pytest.raises(AssertionError, match="custom_validation_failed"):
        server.run_prompt(prompt)


@pytest.mark.parametrize("workflow_path", WORKFLOWS, ids=lambda path: path.stem)
def test_server_runs_each_shipped_workflow(server, workflow_path):
    workflow = json.loads(workflow_path.read_text())
    prompt = at_test_size(workflow)

    history = server.run_prompt(prompt)

    assert history["status"]["status_str"] == "success"
    output_nodes = {
        node_id
        for node_id, node in prompt.items()
        if node["class_type"] in ("PreviewImage", "SaveVideo")
    }
    assert output_nodes and output_nodes <= set(history["outputs"])


def test_codec_of_a_comfyui_vae_encodes_and_decodes_like_comfyui(tmp_path):
    """The streaming codec built from ComfyUI's VAE object gives ComfyUI's raw latents (§6.6) and,
    decoding a whole video, ComfyUI's frames: same weights, keys and latent space."""
    import torch
    from inspatio_nodes.core.wan.vae import WanVAE
    from safetensors.torch import save_file

    python = os.environ.get("COMFYUI_PYTHON", sys.executable)
    torch.manual_seed(0)
    vae_file = tmp_path / VAE_FILE
    save_file(
        {key: value.half().contiguous() for key, value in WanVAE().state_dict().items()},
        str(vae_file),
    )

    check = subprocess.run(
        [python, "-c", VAE_PARITY_CHECK, COMFYUI_DIR, str(REPO_ROOT), str(vae_file)],
        cwd=COMFYUI_DIR,
        env=comfyui_environment(tmp_path, python),
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, check.stderr[-3000:]
    errors = json.loads(check.stdout.strip().splitlines()[-1])

    # float32 both sides; only the convolution implementations differ.
    assert errors["encode"] < FLOAT32_CODEC_TOLERANCE and errors["decode"] < FLOAT32_CODEC_TOLERANCE
    assert (
        errors["frames_std"] > UNSATURATED_STD
    )  # random weights, yet frames vary: the check bites
