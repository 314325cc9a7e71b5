"""The decoding loop: prefill, steps of one or more tokens, accept/rollback, stop conditions.

One step feeds the last committed token (the root) and a draft tree below it (drafting/tree.py; a
plain draft is a chain), plus, for lookahead, the Jacobi window's nodes, at explicit positions with a
mask that keeps the branches apart. It reads the model's choice at every node, keeps the longest
accepted path plus the bonus token, and keeps only those entries of the KV cache (verify.py defines
the terms). With an empty tree the step is plain greedy decoding, so every method shares every line
but the drafting:

- `greedy`: no draft.
- `reference`: the reference index's draft (drafting/reference.py), one chain.
- `lookahead`: the reference draft and the n-gram pool's candidates as one tree, and the window.
- `auto`: `reference` or `lookahead` chosen per step by expected tokens per unit of step cost.

The batch dimension is 1 for now; tensors keep it so batches can come without a new interface.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch

from llmaccel.drafting.lookahead import JacobiWindow, LookaheadOptions, NgramPool, WindowGate
from llmaccel.drafting.reference import ReferenceDrafter, ReferenceOptions, expected_tokens, step_cost_table
from llmaccel.drafting.tree import DraftTree, flatten

log = logging.getLogger(__name__)

METHODS = ("greedy", "reference", "lookahead", "auto")
# Most tokens in one step (tree + window). Not tuned: a 32-token step already costs 2.2-4x a 1-token
# step on the CPU (`llmaccel cost`), and the default lookahead settings stay far below this.
MAX_STEP_TOKENS = 64
# The step-cost measurement (`step_cost`): cached tokens under the steps (a short context keeps it
# cheap; attention's share grows with the context, a second-order effect on the ratios), repeats.
COST_CONTEXT = 256
COST_REPS = 5


class GenerationError(ValueError):
    """Bad input to generation (empty prompt, non-positive limits, prompt beyond the context)."""


@dataclass
class StepStat:
    tokens_in: int  # tokens fed to the forward (root + tree + window)
    accepted: int  # drafted tokens accepted
    forward_s: float
    lookup_s: float  # time spent finding the draft
    window: bool = False  # the step carried the lookahead window


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
    prefill_density: float = 1.0  # share of causal query-key pairs prefill scored (< 1: sparse prefill, approximate)

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


def step_cost(lm) -> tuple[float, ...]:
    """Relative cost of a k-token step on this model and machine (index k), measured on first use and
    kept on the model: ~0.5-1 s for SmolLM2 on 2 CPU cores. Drafts are sized by it and `auto` decides
    by it, so it must describe the engine at hand: the same model costs 2.4x a 1-token step for 16
    tokens with code-block weights and 1.5x with fp32 panels on the same CPU (BENCHMARKS.md)."""
    if getattr(lm, "step_cost", None) is None:
        from llmaccel.bench.cost import STEP_SIZES, step_costs

        context = max(1, min(COST_CONTEXT, lm.max_context - max(STEP_SIZES) - 1))
        t = time.perf_counter()
        costs = step_costs(lm, context=context, reps=COST_REPS)
        lm.step_cost = step_cost_table(costs, MAX_STEP_TOKENS)
        log.info("step cost measured in %.2f s: %s", time.perf_counter() - t,
                 ", ".join(f"{k}: {lm.step_cost[k]:.2f}" for k in costs))
    return lm.step_cost


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
        lookahead: LookaheadOptions | None = None,
        sparse_prefill: bool = False,
    ) -> None:
        """`sparse_prefill`: prefill long prompts with sparse attention (approximate; the model's pattern
        config decides from which length); decoding and verification stay exact."""
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
        self.la = lookahead or LookaheadOptions()
        self.drafter: ReferenceDrafter | None = None
        self.pool: NgramPool | None = None
        self.window: JacobiWindow | None = None
        self.gate: WindowGate | None = None
        self.out: list[int] = []
        self.stats: list[StepStat] = []
        self.prefill_s = 0.0
        self.decode_s = 0.0
        self.sparse_prefill = sparse_prefill
        self.prefill_density = 1.0

    def _start_drafting(self) -> None:
        if self.method == "greedy":
            return
        self.drafter = ReferenceDrafter(self.references, self.options, step_cost(self.lm))
        self.drafter.feed(self.prompt)
        if self.method in ("lookahead", "auto"):
            self.pool = NgramPool(self.la.ngram, self.la.pool_size)
            for ref in self.references:
                self.pool.add_text(ref)
            self.pool.feed(self.prompt)
            self.window = JacobiWindow(self.la.window, self.la.ngram, self.prompt, self.la.seed)
            if self.method == "auto":
                self.gate = WindowGate(self.drafter.step_cost, explore_every=self.la.explore_every,
                                       max_explore_every=self.la.max_explore_every, prior=self.la.gate_prior)

    def _plan(self, pos: int) -> tuple[DraftTree, list[int], bool]:
        """The step's draft tree, the reference draft inside it, and whether the window comes along."""
        tree = DraftTree(self.out[-1])
        room = self.budget - len(self.out) - 1  # drafted tokens that can still be kept (the bonus comes on top)
        if self.drafter is None or room <= 0:
            return tree, [], False
        draft = self.drafter.propose(room)
        tree.add(draft)
        for alt in self.drafter.alternatives(len(draft)):
            tree.add(alt, max_nodes=MAX_STEP_TOKENS // 2)
        if self.window is None:
            return tree, draft, False
        # The window's last node sits rows + W - 1 places after the root (at pos): inside the context.
        fits = pos + len(self.window.rows) + self.window.width < self.lm.max_context
        use = fits and (self.gate is None or self.gate.use(
            expected_tokens(self.drafter.p, len(draft)), len(tree),
            self.la.pool_size * (self.la.ngram - 1) + len(self.window)))
        if use:
            budget = MAX_STEP_TOKENS - len(self.window)
            for cont in self.pool.candidates(self.out[-1]):
                tree.add(cont[:room], max_nodes=budget)
        return tree, draft, use

    def _step_inputs(self, tree: DraftTree, window: JacobiWindow | None):
        """ids (1, T), depth (T,) and block (T, T) of the tree followed by the window (None, None for a chain)."""
        if window is None:
            tokens, depth, block = flatten(tree)
        else:
            tokens, depth, block = flatten(tree, window.tokens(), window.depths(), window.visibility())
        device = self.lm.input_device
        ids = torch.tensor([tokens], device=device)
        if block is None:
            return ids, None, None
        return ids, torch.tensor(depth, device=device), torch.tensor(block, device=device)

    def events(self) -> Iterator[StepEvent]:
        lm, device = self.lm, self.lm.input_device
        if self.method != "greedy":
            step_cost(lm)  # measured once per model, not part of this prompt's prefill
        cache = lm.new_cache()  # after step_cost: a CUDA-graphed model has one cache, handed to one sequence at a time
        t0 = time.perf_counter()
        self._start_drafting()  # indexing the references and the prompt counts as prefill time
        sparse = lm.sparse_prefill(len(self.prompt)) if self.sparse_prefill else None
        first = lm.greedy(torch.tensor([self.prompt], device=device), 0, cache, keep=1, prefill=sparse)[0]
        if sparse is not None:
            self.prefill_density = sparse.density
        self.prefill_s = time.perf_counter() - t0
        pos = len(self.prompt)  # entries in the cache; the last committed token is not among them yet
        taken = self.stop.accept(self.out, [first])
        self._feed(taken)
        yield StepEvent(taken, None)
        t_decode = time.perf_counter()
        while self.stop.reason is None:
            t1 = time.perf_counter()
            tree, draft, use_window = self._plan(pos)
            window = self.window if use_window else None
            ids, depth, block = self._step_inputs(tree, window)
            t2 = time.perf_counter()
            T = ids.shape[1]
            keep: int | torch.Tensor = T
            if window is not None:  # logits of the tree's nodes and of the window's last row only
                rows = [*range(len(tree)), *(len(tree) + i for i in window.last_row())]
                keep = torch.tensor(rows, device=device)
            targets = lm.greedy(ids, pos, cache, keep=keep, depth=depth, block=block)  # one per kept row
            path, bonus = tree.accept(targets[: len(tree)])
            cache.keep_path(pos, [0, *path])
            pos += 1 + len(path)
            t3 = time.perf_counter()
            accepted = [tree.tokens[i] for i in path]
            stat = StepStat(tokens_in=T, accepted=len(path), forward_s=t3 - t2, lookup_s=t2 - t1, window=use_window)
            self.stats.append(stat)
            taken = self.stop.accept(self.out, [*accepted, bonus])
            if self.drafter:
                on_draft = 0  # accepted tokens the reference draft alone would have given
                while on_draft < min(len(draft), len(accepted)) and draft[on_draft] == accepted[on_draft]:
                    on_draft += 1
                self.drafter.observe(len(draft), on_draft)
                if window is not None:
                    for gram in window.update(targets[len(tree) :]):
                        self.pool.add(gram)
                    if self.gate:
                        self.gate.observe(len(accepted) - on_draft)
            self._feed(taken)
            yield StepEvent(taken, stat)
        self.decode_s = time.perf_counter() - t_decode

    def _feed(self, taken: list[int]) -> None:
        if self.drafter:
            self.drafter.feed(taken)
        if self.pool:
            self.pool.feed(taken)

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
            prefill_density=self.prefill_density,
        )


def generate(lm, prompt_ids: Sequence[int], **kwargs) -> GenerationResult:
    """Decode greedily from `prompt_ids`; see `Decoder` for the options."""
    return Decoder(lm, prompt_ids, **kwargs).run()
