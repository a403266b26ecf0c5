"""Reading depth images: turning what a depth estimator wrote into z-depth.

Data flow: a depth node (Depth Anything, Marigold, DA3, a loaded EXR ...) → a ComfyUI IMAGE or
MASK → **here** → ``DepthMaps`` (z along the camera axis, ``<= 0`` = no depth) → ``core/scene.py``.

Depth nodes disagree on what the pixel values mean, so the artist says which encoding a map uses:

- ``metric``: the value is the distance itself, times ``scale`` (DA3 metric output, EXR files).
- ``inverse``: the value is normalised inverse depth (disparity): 1 at ``near``, 0 at ``far``,
  linear in 1/z. This is what Depth Anything and MiDaS nodes emit (white = near).
- ``normalized``: the value is normalised linear depth: 0 at ``near``, 1 at ``far``, linear in z
  (Marigold's default output, many "depth to image" nodes).

The official pipeline stores metric DA3 depth (SPEC-inspatio-world.md §5, "Depth"); the other two
encodings only recover depth up to the ``near``/``far`` range the artist gives, which is all the
splat renderer needs to look right (its soft z-buffer is scale-invariant per frame).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

import torch
from torch import Tensor

from .types import DepthMaps

DepthValues = Annotated[Tensor, "F H W float, the raw values of a depth image"]
DepthImage = Annotated[Tensor, "F H W C float, a depth map stored as an image (C = 1, 3 or 4)"]

DepthEncoding = Literal["metric", "inverse", "normalized"]
DEPTH_ENCODINGS: tuple[DepthEncoding, ...] = ("metric", "inverse", "normalized")

# A grey depth image has equal R, G and B up to 8-bit rounding; larger differences mean a
# colour-mapped visualisation (turbo, inferno ...), whose values are not depth at all.
GREY_CHANNEL_TOLERANCE = 2.0 / 255.0
COLOUR_CHANNELS = 3
# Depth estimators round their working size to a patch multiple, so the aspect ratio of a depth
# map may differ slightly from the frames'; more than this means another picture.
ASPECT_TOLERANCE = 0.02


class DepthReadingError(ValueError):
    """A depth input or reading setting that cannot give depth; the message says how to fix it."""


@dataclass(frozen=True)
class DepthReading:
    """How to read the values of a depth image.

    encoding: one of ``DEPTH_ENCODINGS`` (see the module docstring)
    near:     distance at the near end of a normalised map (``inverse`` / ``normalized``)
    far:      distance at the far end of a normalised map (``inverse`` / ``normalized``)
    scale:    multiplier of ``metric`` values (e.g. 0.001 for millimetre maps)
    """

    encoding: DepthEncoding = "metric"
    near: float = 0.5
    far: float = 10.0
    scale: float = 1.0

    def __post_init__(self) -> None:
        if self.encoding not in DEPTH_ENCODINGS:
            raise DepthReadingError(
                f"depth encoding {self.encoding!r} is unknown: use one of {', '.join(DEPTH_ENCODINGS)}"
            )
        if self.encoding == "metric":
            if not self.scale > 0:
                raise DepthReadingError(f"depth scale must be positive, got {self.scale}")
            return
        if not 0 < self.near < self.far:
            raise DepthReadingError(
                f"depth range needs 0 < near < far, got near={self.near}, far={self.far}: "
                "set near to the closest and far to the farthest distance in the scene"
            )


def depth_values_from_image(image: DepthImage | DepthValues) -> DepthValues:
    """The single channel of a depth map: a MASK-like ``[F, H, W]``, or a grey image ``[F, H, W, C]``.

    Alpha is ignored. A colour-mapped image is refused: its hue, not its brightness, encodes depth.
    """
    if image.ndim == 3:
        return image.float()
    if image.ndim != 4 or image.shape[-1] not in (1, COLOUR_CHANNELS, COLOUR_CHANNELS + 1):
        raise DepthReadingError(
            "a depth map must be [frames, height, width] (a MASK) or [frames, height, width, 1|3|4] "
            f"(an IMAGE), got shape {tuple(image.shape)}"
        )
    colour = image[..., :COLOUR_CHANNELS].float()
    spread = colour.amax(dim=-1) - colour.amin(dim=-1)
    if spread.numel() and float(spread.max()) > GREY_CHANNEL_TOLERANCE:
        raise DepthReadingError(
            "the depth image is coloured (its R, G and B differ): it looks like a colour-mapped "
            "visualisation; switch the depth node to its grayscale output"
        )
    return colour.mean(dim=-1)


def match_depth_size(depth: DepthMaps, height: int, width: int) -> DepthMaps:
    """Depth resized to the frames' size with nearest sampling, as the official DA3 post-processing.

    Nearest never blends a foreground depth with the background across an edge (a blend would put
    points in mid-air). Only a uniform scale is accepted: a depth map of another aspect ratio does
    not belong to these frames.
    """
    depth_height, depth_width = depth.shape[-2:]
    if (depth_height, depth_width) == (height, width):
        return depth
    if abs(depth_width / depth_height - width / height) > ASPECT_TOLERANCE * (width / height):
        raise DepthReadingError(
            f"the depth map is {depth_width}x{depth_height} but the frames are {width}x{height}: "
            "their aspect ratios differ, so the depth was made from other frames (or cropped); "
            "estimate depth from the same frames"
        )
    return torch.nn.functional.interpolate(depth[:, None], size=(height, width), mode="nearest")[
        :, 0
    ]


def read_depth(values: DepthValues, reading: DepthReading) -> DepthMaps:
    """z-depth from the raw values of a depth map, in float32.

    Non-finite values stay non-finite and non-positive metric values stay non-positive: both mean
    "no depth", which ``core/scene.py`` masks out with a warning.
    """
    if values.ndim != 3:
        raise DepthReadingError(
            f"depth values must be [frames, height, width], got shape {tuple(values.shape)}"
        )
    values = values.float()
    if reading.encoding == "metric":
        return values * reading.scale
    # Normalised maps live in [0, 1]; clamping keeps 8-bit rounding and resampling overshoot from
    # producing distances outside the range the artist gave (or a division by zero below).
    fraction = values.clamp(0.0, 1.0)
    near = torch.tensor(reading.near, dtype=torch.float64)
    far = torch.tensor(reading.far, dtype=torch.float64)
    if reading.encoding == "inverse":
        inverse_depth = fraction.double() / near + (1.0 - fraction.double()) / far
        return (1.0 / inverse_depth).float()
    return (near + fraction.double() * (far - near)).float()


def foreground_depth(depth: DepthMaps) -> float:
    """The nearest valid depth of the first frame: v1's ``first_depth_min``.

    v1 ``datasets/test_dataset.py`` scales camera-path radii by it (the README's "radius ×
    foreground depth"), so presets given in multiples of the scene depth move the camera in
    proportion to how close the subject is.
    """
    first_frame = depth[0]
    valid = first_frame[torch.isfinite(first_frame) & (first_frame > 0)]
    if valid.numel() == 0:
        raise DepthReadingError(
            "the first frame has no valid depth, so the scene has no foreground depth"
        )
    return float(valid.min())
