"""Where llmaccel keeps what it builds once: converted models, the compiled kernels, step-cost tables."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def cache_dir() -> Path:
    """$LLMACCEL_CACHE, else the user's cache folder (~/.cache/llmaccel or $XDG_CACHE_HOME/llmaccel)."""
    env = os.environ.get("LLMACCEL_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "llmaccel"


def private_dir(name: str) -> Path:
    """`name` inside a folder of this user's in the temp dir, for when the cache folder is not writable:
    kept between processes, refused (OSError) if another user owns it or could write to it."""
    root = Path(tempfile.gettempdir()) / f"llmaccel-{os.getuid()}"
    root.mkdir(mode=0o700, exist_ok=True)
    st = root.stat()
    if st.st_uid != os.getuid() or st.st_mode & 0o022:
        raise OSError(f"{root} belongs to another user or others can write to it")
    (root / name).mkdir(exist_ok=True)
    return root / name
