"""Rendering source pixels into target cameras: the explicit spatial constraint.

Two renderers live here:

- forward splatting with the official soft z-buffer (InSpatio-World v1 / v1.5 ``DepthWarper``);
- the hard z-buffer point renderer of InSpatio-WorldFM (``modules/point_renderer.py``).
"""

from __future__ import annotations

# --- soft z-buffer forward splatting (InSpatio-World) --------------------------------------


# --- hard z-buffer point renderer (InSpatio-WorldFM) ---------------------------------------
