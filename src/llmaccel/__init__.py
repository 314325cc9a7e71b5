"""llmaccel: faster LLM inference that does not change what the model outputs.

    import llmaccel
    lm = llmaccel.load("smollm2-135m")
    result = llmaccel.generate(lm, "Summarise: ...", references=[article], method="reference")
    print(result.text, result.steps)
"""

from __future__ import annotations

from collections.abc import Sequence

from llmaccel.drafting.lookahead import LookaheadOptions
from llmaccel.drafting.reference import ReferenceOptions, count_steps
from llmaccel.engine import METHODS, Decoder, GenerationError, GenerationResult, StepEvent
from llmaccel.models import ALIASES, DEFAULT_MODEL, LoadedModel, ModelLoadError, load, wrap

__all__ = [
    "ALIASES",
    "DEFAULT_MODEL",
    "METHODS",
    "Decoder",
    "GenerationError",
    "GenerationResult",
    "LoadedModel",
    "LookaheadOptions",
    "ModelLoadError",
    "ReferenceOptions",
    "StepEvent",
    "count_steps",
    "generate",
    "load",
    "stream",
    "wrap",
]
__version__ = "0.1.0"


def _tokens(lm: LoadedModel, x: str | Sequence[int], *, chat: bool = False, special: bool = True) -> list[int]:
    if isinstance(x, str):
        if chat:
            return lm.chat_prompt(x)
        return lm.tokenizer.encode(x, add_special_tokens=special)
    return [int(t) for t in x]


def _decoder(lm, prompt, references, chat, **kwargs) -> Decoder:
    if isinstance(prompt, str) and not prompt.strip():
        raise GenerationError("the prompt is empty")
    ids = _tokens(lm, prompt, chat=chat)
    refs = [_tokens(lm, r, special=False) for r in references]
    return Decoder(lm, ids, references=refs, **kwargs)


def generate(
    lm: LoadedModel,
    prompt: str | Sequence[int],
    *,
    references: Sequence[str | Sequence[int]] = (),
    method: str = "reference",
    max_new_tokens: int = 128,
    stop: Sequence[str] = (),
    chat: bool = False,
    options: ReferenceOptions | None = None,
    lookahead: LookaheadOptions | None = None,
    sparse_prefill: bool = False,
) -> GenerationResult:
    """Greedy decoding of `prompt` (text or token ids), accelerated by `method` (greedy, reference,
    lookahead, auto); the output equals plain greedy decoding. `sparse_prefill=True` prefills long
    prompts with sparse attention (MInference's patterns): faster, approximate, off by default."""
    return _decoder(
        lm, prompt, references, chat, method=method, max_new_tokens=max_new_tokens, stop_strings=stop,
        options=options, lookahead=lookahead, sparse_prefill=sparse_prefill,
    ).run()


def stream(lm: LoadedModel, prompt, **kwargs):
    """Like `generate`, but yields a `StepEvent` (the new tokens) after every step."""
    refs = kwargs.pop("references", ())
    chat = kwargs.pop("chat", False)
    if "stop" in kwargs:
        kwargs["stop_strings"] = kwargs.pop("stop")
    kwargs.setdefault("method", "reference")
    yield from _decoder(lm, prompt, refs, chat, **kwargs).events()
