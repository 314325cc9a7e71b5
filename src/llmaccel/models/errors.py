"""The one exception the model loaders raise for a name, path or cache they cannot use."""

from __future__ import annotations


class ModelLoadError(Exception):
    """A model name or path that cannot be loaded; the message is one line that says what to do."""
