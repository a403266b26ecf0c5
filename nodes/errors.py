"""Core errors re-raised as node errors, so the message names the node and the input to fix.

The core raises ``ValueError`` subclasses that say what is wrong and how to fix it, but it does not
know which node or widget the value came from. Node functions wrap each core call in
:func:`reported_as`, which adds both (the scene, camera and render nodes share it).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from .comfy import NodeInputError


@contextmanager
def reported_as(node: str, input_name: str) -> Iterator[None]:
    """Turn a core ``ValueError`` raised inside the block into a :class:`NodeInputError`."""
    try:
        yield
    except NodeInputError:
        raise
    except ValueError as error:
        raise NodeInputError(node, input_name, f"cannot be used: {error}") from error
