"""Where llmaccel keeps what it builds once: converted models and the compiled kernel."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """$LLMACCEL_CACHE, else the user's cache folder (~/.cache/llmaccel or $XDG_CACHE_HOME/llmaccel)."""
    env = os.environ.get("LLMACCEL_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "llmaccel"
