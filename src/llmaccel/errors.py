"""The exceptions llmaccel raises for bad input. Each message is one plain line saying what to change.

All are `GenerationError`, a ValueError; a value of the wrong type is also a TypeError. The command line
prints them as one line with exit code 2; a server answers them with a 400.
"""

from __future__ import annotations


class GenerationError(ValueError):
    """Bad input to generation: an empty prompt, a limit out of range, a prompt beyond the context,
    token ids outside the vocabulary, a bad option value."""


class InputTypeError(GenerationError, TypeError):
    """An argument of the wrong type (bytes for a prompt, a float for a token count)."""


def check_int(name: str, value: object, lowest: int | None = None) -> int:
    """`value` as an int if it is one (bools and floats are refused, not rounded), at least `lowest`."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputTypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    if lowest is not None and value < lowest:
        raise GenerationError(f"{name} must be at least {lowest}, got {value}")
    return int(value)
