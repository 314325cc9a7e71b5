"""The decoding loop: prefill, steps of one or more tokens, accept/rollback, stop conditions.

One step feeds the last committed token (the root) and a draft tree below it (drafting/tree.py; a
plain draft is a chain), plus, for lookahead, the Jacobi window's nodes, at explicit positions with a
mask that keeps the branches apart. It reads the model's choice at every node, keeps the longest
accepted path plus the bonus token (verify.py: the acceptance rule and its terms), and keeps only
those entries of the KV cache (kv.py: the rollback). With an empty tree the step is plain greedy decoding, so every method shares every line
but the drafting:

- `greedy`: no draft.
- `reference`: the reference index's draft (drafting/reference.py), one chain.
- `lookahead`: the reference draft and the n-gram pool's candidates as one tree, and the window.
- `auto`: `reference` or `lookahead` chosen per step by expected tokens per unit of step cost.

With sampling (sampling.py) the targets are sampled instead of argmaxed, by a rule that depends on
the seed, the position and the node's own path only, so acceptance stays an equality test and every
method returns plain sampling's tokens.

The batch dimension is 1 for now; tensors keep it so batches can come without a new interface.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch

from llmaccel.drafting.lookahead import MAX_WINDOW_TOKENS, JacobiWindow, LookaheadOptions, NgramPool, WindowGate
from llmaccel.drafting.reference import DEFAULT_STEP_COST, ReferenceDrafter, ReferenceOptions, expected_tokens
from llmaccel.drafting.tree import DraftTree, flatten
from llmaccel.errors import GenerationError, InputTypeError, check_int
from llmaccel.kv import KVCache, restore, snapshot
from llmaccel.methods import DEFAULT_METHOD, METHODS
from llmaccel.prompt_cache import PromptCache
from llmaccel.sampling import MAX_TOP_LOGPROBS, Sampler, Sampling, TokenLogprob, token_logprobs
from llmaccel.verify import accept, greedy_targets

log = logging.getLogger(__name__)

__all__ = ["MAX_REFERENCE_TOKENS", "MAX_STEP_TOKENS", "METHODS", "Decoder", "GenerationError", "GenerationResult",
           "StepEvent", "StepStat", "StopChecker"]

# Most tokens in one step (tree + window). Not tuned: a 32-token step already costs 2.2-4x a 1-token
# step on the CPU (`llmaccel cost`), and the default lookahead settings stay far below this.
MAX_STEP_TOKENS = 64
assert MAX_STEP_TOKENS >= 2 * MAX_WINDOW_TOKENS  # room for a draft beside the largest window
# Most reference tokens one generation indexes (~8 MB of English text). The index is a suffix
# automaton in Python (BENCHMARKS.md, "Reference index size": seconds and hundreds of MB per million
# tokens), so past this a mistake such as a whole corpus passed as a reference would take minutes
# and gigabytes before the first token: it is refused instead.
MAX_REFERENCE_TOKENS = 2_000_000
MAX_REFERENCE_CHARS = 8_000_000  # about the same bound on text (~4.2 characters a token), checked before tokenizing
# Where a drafted token came from (StepStat, StepEvent): "prompt" (the prompt and the output so far,
# copied by the stream index), "lookahead" (the n-gram pool and the Jacobi window), or the label of
# the reference it was copied from ("references" unless the caller names them: a server labels
# predictions, earlier turns and stored answers).
PROMPT_SOURCE, LOOKAHEAD_SOURCE, REFERENCE_SOURCE = "prompt", "lookahead", "references"
WARN_REFERENCE_TOKENS = 250_000  # from here on, a warning says that indexing takes a while


@dataclass
class StepStat:
    tokens_in: int  # tokens fed to the forward (root + tree + window)
    accepted: int  # drafted tokens accepted
    forward_s: float
    lookup_s: float  # time spent finding the draft
    window: bool = False  # the step carried the lookahead window
    drafted_from: dict[str, int] = field(default_factory=dict)  # fed draft tokens per source (SOURCES)
    accepted_from: tuple[str, ...] = ()  # the source of each accepted token, in order


@dataclass
class GenerationResult:
    token_ids: list[int]
    text: str
    prompt_tokens: int
    steps: int  # forward passes, prefill included (greedy: one per token)
    prefill_s: float
    decode_s: float
    total_s: float
    stop_reason: str | None  # "eos" | "length" | "stop_string" | "context"; None: ended early by the caller
    method: str
    step_stats: list[StepStat] = field(default_factory=list, repr=False)
    prefill_density: float = 1.0  # share of causal query-key pairs prefill scored (< 1: sparse prefill, approximate)
    seed: int | None = None  # the sampling seed used (None: greedy)
    logprobs: list[TokenLogprob] | None = None  # per token of token_ids, when asked for
    cached_prompt_tokens: int = 0  # prompt tokens not prefilled: their entries came from the prompt cache

    @property
    def drafted(self) -> int:
        return sum(s.tokens_in - 1 for s in self.step_stats)

    @property
    def accepted(self) -> int:
        return sum(s.accepted for s in self.step_stats)

    @property
    def lookup_s(self) -> float:
        return sum(s.lookup_s for s in self.step_stats)

    def drafted_by_source(self) -> dict[str, int]:
        """Draft tokens fed to the model per source (SOURCES), over the whole generation."""
        out: Counter[str] = Counter()
        for s in self.step_stats:
            out.update(s.drafted_from)
        return dict(out)

    def accepted_by_source(self) -> dict[str, int]:
        """Accepted draft tokens per source, over the whole generation."""
        return dict(Counter(src for s in self.step_stats for src in s.accepted_from))

    @property
    def decode_tokens_per_s(self) -> float:
        return len(self.token_ids) / self.decode_s if self.decode_s > 0 else float("inf")


@dataclass
class StepEvent:
    """What one step produced, for streaming."""

    new_tokens: list[int]
    stat: StepStat | None  # None for the token from prefill
    logprobs: list[TokenLogprob] | None = None  # per new token, when asked for
    sources: list[str | None] = field(default_factory=list)  # per new token: the draft source it was accepted from, None = the model's own


class StopChecker:
    """Applies the stop rules of greedy decoding to each new token, in order."""

    def __init__(self, eos_ids: Sequence[int], max_new_tokens: int, stop_strings: Sequence[str], decode) -> None:
        self.eos_ids = set(eos_ids)
        self.max_new_tokens = max_new_tokens
        self.stop_strings = [s for s in stop_strings if s]
        self.decode = decode
        self.reason: str | None = None

    def take(self, out: list[int], new: Sequence[int]) -> list[int]:
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


def _check_ids(what: str, ids: Sequence[int], vocab_size: int) -> list[int]:
    """`ids` as a list of ints in the vocabulary, or a GenerationError saying which are not."""
    if isinstance(ids, (str, bytes, bytearray)) or not isinstance(ids, Sequence):
        raise InputTypeError(f"{what} must be a sequence of token ids here, got {type(ids).__name__}")
    wrong = [t for t in ids if isinstance(t, bool) or not isinstance(t, int)]
    if wrong:
        raise InputTypeError(f"{what} must hold integer token ids, got {type(wrong[0]).__name__} {wrong[0]!r}")
    bad = [t for t in ids if not 0 <= t < vocab_size]
    if bad:
        raise GenerationError(f"{what} holds token ids outside the vocabulary (0..{vocab_size - 1}): {bad[:5]}")
    return [int(t) for t in ids]


def _check_references(references: Sequence[Sequence[int]], vocab_size: int) -> list[list[int]]:
    if isinstance(references, (str, bytes, bytearray)) or not isinstance(references, Sequence):
        raise InputTypeError(f"references must be a list of token-id lists, got {type(references).__name__}")
    refs = [_check_ids(f"reference {i + 1}", r, vocab_size) for i, r in enumerate(references)]
    total = sum(len(r) for r in refs)
    if total > MAX_REFERENCE_TOKENS:
        raise GenerationError(
            f"the references hold {total:,} tokens; at most {MAX_REFERENCE_TOKENS:,} (about 8 MB of text) are "
            "indexed for drafting: pass the passages the answer may copy, not a whole corpus")
    if total > WARN_REFERENCE_TOKENS:
        log.warning("indexing %s reference tokens for drafting: this takes a while", f"{total:,}")
    return refs


def _check_stop_strings(stop_strings: Sequence[str]) -> list[str]:
    if isinstance(stop_strings, str) or not isinstance(stop_strings, Sequence):
        raise InputTypeError(f"stop strings must be a list of strings, got {type(stop_strings).__name__}")
    wrong = [s for s in stop_strings if not isinstance(s, str)]
    if wrong:
        raise InputTypeError(f"stop strings must be strings, got {type(wrong[0]).__name__} {wrong[0]!r}")
    return list(stop_strings)


def check_step_cost(step_cost: Sequence[float]) -> tuple[float, ...]:
    """A step-cost table (index k: relative cost of a k-token step, index 0 unused) as a tuple of floats."""
    if isinstance(step_cost, (str, bytes)) or not isinstance(step_cost, Sequence):
        raise InputTypeError(f"a step-cost table is a sequence of numbers, got {type(step_cost).__name__}")
    if any(isinstance(c, bool) or not isinstance(c, (int, float)) for c in step_cost):
        raise InputTypeError("a step-cost table holds numbers only")
    table = tuple(float(c) for c in step_cost)
    if len(table) < 2 or any(c <= 0 for c in table[1:]):
        raise GenerationError("a step-cost table is indexed by tokens per step (index 0 unused), all positive")
    return table


class NodeChoices(Sequence[int]):
    """The choice after each node of a step's tree, made when acceptance first reads it: `accept` reads
    only the accepted path's nodes and the bonus node, so the rows of a rejected draft cost no sampling.

    Node i chooses the token at position pos + depth + 1, after its own path (penalties see it).
    """

    def __init__(self, decoder: Decoder, logits: torch.Tensor, tree: DraftTree, pos: int) -> None:
        self.decoder, self.logits, self.tree, self.pos = decoder, logits, tree, pos  # logits (rows >= len(tree), V)
        self._made: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self.tree)

    def path(self, i: int) -> tuple[int, ...]:
        """The drafted tokens from the root's child down to node i (empty for the root)."""
        out = []
        while i > 0:
            out.append(self.tree.tokens[i])
            i = self.tree.parents[i]
        return tuple(reversed(out))

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self[j] for j in range(len(self))[i]]
        if i not in self._made:
            self._made[i] = self.decoder._choose(self.logits[i : i + 1], [self.pos + self.tree.depth[i] + 1],
                                                 [self.path(i)])[0]
        return self._made[i]


