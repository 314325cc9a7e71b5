"""A GGUF file's one-time conversion to an fp32 safetensors folder in llmaccel's cache.

transformers dequantises a GGUF file on every load (30-80 s for the default models); the folder it
saves loads in about a second. The folder is named after the file's path, size and mtime, so a changed
file converts again.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import tempfile
from pathlib import Path

import torch

from llmaccel.paths import cache_dir

log = logging.getLogger(__name__)


def conversion_folder(gguf: Path) -> Path:
    """Where the converted copy of `gguf` lives (or will) in the cache."""
    st = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}:{st.st_size}:{int(st.st_mtime)}".encode()).hexdigest()[:16]
    return cache_dir() / "models" / f"{gguf.stem}-{key}"


def converted(gguf: Path) -> Path:
    """Dequantise a GGUF file once and keep an fp32 safetensors copy (later loads take seconds)."""
    out = conversion_folder(gguf)
    if (out / "config.json").exists():
        return out
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.warning("converting %s to safetensors in %s (one time, 30-80 s)", gguf.name, out)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    # The weights are plain fp32 after dequantisation; drop the GGUF marker so they can be saved.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=out.parent))
    try:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        tmp.rename(out)  # atomic: a crash never leaves a half-written model behind
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
