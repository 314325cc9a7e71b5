"""Builds and loads llmaccel's CPU kernels: one C++ extension holding the skinny GEMM, the decoder layer
(decoder_layer.cpp), sparse prefill attention and the argmax kernels. `skinny` is the Python API over it.

The C++ is compiled once (-O3 -march=native, no fast-math) into
$LLMACCEL_CACHE/torch_extensions/llmaccel_cpu_kernels_<hash>/ (default ~/.cache/llmaccel); the hash
covers the sources, flags, CPU, torch and Python, so a cache shared between machines never loads code
built for another CPU. A build runs in a private temporary folder next to that one and is renamed
into place when complete, so no lock is shared between processes: a process killed mid-compile
leaves only its own temporary folder (removed by a later build), two first runs at once both end with
a working extension, and a complete build is imported directly, with no compiler and no ninja run.
A cache folder that cannot be written to builds into a folder of this user's in the temp dir instead.
`build()` (or `python -m llmaccel.kernels`) builds ahead of time. `available()` says whether the
kernels can be had; callers fall back to MKL or F.linear when it returns False, after one WARNING
that says why. Importing this module never compiles anything.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import platform
import shutil
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

from llmaccel.paths import cache_dir, private_dir

log = logging.getLogger(__name__)

__all__ = ["available", "build", "load"]

_DIR = Path(__file__).parent
# one extension: the decoder layer calls the GEMM; sparse prefill attention, argmax and sampling noise ride along (one
# build, one cache entry). bindings.cpp binds them to Python.
_SOURCES = [_DIR / f for f in ("skinny_gemm.cpp", "gemm_vector.cpp", "gemm_amx.cpp", "decoder_layer.cpp",
                               "sparse_attention.cpp", "argmax.cpp", "argmax_head.cpp", "sampling.cpp",
                               "bindings.cpp")]
_HEADERS = [_DIR / f for f in ("vec.h", "tiles.h", "amx.h", "skinny_gemm.h", "gemm_paths.h")]  # part of the build's hash
_CFLAGS = ["-O3", "-march=native", "-ffp-contract=fast", "-fopenmp"]  # -march=native brings AMX where the CPU has it  # no -ffast-math: IEEE fp32
_LDFLAGS = ["-fopenmp"]  # at::parallel_for is inline OpenMP; libgomp is the one torch already loaded
_NAME = "llmaccel_cpu_kernels"  # the GEMM, the decoder layer, sparse attention, argmax and sampling noise
_STALE_BUILD_S = 3600  # a temporary build folder untouched this long belongs to a process that died

_lock = threading.Lock()
_ext = None  # the extension module once loaded
_path: Path | None = None  # the loaded extension's .so in its final place
_error: str | None = None


def _cpu_fingerprint() -> str:
    """Model name and feature flags of this CPU: -march=native code is only valid on a CPU like it."""
    try:
        text = Path("/proc/cpuinfo").read_text()
        keep = [ln for ln in text.splitlines() if ln.startswith(("model name", "flags", "Features"))]
        return "\n".join(sorted(set(keep)))
    except OSError:
        return platform.processor() or platform.machine()


def _extension_name() -> str:
    """llmaccel_cpu_kernels_<hash of the sources, flags, CPU, torch and Python versions>."""
    src = b"".join(f.read_bytes() for f in [*_SOURCES, *_HEADERS])
    env = " ".join(_CFLAGS + _LDFLAGS) + _cpu_fingerprint() + torch.__version__ + sys.implementation.cache_tag
    return f"{_NAME}_{hashlib.sha256(src + env.encode()).hexdigest()[:12]}"


def build_key() -> str:
    """What identifies this build of the kernels (sources, flags, CPU, torch and Python versions)."""
    return _extension_name()


def _so(root: Path, name: str) -> Path:
    return root / name / f"{name}.so"


def _import(name: str, so: Path):
    """The extension module from a complete build (no compiler, no ninja: ~0.1 s)."""
    spec = importlib.util.spec_from_file_location(name, so)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _remove_stale_builds(root: Path) -> None:
    """Temporary build folders of processes that died mid-compile (untouched for an hour)."""
    for d in root.glob(f".{_NAME}_*"):
        try:
            if time.time() - d.stat().st_mtime > _STALE_BUILD_S:
                shutil.rmtree(d, ignore_errors=True)
        except OSError:
            pass


def _publish(tmp: Path, final: Path) -> None:
    """Moves a complete build folder into its place in one rename. If another process got there first
    its build is kept (same sources and flags, so the same code) and ours is dropped."""
    try:
        os.rename(tmp, final)
        return
    except OSError:
        if _so(final.parent, final.name).exists():
            return
    # a folder without a build in the way (e.g. emptied by hand): move it aside first
    aside = tmp.with_name(tmp.name + ".old")
    try:
        os.rename(final, aside)
        os.rename(tmp, final)
    except OSError as e:
        if not _so(final.parent, final.name).exists():
            raise RuntimeError(f"could not move the build into {final}: {e}") from e
    finally:
        shutil.rmtree(aside, ignore_errors=True)


def _compile(name: str, root: Path, why: str = ""):
    """Compiles the extension in a temporary folder inside `root`, imports it and publishes the folder
    as root/name. Returns (module, path of the published .so)."""
    from torch.utils import cpp_extension

    if shutil.which(os.environ.get("CXX", "c++")) is None and shutil.which("g++") is None:
        raise RuntimeError("no C++ compiler found (install g++ or set CXX)")
    if not cpp_extension.is_ninja_available():
        raise RuntimeError("ninja is not available (pip install ninja)")
    _remove_stale_builds(root)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.{socket.gethostname()}.{os.getpid()}.", dir=root))
    log.warning("compiling llmaccel's CPU kernels (one time, ~1 min) into %s%s", root / name, why)
    t0 = time.perf_counter()
    try:
        ext = cpp_extension.load(
            name=name,
            sources=[str(f) for f in _SOURCES],
            extra_cflags=_CFLAGS,
            extra_ldflags=_LDFLAGS,
            build_directory=str(tmp),
            verbose=log.isEnabledFor(logging.DEBUG),
        )
        tmp.chmod(0o755)  # mkdtemp's 0o700 would keep the build from other users of a shared cache
        _publish(tmp, root / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone already once published
    log.info("built %s in %.0f s", name, time.perf_counter() - t0)
    return ext, _so(root, name)


def _build():
    """(module, .so path): a complete build of this extension if one exists, else a fresh one."""
    name = _extension_name()
    cache = cache_dir() / "torch_extensions"
    if _so(cache, name).exists():
        return _import(name, _so(cache, name)), _so(cache, name)
    try:
        cache.mkdir(parents=True, exist_ok=True)
        unwritable = None if os.access(cache, os.W_OK) else "no write permission"
    except OSError as e:
        unwritable = str(e)
    if unwritable is None:
        return _compile(name, cache)
    # a read-only or unusable cache folder: a folder of our own in the temp dir, kept for later processes
    root = private_dir("torch_extensions")  # kept for later processes, so the build happens once
    if _so(root, name).exists():
        log.info("loading llmaccel's CPU kernels from %s (%s is not writable)", root / name, cache)
        return _import(name, _so(root, name)), _so(root, name)
    return _compile(name, root, f" because {cache} is not writable ({unwritable}; set LLMACCEL_CACHE to a writable folder)")


def load():
    """The compiled extension, building it on first call; raises RuntimeError if it cannot be had."""
    global _ext, _path, _error
    if _ext is not None:
        return _ext
    with _lock:
        if _ext is None and _error is None:
            try:
                _ext, _path = _build()
                log.debug("cpu kernels: %s (isa %s, NB=%d, MR=%d)", _path, _ext.isa(), _ext.panel_width(), _ext.row_block())
            except Exception as e:  # compiler missing, build error, import error: all mean "use MKL"
                _error = f"{type(e).__name__}: {e}"
                output = getattr(e.__cause__, "output", None)  # the compiler's messages, if it ran
                if isinstance(output, bytes):
                    output = output.decode(errors="replace")
                log.warning("llmaccel's CPU kernels are unavailable, so decoding falls back to MKL / PyTorch ops "
                            "(several times slower): %s%s", _error, f"\n{output[-3000:]}" if output else "")
        if _ext is None:
            raise RuntimeError(f"llmaccel's CPU kernels are unavailable: {_error}")
    return _ext


def build() -> Path:
    """Builds the kernels now if no build exists (or finds the one that does) and returns its .so;
    raises RuntimeError with the reason if they cannot be built here. For set-up scripts."""
    load()
    return _path


def available() -> bool:
    """True if the kernels are built and loadable here (builds them on the first call ever, ~1 min)."""
    try:
        load()
        return True
    except RuntimeError:
        return False
