"""`LoadedModel`: the small interface the engine calls, over a transformers causal LM.

`forward(ids, start, cache, keep)` returns logits of the kept positions, `greedy` the argmax there,
`new_cache()` an empty KV cache; with the tokenizer and stop ids. Llama-family models run their steps
through lean.py's forward (`stack`), GPUs through CUDA graphs (`graphs`), the rest through
transformers' modules with explicit positions, cache positions and tree masks.
"""

from __future__ import annotations

import functools
import inspect
import logging
from dataclasses import dataclass
from typing import Any

import torch

from llmaccel import lean
from llmaccel.errors import GenerationError
from llmaccel.graphs import GraphedSteps
from llmaccel.kernels import skinny
from llmaccel.kv import new_cache
from llmaccel.sparse.config import SparseConfig, shipped, uniform
from llmaccel.sparse.prefill import SparsePrefill
from llmaccel.verify import greedy_targets

log = logging.getLogger(__name__)


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
    step_cost: tuple[float, ...] | None = None  # k -> relative cost of a k-token step (step_cost.py; load() sets it)
    graphs: GraphedSteps | None = None  # CUDA graphs for the steps (on a GPU, see graphs.py), None = eager

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def input_device(self) -> torch.device:
        """Where the engine should build a step's ids, depths and visible matrix: the graphs stage them from the host."""
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
        visible: torch.Tensor | None = None,
        prefill: SparsePrefill | None = None,
    ) -> torch.Tensor:
        """Run `ids` (1, T) on top of `cache` (which holds `start` entries); the cache grows by T entries.

        Token i sits at position start + i, or at start + depth[i] in a tree step, where `visible` (T, T)
        bool says which of the step's tokens each one sees (a tree: ancestors and itself; see
        lean.step_mask); None means a causal chain. Returns the logits of the last `keep` positions,
        (1, keep, V), or of the positions listed in `keep` when it is a 1-D index tensor. `prefill`
        (from `sparse_prefill`) computes the attention of a fresh prompt sparsely.
        """
        return self._run(ids, start, cache, keep, depth, visible, prefill, argmax=False)

    @torch.inference_mode()
    def greedy(self, ids: torch.Tensor, start: int, cache, keep: int | torch.Tensor, **step) -> list[int]:
        """As `forward` (the same arguments), but returns the greedy choice at each kept position: the
        argmax of its logits, ties to the lowest id (torch.argmax's rule). What a greedy step needs;
        the lean forward gets it without computing every logit exactly (lean.greedy_head)."""
        step = {"depth": None, "visible": None, "prefill": None, **step}
        if self.stack is not None and self.graphs is None:
            return self._run(ids, start, cache, keep, **step, argmax=True).tolist()
        return greedy_targets(self._run(ids, start, cache, keep, **step, argmax=False)[0])

    def _run(self, ids, start, cache, keep, depth, visible, prefill, argmax: bool) -> torch.Tensor:
        """forward's work; with argmax=True (lean forward only) the kept rows' token ids (keep,)."""
        if prefill is not None and (start != 0 or visible is not None or depth is not None):
            raise ValueError("sparse prefill is for a fresh prompt (start 0, causal) only")
        T = ids.shape[1]
        if self.graphs is not None:
            logits = self.graphs.forward(ids, start, cache, depth, visible)  # (1, T, V)
            return logits[:, T - keep :] if isinstance(keep, int) else logits[:, keep.to(logits.device)]
        slots = torch.arange(start, start + T, device=ids.device)  # (T,) cache entries written
        pos = slots if depth is None else depth.to(ids.device) + start  # (T,) positions
        if self.stack is not None:
            rows = slice(T - keep, T) if isinstance(keep, int) else keep
            out = lean.forward(self.stack, ids[0], pos, start, cache, rows, visible, prefill, argmax=argmax)
            return out if argmax else out[None]
        masks = None if visible is None else self._step_masks(start, pos, visible)
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

    def _step_masks(self, start: int, pos: torch.Tensor, visible: torch.Tensor):
        """A tree step's masks in the form transformers takes as given (it builds none of its own):
        one 4D mask, or one per layer type for models that mix sliding and full attention."""
        cfg = self.model.config.get_text_config()
        window = getattr(cfg, "sliding_window", None)
        types = set(getattr(cfg, "layer_types", None) or [])
        if len(types) > 1:
            return {t: lean.step_mask(start, pos, visible, window if t == "sliding_attention" else None) for t in types}
        slides = types == {"sliding_attention"} or (not types and cfg.model_type in ("mistral", "mixtral"))
        return lean.step_mask(start, pos, visible, window if slides else None)

    def chat_prompt(self, conversation: str | list[dict[str, str]]) -> list[int]:
        """Token ids of the model's chat template over one user message (a str) or a whole conversation
        (`{"role": ..., "content": ...}` dicts), with the generation prompt."""
        if not getattr(self.tokenizer, "chat_template", None):
            raise GenerationError(f"{self.name} has no chat template, which chat=True (--chat) needs")
        if isinstance(conversation, str):
            conversation = [{"role": "user", "content": conversation}]
        ids = self.tokenizer.apply_chat_template(conversation, add_generation_prompt=True, tokenize=True)
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
