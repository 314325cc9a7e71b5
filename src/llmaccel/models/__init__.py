"""The one package that talks to transformers; everything else in llmaccel sees `LoadedModel`.

    sources.py       the aliases of the shipped models; a name or path -> a folder transformers loads
    gguf_cache.py    a GGUF file's one-time conversion to a safetensors folder in the cache
    config.py        what we read from a model's config: context length, stop ids, RoPE kind, CUDA-graph fit
    lean_weights.py  a Llama-family model's weights as lean.py's Stack, with its RoPE table
    adapter.py       LoadedModel: the forward the engine calls
    errors.py        ModelLoadError
    here             load(), wrap(), load_reference_model(), load_tokenizer()
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors import SafetensorError

from llmaccel import attention
from llmaccel import step_cost as step_costs
from llmaccel.graphs import GraphedSteps
from llmaccel.linear import pack_linears
from llmaccel.memory import keep_freed_memory
from llmaccel.models.adapter import LoadedModel
from llmaccel.models.config import GRAPH_CACHE_SHARE, GRAPH_MODEL_TYPES, eos_ids, graphable, max_context
from llmaccel.models.errors import ModelLoadError, one_line
from llmaccel.models.lean_weights import LEAN_MODEL_TYPES, ROPE_TABLE_MAX, lean_stack
from llmaccel.models.sources import ALIASES, DEFAULT_MODEL, Alias, resolve
from llmaccel.paths import cache_dir

__all__ = [
    "ALIASES", "DEFAULT_MODEL", "GRAPH_CACHE_SHARE", "GRAPH_MODEL_TYPES", "LEAN_MODEL_TYPES", "ROPE_TABLE_MAX",
    "Alias", "LoadedModel", "ModelLoadError",
    "load", "load_reference_model", "load_tokenizer", "resolve", "wrap",
]


def wrap(
    model, tokenizer, name: str = "model", pack: bool = True, lean_forward: bool = True, cuda_graphs: bool = True
) -> LoadedModel:
    """Wrap an already-built transformers causal LM (tests build tiny random ones).

    Llama-family models get the lean forward (lean.py) unless `lean_forward=False`; the others run
    through transformers' modules with their linears packed for few-row steps (`pack`). On a GPU,
    models with one kind of full attention run their steps as CUDA graphs (`cuda_graphs`, graphs.py).
    """
    model.eval()
    model.set_attn_implementation(attention.register())
    stack = lean_stack(model) if lean_forward else None
    if pack and stack is None:
        pack_linears(model)
    lm = LoadedModel(
        name=name,
        model=model,
        tokenizer=tokenizer,
        eos_token_ids=eos_ids(model, tokenizer),
        max_context=max_context(model.config),
        stack=stack,
    )
    if cuda_graphs and graphable(model, lm.max_context):
        lm.graphs = GraphedSteps(lm._static_step, model.device, lm.max_context)
    return lm


def load(
    name_or_path: str = DEFAULT_MODEL, *, device: str = "cpu", pack: bool = True, lean_forward: bool = True,
    cuda_graphs: bool = True, step_cost: Sequence[float] | str | None = "cached",
) -> LoadedModel:
    """Load a model by alias, folder or .gguf file, in fp32, ready for the engine.

    `pack=True` re-lays the linear weights for the fast GEMM path (see linear.py); the outputs of
    greedy decoding are unchanged (tested). `cuda_graphs`: see `wrap`. `step_cost`, the table that
    sizes drafts (step_cost.py): "cached" reads the one kept for this model and machine or measures
    and keeps it (~1 s), "measure" measures it anew, a sequence is taken as given, None leaves the
    engine's fixed default.
    """
    if isinstance(step_cost, str) and step_cost not in ("cached", "measure"):
        raise ModelLoadError(f"step_cost must be 'cached', 'measure', a table or None, got {step_cost!r}")
    if step_cost is not None and not isinstance(step_cost, str):
        from llmaccel.engine import check_step_cost

        step_cost = check_step_cost(step_cost)  # before the load, not after it
    keep_freed_memory()
    model, tokenizer = load_reference_model(name_or_path, device)
    lm = wrap(model, tokenizer, name=name_or_path, pack=pack and device == "cpu", lean_forward=lean_forward,
              cuda_graphs=cuda_graphs)
    if step_cost == "cached":
        lm.step_cost = step_costs.load_or_measure(lm)
    elif step_cost == "measure":
        lm.step_cost = step_costs.load_or_measure(lm, fresh=True)
    elif step_cost is not None:
        lm.step_cost = step_cost
    return lm


def load_reference_model(name_or_path: str = DEFAULT_MODEL, device: str = "cpu"):
    """The unmodified transformers model and tokenizer (for the hf-* baselines)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = resolve(name_or_path)
    with _quiet_loading(), _load_errors(folder):
        model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
    return model.to(device).eval(), tokenizer


def load_tokenizer(name_or_path: str = DEFAULT_MODEL):
    """Only the tokenizer (step counting needs no weights)."""
    from transformers import AutoTokenizer

    folder = resolve(name_or_path)
    with _load_errors(folder):
        return AutoTokenizer.from_pretrained(str(folder))


@contextmanager
def _load_errors(folder: Path):
    """transformers' errors for a folder it cannot load (no weights, a cut-off safetensors file, an
    unknown model type, no tokenizer) as one-line ModelLoadErrors."""
    try:
        yield
    except (OSError, ValueError, SafetensorError) as exc:
        in_cache = folder.resolve().is_relative_to(cache_dir().resolve())
        hint = f"; delete {folder} to convert its GGUF file again" if in_cache else ""
        raise ModelLoadError(f"transformers cannot load the model in {folder}: {one_line(exc)}{hint}") from exc


@contextmanager
def _quiet_loading():
    """Loading a converted model takes a second: no progress bar for it (the one-time conversion keeps one)."""
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()
