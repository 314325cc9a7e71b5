"""Inference-with-reference drafts (LLMA): copy what follows the longest match in a source.

Sources are the caller's references, the prompt and the output so far (the stream). `ReferenceIndex`
finds the longest suffix of the stream that occurs in a source; the draft is what follows it there (for
references: the most frequent continuation across them). A guard keeps drafting from costing more than
it saves: the draft length is chosen from the recent acceptance rate and the measured cost of a
k-token step (`choose_draft_length`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from llmaccel.drafting.index import ReferenceIndex


@dataclass(frozen=True)
class ReferenceOptions:
    # Defaults from the match_len x copy_len sweep on the 2-core CPU (BENCHMARKS.md, "sweep"):
    match_len: int = 2  # shortest suffix match that may trigger a draft
    copy_len: int = 16  # most tokens copied per draft
    adaptive: bool = True  # shorten or skip drafts when recent acceptance is low (the guard)
    use_stream: bool = True  # the prompt and output so far are sources too


# Cost of a step of k tokens relative to a 1-token step, index k (k = 1..32), SmolLM2-135M fp32 on the
# 2-core CPU with the packed engine (BENCHMARKS.md, "engine cost"). Only used to size drafts.
DEFAULT_STEP_COST: tuple[float, ...] = (0.0,) + tuple(1.0 + 0.045 * (k - 1) for k in range(1, 33))


def expected_tokens(p: float, d: int) -> float:
    """Tokens committed by a step with a d-token draft when each drafted token is accepted with
    probability p given its predecessors were: 1 + p + ... + p^d (the bonus token always counts)."""
    return sum(p**i for i in range(d + 1))


def choose_draft_length(available: int, p: float, step_cost: Sequence[float]) -> int:
    """Draft length in [0, available] that maximises expected tokens per unit of step cost."""
    best_d, best_rate = 0, 1.0 / step_cost[1]
    for d in range(1, min(available, len(step_cost) - 2) + 1):
        rate = expected_tokens(p, d) / step_cost[d + 1]
        if rate > best_rate * 1.0001:
            best_d, best_rate = d, rate
    return best_d


class AcceptanceTracker:
    """Running estimate of p, the chance that the next drafted token is accepted.

    A draft of d tokens with n accepted contributes n successes and, when n < d, one failure; the
    estimate is successes / (successes + failures) with exponential forgetting and a weak prior.
    """

    def __init__(self, decay: float = 0.8, prior_success: float = 1.0, prior_fail: float = 1.0) -> None:
        self.decay = decay
        self.success = prior_success
        self.fail = prior_fail

    @property
    def p(self) -> float:
        return self.success / (self.success + self.fail)

    def observe(self, drafted: int, accepted: int) -> None:
        if drafted <= 0:
            return
        self.success = self.decay * self.success + accepted
        self.fail = self.decay * self.fail + (1.0 if accepted < drafted else 0.0)


class ReferenceDrafter:
    """Holds the index and the guard's state; `propose` returns the next draft."""

    def __init__(
        self,
        references: Sequence[Sequence[int]],
        options: ReferenceOptions = ReferenceOptions(),
        step_cost: Sequence[float] = DEFAULT_STEP_COST,
    ) -> None:
        self.options = options
        self.index = ReferenceIndex(references, use_stream=options.use_stream)
        self.step_cost = step_cost
        self.tracker = AcceptanceTracker()

    def feed(self, tokens: Sequence[int]) -> None:
        """Append committed tokens (the prompt, then each step's output) to the stream."""
        self.index.feed(tokens)

    def propose(self, max_tokens: int) -> list[int]:
        limit = min(max_tokens, self.options.copy_len)
        if limit <= 0:
            return []
        draft = list(self.index.draft(limit, self.options.match_len).tokens)
        if self.options.adaptive and draft:
            draft = draft[: choose_draft_length(len(draft), self.tracker.p, self.step_cost)]
        return draft

    def observe(self, drafted: int, accepted: int) -> None:
        self.tracker.observe(drafted, accepted)


def count_steps(
    target: Sequence[int],
    references: Sequence[Sequence[int]],
    prompt: Sequence[int] = (),
    options: ReferenceOptions = ReferenceOptions(adaptive=False),
) -> int:
    """Decoding steps `reference` needs to produce exactly `target` (the LLMA paper's Algorithm 2).

    Forced decoding: the model is assumed to output `target`, so each step accepts the longest prefix
    of the draft that equals the target, plus one token. No model forward is needed. Steps count the
    prefill (which yields the first token) as in the engine, so greedy decoding needs len(target).
    """
    if not target:
        return 0
    drafter = ReferenceDrafter(references, options)
    drafter.feed(prompt)
    drafter.feed(target[:1])  # the prefill step yields the first token; drafting starts after it
    i, steps = 1, 1
    while i < len(target):
        draft = drafter.propose(len(target) - i - 1)
        n = 0
        while n < len(draft) and draft[n] == target[i + n]:
            n += 1
        drafter.observe(len(draft), n)
        new = target[i : i + n + 1]
        drafter.feed(new)
        i += len(new)
        steps += 1
    return steps
