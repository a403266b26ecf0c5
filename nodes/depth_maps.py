"""Depth maps from any depth node: the widgets that say how to read one, and the reading.

Data flow: a depth node's grayscale IMAGE or MASK (Depth Anything, MiDaS, Marigold, DA3 metric,
MoGe, an EXR loader) + its encoding widgets → **here** (``core/depth.py`` ``DepthReading`` /
``read_depth``) → distances per pixel for the scene nodes (``nodes/scene.py``) and the WorldFM
scene nodes (``nodes/worldfm_scene.py``), which declare the same five widgets through
:func:`depth_map_inputs`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import reported_as

if TYPE_CHECKING:
    from ..core.depth import DepthImage
    from ..core.types import DepthMaps, MaskBatch

DEFAULT_NEAR = 0.5  # of inverse / normalised maps, scene units


def depth_map_inputs(
    name: str, map_tooltip: str, default_encoding: str, default_far: float, scale_tooltip: str
) -> dict:
    """A depth map input and the four widgets that say how to read it (``core/depth.py``
    ``DepthReading``), named ``<name>``, ``<name>_encoding``, ``_near``, ``_far``, ``_scale``;
    :func:`read_depth_input` reads them. The WorldFM scene nodes declare theirs here too."""
    from ..core.depth import DEPTH_ENCODINGS

    return {
        name: ("IMAGE,MASK", {"tooltip": map_tooltip}),
        f"{name}_encoding": (
            list(DEPTH_ENCODINGS),
            {
                "default": default_encoding,
                "tooltip": f"How the values read: 'metric' = distance x {name}_scale (DA3 metric, "
                "MoGe, EXR); 'inverse' = white is near, linear in 1/distance (Depth Anything, "
                "MiDaS); 'normalized' = black is near, linear in distance (Marigold).",
            },
        ),
        f"{name}_near": (
            "FLOAT",
            {
                "default": DEFAULT_NEAR,
                "min": 0.001,
                "max": 10000.0,
                "step": 0.01,
                "tooltip": "Distance of the nearest point, for 'inverse' and 'normalized' maps "
                "(scene units, e.g. metres).",
            },
        ),
        f"{name}_far": (
            "FLOAT",
            {
                "default": default_far,
                "min": 0.002,
                "max": 100000.0,
                "step": 0.1,
                "tooltip": "Distance of the farthest point, for 'inverse' and 'normalized' maps.",
            },
        ),
        f"{name}_scale": (
            "FLOAT",
            {
                "default": 1.0,
                "min": 1e-6,
                "max": 1e6,
                "step": 0.001,
                "tooltip": scale_tooltip,
            },
        ),
    }


def read_depth_input(
    node: str,
    input_name: str,
    image_or_mask: DepthImage | MaskBatch,
    encoding: str,
    near: float,
    far: float,
    scale: float,
) -> DepthMaps:
    """Depth values ``[F, H, W]`` of a depth node's IMAGE or MASK, read with ``core/depth.py``.

    Errors name ``<input_name>_encoding`` for a bad reading (near/far/scale) and ``input_name`` for
    a map that cannot be read; the WorldFM scene nodes use the same widgets and reading.
    """
    from ..core.depth import DepthReading, depth_values_from_image, read_depth

    with reported_as(node, f"{input_name}_encoding"):
        reading = DepthReading(encoding, near=near, far=far, scale=scale)
    with reported_as(node, input_name):
        return read_depth(depth_values_from_image(image_or_mask), reading)