class Decoder:
    """One generation: call `events()` to stream steps, or `run()` for the whole result.

    Arguments are checked here, before any work: bad input raises GenerationError (InputTypeError for a
    value of the wrong type) with a one-line message. `step_cost` (index k: relative cost of a k-token
    step) sizes the drafts; None takes the model's (`load()` measures and keeps one), else a fixed table.
    """

    def __init__(
        self,
        lm,
        prompt_ids: Sequence[int],
        *,
        method: str = DEFAULT_METHOD,
        references: Sequence[Sequence[int]] = (),
        max_new_tokens: int = 128,
        stop_strings: Sequence[str] = (),
        options: ReferenceOptions | None = None,
        lookahead: LookaheadOptions | None = None,
        sparse_prefill: bool = False,
        step_cost: Sequence[float] | None = None,
        sampling: Sampling | None = None,
        logprobs: int | None = None,
        reference_sources: Sequence[str] | None = None,
        prompt_cache: PromptCache | None = None,
    ) -> None:
        """`sparse_prefill`: prefill long prompts with sparse attention (approximate; the model's pattern
        config decides from which length); decoding and verification stay exact. `sampling`: how tokens
        are chosen (None: greedy). `logprobs`: return each token's log-probability and the N most likely
        alternatives (0..20; None: none). `reference_sources`: a label per reference, which the step
        statistics count its drafted and accepted tokens under (None: all "references"). `prompt_cache`:
        take the prompt's longest cached prefix from it instead of prefilling it, and leave this
        sequence's entries there (prompt_cache.py; models on CUDA graphs prefill in full)."""
        if method not in METHODS:
            raise GenerationError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
        check_int("max_new_tokens", max_new_tokens, 1)
        self.prompt = _check_ids("the prompt", prompt_ids, lm.vocab_size)
        if not self.prompt:
            raise GenerationError("the prompt is empty")
        if len(self.prompt) >= lm.max_context:
            raise GenerationError(
                f"the prompt has {len(self.prompt)} tokens but {lm.name} has a context of {lm.max_context}; shorten it")
        if options is not None and not isinstance(options, ReferenceOptions):
            raise InputTypeError(f"options must be a ReferenceOptions, got {type(options).__name__}")
        if lookahead is not None and not isinstance(lookahead, LookaheadOptions):
            raise InputTypeError(f"lookahead must be a LookaheadOptions, got {type(lookahead).__name__}")
        if sampling is not None and not isinstance(sampling, Sampling):
            raise InputTypeError(f"sampling must be a Sampling, got {type(sampling).__name__}")
        if logprobs is not None:
            check_int("logprobs", logprobs, 0)
            if logprobs > MAX_TOP_LOGPROBS:
                raise GenerationError(f"logprobs must be at most {MAX_TOP_LOGPROBS}, got {logprobs}")
        self.lm = lm
        self.method = method
        self.sampling = sampling or Sampling()
        self.logprobs = logprobs
        # The fast path needs only each row's argmax (lm.greedy); sampling, penalties and logprobs need logits.
        self.sampler = None if self.sampling.plain_greedy else Sampler(self.sampling, lm.vocab_size, self.prompt)
        self.full_logits = self.sampler is not None or logprobs is not None
        self.token_logprobs: list[TokenLogprob] = []
        # Positions past the model's context are not decoded: stop there like a length limit.
        self.budget = min(max_new_tokens, lm.max_context - len(self.prompt))
        self.context_bound = self.budget < max_new_tokens
        self.stop = StopChecker(lm.eos_token_ids, self.budget, _check_stop_strings(stop_strings), lm.decode)
        self.references = _check_references(references, lm.vocab_size)
        if reference_sources is None:
            reference_sources = [REFERENCE_SOURCE] * len(self.references)
        if isinstance(reference_sources, str) or len(reference_sources) != len(self.references) or not all(
                isinstance(x, str) for x in reference_sources):
            raise InputTypeError("reference_sources must be a list of labels (str), one per reference")
        self.reference_sources = list(reference_sources)
        self.options = options or ReferenceOptions()
        self.lookahead_options = la = lookahead or LookaheadOptions()
        # Every step fits in MAX_STEP_TOKENS: the window's nodes (at most MAX_WINDOW_TOKENS, checked by the
        # options), then the root and the draft tree.
        self.window_tokens = la.window * (la.ngram - 1) if method in ("lookahead", "auto") else 0
        chosen = step_cost if step_cost is not None else getattr(lm, "step_cost", None)
        self.step_cost = check_step_cost(chosen) if chosen is not None else DEFAULT_STEP_COST
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
        if prompt_cache is not None and not isinstance(prompt_cache, PromptCache):
            raise InputTypeError(f"prompt_cache must be a PromptCache, got {type(prompt_cache).__name__}")
        self.prompt_cache = prompt_cache
        self.cached_prompt_tokens = 0  # prompt tokens whose entries came from the prompt cache

    def _start_drafting(self) -> None:
        if self.method == "greedy":
            return
        la = self.lookahead_options
        self.drafter = ReferenceDrafter(self.references, self.options, self.step_cost)
        self.drafter.feed(self.prompt)
        if self.method in ("lookahead", "auto"):
            self.pool = NgramPool(la.ngram, la.pool_size)
            for ref in self.references:
                self.pool.add_text(ref)
            self.pool.feed(self.prompt)
            self.window = JacobiWindow(la.window, la.ngram, self.prompt, la.seed)
            if self.method == "auto":
                self.gate = WindowGate(self.step_cost, explore_every=la.explore_every,
                                       max_explore_every=la.max_explore_every, prior=la.gate_prior)

    def _source(self, draft: Sequence[int]) -> str:
        """The source label of a draft from the reference drafter: the reference it continues (the
        first that holds it), else the prompt and output."""
        doc = self.drafter.index.reference_matcher.document_of_draft(draft)
        return self.reference_sources[doc] if doc >= 0 else PROMPT_SOURCE

    def _plan(self, pos: int) -> tuple[DraftTree, list[str], list[int], bool]:
        """The step's draft tree, each node's source label (the root's ""), the reference draft inside
        the tree, and whether the window comes along."""
        tree = DraftTree(self.out[-1])
        labels = [""]
        room = self.budget - len(self.out) - 1  # drafted tokens that can still be kept (the bonus comes on top)
        if self.drafter is None or room <= 0:
            return tree, labels, [], False
        draft = self.drafter.propose(min(room, MAX_STEP_TOKENS - 1 - self.window_tokens))
        labels += [self._source(draft)] * tree.add(draft)
        for alt in self.drafter.alternatives(len(draft)):
            labels += [self._source(alt)] * tree.add(alt, max_nodes=MAX_STEP_TOKENS // 2)
        if self.window is None:
            return tree, labels, draft, False
        la = self.lookahead_options
        # The window's last node sits rows + W - 1 places after the root (at pos): inside the context.
        fits = pos + len(self.window.rows) + self.window.width < self.lm.max_context
        use = fits and (self.gate is None or self.gate.use(
            expected_tokens(self.drafter.p, len(draft)), len(tree),
            la.pool_size * (la.ngram - 1) + len(self.window)))
        if use:
            budget = MAX_STEP_TOKENS - len(self.window)
            for cont in self.pool.candidates(self.out[-1]):
                labels += [LOOKAHEAD_SOURCE] * tree.add(cont[:room], max_nodes=budget)
        return tree, labels, draft, use

    def _step_inputs(self, tree: DraftTree, window: JacobiWindow | None):
        """ids (1, T), depth (T,) and visible (T, T) of the tree followed by the window (None, None for a chain)."""
        if window is None:
            tokens, depth, visible = flatten(tree)
        else:
            tokens, depth, visible = flatten(tree, window.tokens(), window.depths(), window.sees())
        device = self.lm.input_device
        ids = torch.tensor([tokens], device=device)
        if visible is None:
            return ids, None, None
        return ids, torch.tensor(depth, device=device), torch.tensor(visible, device=device)

    def events(self) -> Iterator[StepEvent]:
        lm, device = self.lm, self.lm.input_device
        cache = lm.new_cache()
        t0 = time.perf_counter()
        self._start_drafting()  # indexing the references and the prompt counts as prefill time
        start = self._take_cached_prefix(cache)
        sparse = lm.sparse_prefill(len(self.prompt)) if self.sparse_prefill and start == 0 else None
        prompt = torch.tensor([self.prompt[start:]], device=device)
        pos = len(self.prompt)  # entries in the cache; the last committed token is not among them yet
        if self.full_logits:
            logits = lm.forward(prompt, start, cache, keep=1, prefill=sparse)[0]  # (1, V)
            first = self._choose(logits, [pos], [()])[0]
        else:
            first = lm.greedy(prompt, start, cache, keep=1, prefill=sparse)[0]
        if sparse is not None:
            self.prefill_density = sparse.density
        self.prefill_s = time.perf_counter() - t0
        taken = self.stop.take(self.out, [first])
        lps = self._logprobs(logits, taken) if self.logprobs is not None else None
        self._feed(taken, pos + 1)
        yield StepEvent(taken, None, lps, [None] * len(taken))
        t_decode = time.perf_counter()
        try:
            while self.stop.reason is None:
                t1 = time.perf_counter()
                tree, labels, draft, use_window = self._plan(pos)
                window = self.window if use_window else None
                ids, depth, visible = self._step_inputs(tree, window)
                t2 = time.perf_counter()
                T = ids.shape[1]
                keep: int | torch.Tensor = T
                if window is not None:  # logits of the tree's nodes and of the window's last row only
                    rows = [*range(len(tree)), *(len(tree) + i for i in window.last_row())]
                    keep = torch.tensor(rows, device=device)
                if self.full_logits:
                    logits = lm.forward(ids, pos, cache, keep=keep, depth=depth, visible=visible)[0]  # (kept rows, V)
                    targets: Sequence[int] = NodeChoices(self, logits, tree, pos)
                    guesses = self._window_choices(logits[len(tree) :], window, pos) if window is not None else []
                else:
                    chosen = lm.greedy(ids, pos, cache, keep=keep, depth=depth, visible=visible)  # one per kept row
                    targets, guesses = chosen[: len(tree)], chosen[len(tree) :]
                verdict = accept(tree, targets, draft)
                cache.keep_path(pos, [0, *verdict.path])
                pos += 1 + len(verdict.path)
                t3 = time.perf_counter()
                drafted_from = Counter(labels[1:])
                if window is not None:
                    drafted_from[LOOKAHEAD_SOURCE] += T - len(tree)
                accepted_from = tuple(labels[i] for i in verdict.path)
                stat = StepStat(tokens_in=T, accepted=len(verdict.path), forward_s=t3 - t2, lookup_s=t2 - t1,
                                window=use_window, drafted_from=dict(drafted_from), accepted_from=accepted_from)
                self.stats.append(stat)
                taken = self.stop.take(self.out, verdict.committed)
                lps = None
                if self.logprobs is not None:  # the rows that chose the committed tokens: the root and the accepted path
                    lps = self._logprobs(logits[[0, *verdict.path][: len(taken)]], taken)
                if self.drafter:
                    self.drafter.observe(len(draft), verdict.on_draft)
                    if window is not None:
                        for gram in window.update(guesses):
                            self.pool.add(gram)
                        if self.gate:
                            self.gate.observe(len(verdict.tokens) - verdict.on_draft)
                self._feed(taken, pos + 1)
                yield StepEvent(taken, stat, lps, [*accepted_from, None][: len(taken)])
        finally:  # also when the caller closes the stream early
            self.decode_s = time.perf_counter() - t_decode
            self._leave_in_prompt_cache(cache, pos)

    def _take_cached_prefix(self, cache) -> int:
        """Fill `cache` with the prompt's longest prefix the prompt cache holds; returns its length."""
        if self.prompt_cache is None or not isinstance(cache, KVCache):
            return 0
        hit = self.prompt_cache.lookup(self.prompt)
        if hit is None:
            return 0
        n, snap = hit
        restore(cache, snap, n)
        self.cached_prompt_tokens = n
        return n

    def _leave_in_prompt_cache(self, cache, pos: int) -> None:
        """Keep this sequence's entries: the prompt and the output but its last token (not yet fed);
        `pos` entries were written, of which a stop rule may have cut the last few from the output."""
        if self.prompt_cache is None or not isinstance(cache, KVCache):
            return
        n = min(pos, len(self.prompt) + len(self.out) - 1)
        snap = snapshot(cache, n)
        if snap is not None:
            self.prompt_cache.add([*self.prompt, *self.out][:n], snap)

    def _choose(self, logits: torch.Tensor, positions: list[int], paths) -> list[int]:
        """The token each row of logits (R, V) chooses: sampled (or argmax of processed logits) at
        `positions` after `paths`, or the plain argmax when only logprobs asked for logits."""
        if self.sampler is None:
            return greedy_targets(logits)
        return self.sampler.choose(logits, positions, paths)

    def _window_choices(self, logits: torch.Tensor, window: JacobiWindow, pos: int) -> list[int]:
        """The window's next guesses from its last row's logits (R, V): sampled at their positions with
        their noise (so the window converges to the sampled text, as greedy Jacobi to the greedy one),
        without penalties: they are drafts only."""
        depths = window.depths()
        return self._choose(logits, [pos + depths[i] + 1 for i in window.last_row()], None)

    def _logprobs(self, logits: torch.Tensor, taken: list[int]) -> list[TokenLogprob]:
        lps = token_logprobs(logits[: len(taken)], taken, self.logprobs)
        self.token_logprobs += lps
        return lps

    def _feed(self, taken: list[int], next_position: int) -> None:
        if self.drafter:
            self.drafter.feed(taken)
        if self.pool:
            self.pool.feed(taken)
        if self.sampler:
            self.sampler.commit(taken, next_position)

    def run(self) -> GenerationResult:
        for _ in self.events():
            pass
        return self.result()

    def result(self) -> GenerationResult:
        """The generation so far (after `events()` ended, or was closed early: stop_reason None then)."""
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
            seed=None if self.sampler is None or self.sampling.greedy else self.sampler.seed,
            logprobs=self.token_logprobs if self.logprobs is not None else None,
            cached_prompt_tokens=self.cached_prompt_tokens,
        )
