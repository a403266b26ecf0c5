"""Tensor aliases and the axis glossary shared by every module of the core.

Each alias names both the *shape* and the *nature* of a tensor, so a signature such as
``def prefill(context: ContextLatents36) -> None`` says what goes in without a comment.
The shape string inside ``Annotated`` is documentation only; nothing checks it at run time.

Axis glossary
-------------
B   batch
F   pixel frames (video time)
G   latent frames (F = 4·(G − 1) + 1 for the Wan2.1 VAE)
C   channels
H W pixel height / width                 h w   latent height / width (H/8, W/8)
N   tokens (of one attention call)       Nc    cached context tokens
D   model width                          Dh    head dim
Hd  attention heads                      L     text tokens
V   source views                         P     points
T   trajectory samples / target frames
"""

from __future__ import annotations

from typing import Annotated

from torch import Tensor

# --- images and video (pixel space) -------------------------------------------------------
Image = Annotated[Tensor, "H W 3 float in [0, 1]"]
ImageBatch = Annotated[Tensor, "B H W 3 float in [0, 1] (ComfyUI IMAGE)"]
MaskBatch = Annotated[Tensor, "B H W float in {0, 1} (ComfyUI MASK)"]
VideoFrames = Annotated[Tensor, "F 3 H W float in [-1, 1]"]
RenderFrames = Annotated[Tensor, "F 3 H W float in [-1, 1], holes -1"]
RenderMask = Annotated[Tensor, "F 1 H W float in {0, 1}"]
DepthMaps = Annotated[Tensor, "F H W float, z-depth, <= 0 means no depth"]

# --- cameras ------------------------------------------------------------------------------
Intrinsics = Annotated[Tensor, "... 3 3 pixel K"]
WorldToCamera = Annotated[Tensor, "... 4 4 OpenCV world-to-camera (Tcw)"]
CameraToWorld = Annotated[Tensor, "... 4 4 OpenCV camera-to-world (Twc)"]
Points = Annotated[Tensor, "P 3"]

# --- latents (Wan2.1 normalised space unless the name says Raw) -------------------------------
VideoLatents = Annotated[Tensor, "B G 16 h w normalised Wan2.1 latents"]
RawVideoLatents = Annotated[Tensor, "B 16 G h w ComfyUI raw-space LATENT samples"]
RenderLatents = Annotated[Tensor, "B G 16 h w normalised latents of the splat render"]
MaskLatents = Annotated[Tensor, "B G 4 h w packed pixel mask in [-1, 1]"]
ConditionLatents = Annotated[Tensor, "B G 20 h w [mask 4 | render 16]"]
ModelInput = Annotated[Tensor, "B G 36 h w [noisy 16 | mask 4 | render 16]"]
FlowPrediction = Annotated[Tensor, "B G 16 h w flow = noise - x0"]

# --- transformer --------------------------------------------------------------------------
Tokens = Annotated[Tensor, "B N D"]
TextEmbeddings = Annotated[Tensor, "B L text_dim (umT5 output, zero rows past the prompt)"]
TextKV = Annotated[Tensor, "2 B L Hd Dh cross-attention K and V of one layer"]
Queries = Annotated[Tensor, "B N Hd Dh"]
Keys = Annotated[Tensor, "B N Hd Dh"]
Values = Annotated[Tensor, "B N Hd Dh"]
KVCache = Annotated[Tensor, "2 B Nc Hd Dh fixed-capacity self-attention K and V of one layer"]
TimeEmbedding = Annotated[Tensor, "B D"]
Modulation = Annotated[Tensor, "B 6 D"]
RopeAngles = Annotated[Tensor, "N Dh/2 complex rotation per token"]
