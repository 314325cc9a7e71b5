"""The one exception the model loaders raise for a name, path or cache they cannot use."""

from __future__ import annotations

MESSAGE_LIMIT = 300  # characters of a library's message quoted in ours (transformers' run to paragraphs)


class ModelLoadError(ValueError):
    """A model name or path that cannot be loaded; the message is one line that says what to do."""


def one_line(exc: BaseException, limit: int = MESSAGE_LIMIT) -> str:
    """An exception's message on one line, cut to `limit` characters."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
