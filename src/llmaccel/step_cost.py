"""The step-cost table: what a decoding step of k tokens costs relative to a 1-token step.

Drafts are sized by it (drafting/reference.py's guard) and `auto` decides by it, so it must describe
the engine at hand: the same model costs 2.4x a 1-token step for 16 tokens with code-block weights
and 1.5x with fp32 panels on the same CPU (BENCHMARKS.md). It is an explicit input of decoding, not a
clock read during it: `load()` measures it once per model, device, CPU and kernel build and keeps it
in the cache (`$LLMACCEL_CACHE/step-cost/`), later processes read it back, and `llmaccel cost --save`
measures it again. With a given table, the same prompt takes the same steps every run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from llmaccel.drafting.reference import step_cost_table
from llmaccel.paths import cache_dir, private_dir

log = logging.getLogger(__name__)

STEP_SIZES = (1, 2, 4, 8, 16, 32)
# Most tokens a table describes (the engine's MAX_STEP_TOKENS); longer steps extrapolate in proportion.
LONGEST_STEP = 64
# The measurement `load()` makes: cached tokens under the steps (a short context keeps it cheap;
# attention's share grows with the context, a second-order effect on the ratios) and repeats.
# ~0.5-1 s for SmolLM2 on 2 CPU cores.
TABLE_CONTEXT = 256
TABLE_REPS = 5


def measure(lm, context: int = 1000, sizes: Sequence[int] = STEP_SIZES, reps: int = 15, seed: int = 0,
            hf_cache: bool = False) -> dict[int, float]:
    """Median seconds of a k-token step on top of `context` cached tokens, sizes interleaved per rep.

    `hf_cache=True` uses transformers' DynamicCache (its default path) instead of llmaccel's.
    """
    g = torch.Generator().manual_seed(seed)
    V = lm.vocab_size
    prompt = torch.randint(0, V, (1, context), generator=g).to(lm.device)
    if hf_cache:
        from transformers import DynamicCache

        cache = DynamicCache()
        cache.rollback_to = lambda n: cache.crop(n - cache.get_seq_length())
    else:
        cache = lm.new_cache()
    lm.forward(prompt, 0, cache, keep=1)
    times: dict[int, list[float]] = {k: [] for k in sizes}
    for r in range(reps + 2):
        for k in sizes:
            ids = torch.randint(0, V, (1, k), generator=g).to(lm.device)
            t = time.perf_counter()
            lm.greedy(ids, context, cache, keep=k)  # what the engine runs: the step and its greedy choices
            dt = time.perf_counter() - t
            cache.rollback_to(context)
            if r >= 2:  # two warm-up rounds
                times[k].append(dt)
    return {k: statistics.median(v) for k, v in times.items()}


def engine_layout(lm) -> str:
    """Which engine runs `lm`'s steps: the lean forward or transformers' modules, C++ kernels or not,
    CUDA graphs or not."""
    from llmaccel.kernels import skinny

    kernels = lm.device.type == "cpu" and skinny.available()
    return ", ".join([
        "lean forward" if lm.stack is not None else "transformers modules",
        "C++ kernels" if kernels else "no C++ kernels",
        "CUDA graphs" if lm.graphs is not None else "eager",
    ])


def table_key(lm) -> str:
    """What the costs depend on: the model (a path made absolute), the engine's layout, the device, and
    the kernel build (which names the CPU's model and flags and the torch version). Two processes with
    the same key run the same steps at the same relative costs."""
    from llmaccel.kernels import loader

    name = Path(str(lm.name)).expanduser()
    model = str(name.resolve()) if name.exists() else str(lm.name)
    parts = [model, engine_layout(lm), str(lm.device), loader.build_key(), torch.__version__]
    if lm.device.type == "cuda":
        parts.append(torch.cuda.get_device_name(lm.device))
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def _folders() -> list[Path]:
    """Where tables are kept: the cache, else (read-only cache) a folder of this user's in the temp dir."""
    folders = [cache_dir() / "step-cost"]
    try:
        folders.append(private_dir("step-cost"))
    except OSError:
        pass
    return folders


def table_path(lm) -> Path:
    return _folders()[0] / f"{table_key(lm)}.json"


def save(lm, measured: dict[int, float]) -> Path | None:
    """Keep `measured` (seconds by k) for later processes, in the cache or else in the temp dir; None
    (and a warning) if neither can be written."""
    name = f"{table_key(lm)}.json"
    doc = {"model": str(lm.name), "layout": engine_layout(lm), "device": str(lm.device),
           "seconds": {str(k): v for k, v in sorted(measured.items())}}
    for folder in _folders():
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
            with os.fdopen(fd, "w") as f:
                json.dump(doc, f)
            os.replace(tmp, folder / name)  # whole or not at all: a reader never sees half a file
            return folder / name
        except OSError as exc:
            reason = f"{folder}: {exc.strerror or exc}"
    log.warning("step-cost table not kept (%s); it will be measured again next time", reason)
    return None


def read(lm) -> dict[int, float] | None:
    """The kept measurement for this model and machine, or None (absent or unreadable)."""
    name = f"{table_key(lm)}.json"
    for folder in _folders():
        try:
            doc = json.loads((folder / name).read_text())
            measured = {int(k): float(v) for k, v in doc["seconds"].items()}
            if 1 in measured and min(measured.values()) > 0:
                return measured
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue
    return None


def load_or_measure(lm, fresh: bool = False) -> tuple[float, ...]:
    """The step-cost table for `lm`: read from the cache, else (or with `fresh`) measured now (~1 s) and kept."""
    measured = None if fresh else read(lm)
    if measured is None:
        context = max(1, min(TABLE_CONTEXT, lm.max_context - max(STEP_SIZES) - 1))
        t = time.perf_counter()
        measured = measure(lm, context=context, reps=TABLE_REPS)
        log.info("step costs measured in %.2f s", time.perf_counter() - t)
        save(lm, measured)
    table = step_cost_table(measured, LONGEST_STEP)
    log.info("step costs: %s", ", ".join(f"{k}: {table[k]:.2f}" for k in sorted(measured)))
    return table
