"""The decoding loop: prefill, steps of one or more tokens, accept/rollback, stop conditions.

One step feeds [last committed token] + draft (k tokens) at explicit positions, reads the model's
choice at all k+1 positions, keeps the accepted prefix plus the bonus token and rolls the KV cache
back over the rest (verify.py defines the terms). With an empty draft the step is plain greedy
decoding, so `greedy` and `reference` share every line but the drafter.

The batch dimension is 1 for now; tensors keep it so batches can come without a new interface.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch

from llmaccel.drafting.reference import ReferenceDrafter, ReferenceOptions
from llmaccel.verify import accept_greedy, greedy_targets

log = logging.getLogger(__name__)

METHODS = ("greedy", "reference")


class GenerationError(ValueError):
    """Bad input to generation (empty prompt, non-positive limits, prompt beyond the context)."""


@dataclass
class StepStat:
    tokens_in: int  # tokens fed to the forward (1 + draft length)
    accepted: int  # drafted tokens accepted
    forward_s: float
    lookup_s: float  # time spent finding the draft


@dataclass
class GenerationResult:
    token_ids: list[int]
    text: str
    prompt_tokens: int
    steps: int  # forward passes, prefill included (greedy: one per token)
    prefill_s: float
    decode_s: float
    total_s: float
    stop_reason: str  # "eos" | "length" | "stop_string" | "context"
    method: str
    step_stats: list[StepStat] = field(default_factory=list, repr=False)

    @property
    def drafted(self) -> int:
        return sum(s.tokens_in - 1 for s in self.step_stats)

    @property
    def accepted(self) -> int:
        return sum(s.accepted for s in self.step_stats)

    @property
    def lookup_s(self) -> float:
        return sum(s.lookup_s for s in self.step_stats)

    @property
    def decode_tokens_per_s(self) -> float:
        return len(self.token_ids) / self.decode_s if self.decode_s > 0 else float("inf")


@dataclass
class StepEvent:
    """What one step produced, for streaming."""

    new_tokens: list[int]
    stat: StepStat | None  # None for the token from prefill


class StopChecker:
    """Applies the stop rules of greedy decoding to each new token, in order."""

    def __init__(self, eos_ids: Sequence[int], max_new_tokens: int, stop_strings: Sequence[str], decode) -> None:
        self.eos_ids = set(eos_ids)
        self.max_new_tokens = max_new_tokens
        self.stop_strings = [s for s in stop_strings if s]
        self.decode = decode
        self.reason: str | None = None

    def accept(self, out: list[int], new: Sequence[int]) -> list[int]:
        """Append tokens of `new` to `out` until a stop rule fires; returns the tokens appended."""
        taken: list[int] = []
        for tok in new:
            out.append(tok)
            taken.append(tok)
            if tok in self.eos_ids:
                self.reason = "eos"
            elif len(out) >= self.max_new_tokens:
                self.reason = "length"
            elif self.stop_strings and any(s in self.decode(out) for s in self.stop_strings):
                self.reason = "stop_string"
            if self.reason:
                break
        return taken


def _check_inputs(lm, prompt_ids: Sequence[int], max_new_tokens: int) -> None:
    if len(prompt_ids) == 0:
        raise GenerationError("the prompt is empty")
    if max_new_tokens <= 0:
        raise GenerationError(f"max_new_tokens must be positive, got {max_new_tokens}")
    if len(prompt_ids) >= lm.max_context:
        raise GenerationError(
            f"the prompt has {len(prompt_ids)} tokens but {lm.name} has a context of {lm.max_context}; shorten it"
        )
    bad = [t for t in prompt_ids if not 0 <= t < lm.vocab_size]
    if bad:
        raise GenerationError(f"token ids out of the vocabulary (0..{lm.vocab_size - 1}): {bad[:5]}")


class Decoder:
    """One generation: call `events()` to stream steps, or `run()` for the whole result."""

    def __init__(
        self,
        lm,
        prompt_ids: Sequence[int],
        *,
        method: str = "greedy",
        references: Sequence[Sequence[int]] = (),
        max_new_tokens: int = 128,
        stop_strings: Sequence[str] = (),
        options: ReferenceOptions | None = None,
    ) -> None:
        if method not in METHODS:
            raise GenerationError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
        _check_inputs(lm, prompt_ids, max_new_tokens)
        self.lm = lm
        self.prompt = list(prompt_ids)
        self.method = method
        # Positions past the model's context are not decoded: stop there like a length limit.
        self.budget = min(max_new_tokens, lm.max_context - len(self.prompt))
        self.context_bound = self.budget < max_new_tokens
        self.stop = StopChecker(lm.eos_token_ids, self.budget, stop_strings, lm.decode)
        self.references = [list(r) for r in references]
        self.options = options or ReferenceOptions()
        self.drafter: ReferenceDrafter | None = None
        self.out: list[int] = []
        self.stats: list[StepStat] = []
        self.prefill_s = 0.0
        self.decode_s = 0.0

    def events(self) -> Iterator[StepEvent]:
        lm, device = self.lm, self.lm.device
        cache = lm.new_cache()
        t0 = time.perf_counter()
        if self.method == "reference":  # indexing the references and the prompt counts as prefill time
            self.drafter = ReferenceDrafter(self.references, self.options)
            self.drafter.feed(self.prompt)
        logits = lm.forward(torch.tensor([self.prompt], device=device), 0, cache, keep=1)  # (1, 1, V)
        first = greedy_targets(logits[0])[0]
        self.prefill_s = time.perf_counter() - t0
        pos = len(self.prompt)  # entries in the cache; the last committed token is not among them yet
        taken = self.stop.accept(self.out, [first])
        if self.drafter:
            self.drafter.feed(taken)
        yield StepEvent(taken, None)
        t_decode = time.perf_counter()
        while self.stop.reason is None:
            t1 = time.perf_counter()
            # Draft at most what can still be kept: the bonus token always comes on top.
            room = self.budget - len(self.out) - 1
            draft = self.drafter.propose(room) if self.drafter and room > 0 else []
            t2 = time.perf_counter()
            ids = torch.tensor([[self.out[-1], *draft]], device=device)  # (1, k+1)
            logits = lm.forward(ids, pos, cache, keep=ids.shape[1])  # (1, k+1, V)
            n_acc, bonus = accept_greedy(draft, greedy_targets(logits[0]))
            pos += 1 + n_acc
            cache.rollback_to(pos)
            t3 = time.perf_counter()
            stat = StepStat(tokens_in=ids.shape[1], accepted=n_acc, forward_s=t3 - t2, lookup_s=t2 - t1)
            self.stats.append(stat)
            taken = self.stop.accept(self.out, [*draft[:n_acc], bonus])
            if self.drafter:
                self.drafter.observe(len(draft), n_acc)
                self.drafter.feed(taken)
            yield StepEvent(taken, stat)
        self.decode_s = time.perf_counter() - t_decode

    def run(self) -> GenerationResult:
        for _ in self.events():
            pass
        return GenerationResult(
            token_ids=self.out,
            text=self.lm.decode(self.out),
            prompt_tokens=len(self.prompt),
            steps=len(self.stats) + 1,
            prefill_s=self.prefill_s,
            decode_s=self.decode_s,
            total_s=self.prefill_s + self.decode_s,
            stop_reason="context" if self.stop.reason == "length" and self.context_bound else self.stop.reason,
            method=self.method,
            step_stats=self.stats,
        )


def generate(lm, prompt_ids: Sequence[int], **kwargs) -> GenerationResult:
    """Decode greedily from `prompt_ids`; see `Decoder` for the options."""
    return Decoder(lm, prompt_ids, **kwargs).run()
