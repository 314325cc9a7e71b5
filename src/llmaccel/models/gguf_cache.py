"""A GGUF file's one-time conversion to an fp32 safetensors folder in llmaccel's cache.

transformers dequantises a GGUF file on every load (30-80 s for the default models); the folder it
saves loads in about a second. The folder is named after the file's path, size and mtime, so a changed
file converts again. A conversion writes into a scratch folder next to it and renames that into place
when complete, so the cache never holds a half-written model: a folder with a config.json is whole.
Bad input fails before the slow part: the file's header is checked, and the scratch folder created
(the cache's writability), before transformers reads a tensor.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import struct
import tempfile
import time
from pathlib import Path

import torch

from llmaccel.models.errors import ModelLoadError, one_line
from llmaccel.paths import cache_dir

log = logging.getLogger(__name__)

GGUF_MAGIC = b"GGUF"
GGUF_VERSIONS = (2, 3)  # the versions gguf's reader takes (version 1 had 32-bit counts; no file left uses it)
# The header: magic, version (uint32), tensor count (uint64), metadata count (uint64), in the file's byte order.
HEADER_FORMAT = "4sIQQ"
HEADER_BYTES = struct.calcsize("<" + HEADER_FORMAT)  # 24
# The fewest bytes one tensor's entry (name length, a 0-byte name, dims count, one dim, type, offset) and
# one metadata entry (key length, value type, a 1-byte value) can take: a header whose counts need more
# than the whole file holds is not a GGUF file's.
MIN_TENSOR_ENTRY_BYTES = 8 + 4 + 8 + 4 + 8
MIN_METADATA_ENTRY_BYTES = 8 + 4 + 1

SCRATCH_PREFIX = ".convert-"
# A scratch folder this old was left by a conversion that was killed (one takes minutes): it is removed.
STALE_SCRATCH_S = 24 * 3600


def conversion_folder(gguf: Path) -> Path:
    """Where the converted copy of `gguf` lives (or will) in the cache."""
    st = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}:{st.st_size}:{int(st.st_mtime)}".encode()).hexdigest()[:16]
    return cache_dir() / "models" / f"{gguf.stem}-{key}"


def converted(gguf: Path) -> Path:
    """The folder of `gguf` dequantised to fp32 safetensors, converting it on the first call."""
    out = conversion_folder(gguf)
    if (out / "config.json").exists():
        return out  # only a complete conversion is ever renamed to this name; reading needs no write access
    check_gguf_header(gguf)
    scratch = _scratch_folder(out.parent)
    try:
        log.warning("converting %s to safetensors in %s (one time, 30-80 s)", gguf.name, out)
        _convert(gguf, scratch)
        _move_into_place(scratch, out)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return out


def check_gguf_header(gguf: Path) -> None:
    """Raise ModelLoadError unless `gguf` starts as a GGUF file does: the magic bytes, a version gguf
    reads, and tensor and metadata counts the file's size can hold. Reads 24 bytes, so random bytes or
    a cut-off download fail here in no time, not after the conversion is announced."""
    try:
        with gguf.open("rb") as f:
            head = f.read(HEADER_BYTES)
        size = gguf.stat().st_size
    except OSError as exc:
        raise ModelLoadError(f"{gguf} is not a readable GGUF file: {exc.strerror or exc}") from exc
    problem = None
    if head[:4] != GGUF_MAGIC:
        problem = f"it does not start with the GGUF magic bytes {GGUF_MAGIC!r}"
    elif len(head) < HEADER_BYTES:
        problem = f"it ends inside its header ({size} bytes)"
    else:
        # little-endian unless written for a big-endian machine; the version says which
        little, big = (struct.unpack(order + HEADER_FORMAT, head) for order in "<>")
        _, version, tensors, entries = big if big[1] in GGUF_VERSIONS else little
        if version not in GGUF_VERSIONS:
            problem = f"unknown GGUF version {version} (llmaccel reads versions {', '.join(map(str, GGUF_VERSIONS))})"
        elif tensors * MIN_TENSOR_ENTRY_BYTES + entries * MIN_METADATA_ENTRY_BYTES > size - HEADER_BYTES:
            problem = f"its header lists {tensors} tensors and {entries} metadata entries, more than its {size} bytes hold"
    if problem:
        raise ModelLoadError(f"{gguf} is not a readable GGUF file: {problem}")


def _scratch_folder(parent: Path) -> Path:
    """A new empty folder in `parent` to convert into; creating it is the check that the cache is writable."""
    try:
        parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_scratch(parent)
        return Path(tempfile.mkdtemp(prefix=SCRATCH_PREFIX, dir=parent))
    except OSError as exc:
        raise ModelLoadError(
            f"the cache folder {parent} is not writable ({exc.strerror or exc}); "
            "set LLMACCEL_CACHE to a writable folder"
        ) from exc


def _remove_stale_scratch(parent: Path) -> None:
    """Remove the scratch folders of conversions that were killed (a finished or failed one removes its own)."""
    now = time.time()
    for old in parent.glob(SCRATCH_PREFIX + "*"):
        try:
            if now - old.stat().st_mtime > STALE_SCRATCH_S:
                shutil.rmtree(old, ignore_errors=True)
        except OSError:
            pass  # gone already: another process cleaned it


def _convert(gguf: Path, folder: Path) -> None:
    """Read `gguf` with transformers (the slow part: every tensor dequantised) and save it into `folder`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    except Exception as exc:  # the header looked right, but the file is cut off or not a model transformers knows
        log.debug("reading %s failed", gguf, exc_info=True)
        raise ModelLoadError(f"transformers cannot read {gguf}: {one_line(exc)}") from exc
    # The weights are plain fp32 after dequantisation; drop the GGUF marker so they can be saved.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    try:
        model.save_pretrained(folder)
        tok.save_pretrained(folder)
    except OSError as exc:
        raise ModelLoadError(
            f"cannot write the converted model to {folder.parent} ({exc.strerror or exc}); "
            "free some space or set LLMACCEL_CACHE to another folder"
        ) from exc


def _move_into_place(scratch: Path, out: Path) -> None:
    """Rename the complete `scratch` folder to `out` (atomic: a crash never leaves a half-written model)."""
    if out.is_dir() and not (out / "config.json").exists():
        shutil.rmtree(out, ignore_errors=True)  # not a conversion of ours (those are whole): it would block the rename
    try:
        scratch.rename(out)
    except OSError as exc:
        if (out / "config.json").exists():
            return  # another process converted the same file first; its copy is as good
        raise ModelLoadError(f"cannot move the converted model into {out} ({exc.strerror or exc})") from exc
