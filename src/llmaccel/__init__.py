"""llmaccel: faster LLM inference that does not change what the model outputs.

    import llmaccel
    lm = llmaccel.load("smollm2-135m")
    result = llmaccel.generate(lm, prompt, references=[article], method="reference")
    print(result.text, result.steps)
    # sampled: the same tokens as plain sampling with this seed, whatever the method
    result = llmaccel.generate(lm, prompt, references=[article], sampling=llmaccel.Sampling(temperature=0.7, seed=1))

The prompt is what the model reads; references only feed drafts (text the output may copy), so a
document the answer should use belongs in the prompt too (and then it is drafted from as well).

Bad input raises `GenerationError` (a ValueError; `InputTypeError`, also a TypeError, for a value of
the wrong type) or `ModelLoadError`, each with a one-line message. The names below load lazily, so
`import llmaccel` (and the command line's start) does not import torch.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from llmaccel.errors import GenerationError, InputTypeError, check_int
from llmaccel.methods import DEFAULT_METHOD, METHODS

if TYPE_CHECKING:
    from llmaccel.drafting.lookahead import LookaheadOptions
    from llmaccel.drafting.reference import ReferenceOptions
    from llmaccel.engine import Decoder, GenerationResult, StepEvent
    from llmaccel.models import LoadedModel
    from llmaccel.prompt_cache import PromptCache
    from llmaccel.sampling import Sampling

__all__ = [
    "ALIASES",
    "DEFAULT_MODEL",
    "METHODS",
    "Decoder",
    "GenerationError",
    "GenerationResult",
    "InputTypeError",
    "LoadedModel",
    "LookaheadOptions",
    "ModelLoadError",
    "PromptCache",
    "ReferenceOptions",
    "Sampling",
    "StepEvent",
    "TokenLogprob",
    "count_steps",
    "generate",
    "load",
    "stream",
    "wrap",
]
__version__ = "0.1.0"

_LAZY = {
    "ALIASES": "llmaccel.models", "DEFAULT_MODEL": "llmaccel.models", "LoadedModel": "llmaccel.models",
    "ModelLoadError": "llmaccel.models", "load": "llmaccel.models", "wrap": "llmaccel.models",
    "Decoder": "llmaccel.engine", "GenerationResult": "llmaccel.engine", "StepEvent": "llmaccel.engine",
    "LookaheadOptions": "llmaccel.drafting.lookahead", "ReferenceOptions": "llmaccel.drafting.reference",
    "count_steps": "llmaccel.drafting.reference", "PromptCache": "llmaccel.prompt_cache",
    "Sampling": "llmaccel.sampling", "TokenLogprob": "llmaccel.sampling",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'llmaccel' has no attribute {name!r}")


def _tokens(lm: LoadedModel, x: str | Sequence[int], what: str, *, chat: bool = False, special: bool = True) -> list[int]:
    """Text -> token ids (through the chat template with `chat`); token ids are checked by the Decoder."""
    if isinstance(x, str):
        if chat:
            return lm.chat_prompt(x)
        return lm.tokenizer.encode(x, add_special_tokens=special)
    if isinstance(x, (bytes, bytearray)):
        raise InputTypeError(f"{what} must be text (str) or a list of token ids, got bytes: decode it first")
    if not isinstance(x, Sequence):
        raise InputTypeError(f"{what} must be text (str) or a list of token ids, got {type(x).__name__}")
    return list(x)


def _as_list(value, what: str) -> list:
    """One string stands for a list of one (as in OpenAI's `stop`), never for a list of its characters."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, (bytes, bytearray)) or not isinstance(value, Sequence):
        raise InputTypeError(f"{what} must be a list (or one string), got {type(value).__name__}")
    return list(value)


def _decoder(lm, prompt, *, references=(), chat: bool = False, stop=(), max_new_tokens: int = 128,
             **kwargs) -> Decoder:
    from llmaccel import engine
    from llmaccel.engine import Decoder

    if isinstance(prompt, str) and not prompt.strip():
        raise GenerationError("the prompt is empty")
    check_int("max_new_tokens", max_new_tokens, 1)
    references = _as_list(references, "references")
    chars = sum(len(r) for r in references if isinstance(r, str))
    if chars > engine.MAX_REFERENCE_CHARS:  # refused before tokenizing it all (a 50 MB file: minutes, gigabytes)
        raise GenerationError(f"the references hold {chars:,} characters; at most {engine.MAX_REFERENCE_CHARS:,} are "
                              "indexed for drafting: pass the passages the answer may copy, not a whole corpus")
    ids = _tokens(lm, prompt, "the prompt", chat=chat)
    refs = [_tokens(lm, r, f"reference {i + 1}", special=False) for i, r in enumerate(references)]
    return Decoder(lm, ids, references=refs, stop_strings=_as_list(stop, "stop"), max_new_tokens=max_new_tokens,
                   **kwargs)


def generate(
    lm: LoadedModel,
    prompt: str | Sequence[int],
    *,
    references: Sequence[str | Sequence[int]] | str = (),
    method: str = DEFAULT_METHOD,
    max_new_tokens: int = 128,
    stop: Sequence[str] | str = (),
    chat: bool = False,
    options: ReferenceOptions | None = None,
    lookahead: LookaheadOptions | None = None,
    sparse_prefill: bool = False,
    step_cost: Sequence[float] | None = None,
    sampling: Sampling | None = None,
    logprobs: int | None = None,
    reference_sources: Sequence[str] | None = None,
    prompt_cache: PromptCache | None = None,
) -> GenerationResult:
    """Decoding of `prompt` (text or token ids), accelerated by `method` (greedy, reference, lookahead,
    auto); the output equals plain decoding's: greedy by default, or sampled as `sampling` says, the
    same tokens as plain sampling with the same seed (`result.seed` is the one used).

    references: texts (or token-id lists) the output may copy; they feed drafts only, the model does not
    read them: put a document the answer should use into the prompt as well. One string is one
    reference. stop: stop strings (one string is one stop string). step_cost: the step-cost table that
    sizes drafts (None: the model's, see step_cost.py). `sparse_prefill=True` prefills long prompts with
    sparse attention (MInference's patterns): faster, approximate, off by default. logprobs: N (0..20)
    returns each token's log-probability under the model and its N most likely alternatives
    (`result.logprobs`). reference_sources: a label per reference; the result counts drafted and
    accepted tokens per label (`result.drafted_by_source()`, `accepted_by_source()`; "prompt" and
    "lookahead" are the engine's own sources). prompt_cache: a `PromptCache` that serves the prompt's
    longest known prefix instead of prefilling it and keeps this sequence's entries
    (`result.cached_prompt_tokens` says how many prompt tokens it served).
    """
    return _decoder(
        lm, prompt, references=references, chat=chat, stop=stop, max_new_tokens=max_new_tokens, method=method,
        options=options, lookahead=lookahead, sparse_prefill=sparse_prefill, step_cost=step_cost,
        sampling=sampling, logprobs=logprobs, reference_sources=reference_sources, prompt_cache=prompt_cache,
    ).run()


def stream(lm: LoadedModel, prompt: str | Sequence[int], **kwargs) -> Iterator[StepEvent]:
    """Like `generate` (same arguments), but returns an iterator of `StepEvent`s (the new tokens of
    each step). Arguments are checked at the call, not at the first iteration."""
    return _decoder(lm, prompt, **{"method": DEFAULT_METHOD, **kwargs}).events()
