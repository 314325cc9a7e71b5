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
from llmaccel.errors import InputTypeError, check_int
from llmaccel.verify import accepted_prefix


@dataclass(frozen=True)
class ReferenceOptions:
    # Defaults from the match_len x copy_len sweep on the 2-core CPU (BENCHMARKS.md, "Parameter sweeps"): with the
    # guard on, match_len 1 beat 2 and 3 on both dev files, and copy_len 16 and 32 tied.
    match_len: int = 1  # shortest suffix match that may trigger a draft
    copy_len: int = 16  # most tokens copied per draft
    adaptive: bool = True  # shorten or skip drafts when recent acceptance is low (the guard)
    # Other continuations verified beside the draft as a tree (the other source's draft, then less
    # frequent reference continuations); 0 = a plain draft. Measured on the 2-core CPU: 1 branch cut
    # steps 2-4% but moved speed only within noise (+1.6% cnndm, +0.3% rag; BENCHMARKS.md, "Tried and
    # dropped"), so off by default; where extra tokens in a step are cheaper it pays more.
    branches: int = 0

    def __post_init__(self) -> None:
        check_int("match_len", self.match_len, 1)
        check_int("copy_len", self.copy_len, 0)
        check_int("branches", self.branches, 0)


# Cost of a step of k tokens relative to a 1-token step, measured for SmolLM2-135M fp32 on the 2-core
# CPU with the engine (C++ decoder layer, fp32 panels) at a 1k-token context (`llmaccel cost`,
# BENCHMARKS.md, "Engine step cost"), at k = 1, 2, 4, 8, 16, 32 and interpolated linearly between. Only
# used to size drafts and to decide whether `auto` takes the lookahead window, and only where no
# table is given (load() measures and keeps one per model and machine: step_cost.py).
_MEASURED_COST = {1: 1.0, 2: 1.05, 4: 1.16, 8: 1.32, 16: 1.61, 32: 2.20}


def _interpolate(points: dict[int, float], k: int) -> float:
    ks = sorted(points)
    if k >= ks[-1]:
        return points[ks[-1]] * k / ks[-1]
    hi = next(x for x in ks if x >= k)
    lo = max(x for x in ks if x <= k)
    if hi == lo:
        return points[k]
    return points[lo] + (points[hi] - points[lo]) * (k - lo) / (hi - lo)


def step_cost_table(measured: dict[int, float], longest: int = 64) -> tuple[float, ...]:
    """Index k -> cost of a k-token step relative to a 1-token step, from costs measured at some k
    (seconds or relative; k = 1 must be among them), interpolated linearly between them and
    extrapolated in proportion past the largest; index 0 is unused. Non-decreasing in k: a busy
    machine can time a longer step faster, and a table that says so would draft erratically."""
    base = measured[1]
    rel, floor = {}, 1.0
    for k in sorted(measured):  # a longer step never counts as cheaper than a shorter one (timing noise)
        floor = rel[k] = max(measured[k] / base, floor)
    return (0.0,) + tuple(_interpolate(rel, k) for k in range(1, longest + 1))


DEFAULT_STEP_COST: tuple[float, ...] = step_cost_table(_MEASURED_COST)


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


MATCH_BUCKETS = (1, 2, 4, 8)  # lower bounds of the match-length buckets


def match_bucket(match_length: int) -> int:
    return max(i for i, lo in enumerate(MATCH_BUCKETS) if match_length >= lo or i == 0)


class ReferenceDrafter:
    """Holds the index and the guard's state; `propose` returns the next draft."""

    def __init__(
        self,
        references: Sequence[Sequence[int]],
        options: ReferenceOptions = ReferenceOptions(),
        step_cost: Sequence[float] = DEFAULT_STEP_COST,
    ) -> None:
        self.options = options
        self.index = ReferenceIndex(references)
        self.step_cost = step_cost
        # One acceptance estimate per match-length bucket: a draft after a long match is accepted
        # far more often than one after a single matching token.
        self.trackers = [AcceptanceTracker() for _ in MATCH_BUCKETS]
        self._last_bucket = 0

    @property
    def p(self) -> float:
        """Acceptance estimate for the match length of the last proposal."""
        return self.trackers[self._last_bucket].p

    def feed(self, tokens: Sequence[int]) -> None:
        """Append committed tokens (the prompt, then each step's output) to the stream."""
        self.index.feed(tokens)

    def propose(self, max_tokens: int) -> list[int]:
        limit = min(max_tokens, self.options.copy_len)
        if limit <= 0:
            return []
        found = self.index.draft(limit, self.options.match_len)
        draft = list(found.tokens)
        self._last_bucket = match_bucket(found.match_length)
        if self.options.adaptive and draft:
            p = self.trackers[self._last_bucket].p
            draft = draft[: choose_draft_length(len(draft), p, self.step_cost)]
        return draft

    def alternatives(self, length: int) -> list[list[int]]:
        """Up to `branches` other continuations, each cut to `length` tokens (for a draft tree)."""
        if self.options.branches <= 0 or length <= 0:
            return []
        return self.index.alternatives(length, self.options.match_len, self.options.branches)

    def observe(self, drafted: int, accepted: int) -> None:
        self.trackers[self._last_bucket].observe(drafted, accepted)


def forced_trace(
    target: Sequence[int],
    references: Sequence[Sequence[int]],
    prompt: Sequence[int] = (),
    options: ReferenceOptions = ReferenceOptions(adaptive=False),
    step_cost: Sequence[float] = DEFAULT_STEP_COST,
) -> list[tuple[int, int]]:
    """(draft length, accepted) of every step after prefill when the model's output is `target`.

    Forced decoding: each step keeps what verify.accept keeps when the model's greedy output is
    `target` (the longest prefix of the draft equal to it, plus the bonus token).
    """
    if not target:
        return []
    drafter = ReferenceDrafter(references, options, step_cost)
    drafter.feed(prompt)
    drafter.feed(target[:1])  # the prefill step yields the first token; drafting starts after it
    i, trace = 1, []
    while i < len(target):
        draft = drafter.propose(len(target) - i - 1)
        n = accepted_prefix(draft, target[i:])
        drafter.observe(len(draft), n)
        drafter.feed(target[i : i + n + 1])
        trace.append((len(draft), n))
        i += n + 1
    return trace


def count_steps(
    target: Sequence[int],
    references: Sequence[Sequence[int]],
    prompt: Sequence[int] = (),
    options: ReferenceOptions = ReferenceOptions(adaptive=False),
) -> int:
    """Decoding steps `reference` needs to produce exactly `target` (the LLMA paper's Algorithm 2).

    No model forward is needed. Steps count the prefill (which yields the first token) as in the
    engine, so greedy decoding needs len(target).
    """
    if isinstance(target, str) or any(isinstance(r, str) for r in references):
        raise InputTypeError("count_steps takes token ids: encode the texts with the model's tokenizer first")
    return len(forced_trace(target, references, prompt, options)) + 1 if target else 0
