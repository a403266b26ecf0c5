"""Core errors re-raised as node errors, so the message names the node and the input to fix.

The core raises ``ValueError`` subclasses that say what is wrong and how to fix it, but it does not
know which node or widget the value came from. Node functions wrap each core call in
:func:`reported_as` (or :func:`written_as` around a file write), which adds both; combo values
that arrive from an API prompt unchecked go through :func:`check_choice`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
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


@contextmanager
def written_as(node: str, input_name: str) -> Iterator[None]:
    """:func:`reported_as` for a block that writes the file ``input_name`` names: a file system
    error (no permission, a folder in the way) is reported on that input too."""
    with reported_as(node, input_name):
        try:
            yield
        except OSError as error:
            raise NodeInputError(node, input_name, f"cannot be written: {error}") from error


def check_choice(node: str, input_name: str, value: str, choices: Sequence[str]) -> None:
    """Refuse a combo value outside its list (an API prompt is not checked against the widget)."""
    if value not in choices:
        raise NodeInputError(node, input_name, f"is {value!r}: use one of {', '.join(choices)}")
