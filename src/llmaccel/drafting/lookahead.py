"""Lookahead decoding (Fu et al., LMSYS 2023): a Jacobi window makes n-grams, a pool keeps them.

The window has W columns and up to N-1 rows of guessed tokens. Row 0, column i guesses the token
i+1 places after the root (the last committed token); row l, column i sits l places further on. In a
step every window token sees the root, row 0 up to its own column and its own column in rows
1..l, so the model's choice at (l, i) extends the trajectory of column i by one token. After the step
each column yields an n-gram (rows 0..N-2 of the column, then the model's choice at the last row) for
the pool, the rows move up, and the choices at the last row become the new last row. While fewer
than N-1 rows exist (the first steps) the window only grows. Only the last row's choices are used,
so only its logits are computed.

The pool maps a token to at most G continuations of N-1 tokens (least recently used dropped first).
It also takes every n-gram of the references, the prompt and the output as they arrive, so one
pool serves as the candidate source for text that repeats and for text the window guessed.

Pure Python over token ids; the engine places the window's nodes in the step after the draft tree.
"""

from __future__ import annotations

import random
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from llmaccel.errors import GenerationError, check_int


# Most tokens a window may hold (W x (N-1)): half of the engine's step cap (engine.MAX_STEP_TOKENS),
# so a draft fits beside it. The measured best window is 1 x 1 on the CPU (see below).
MAX_WINDOW_TOKENS = 32


@dataclass(frozen=True)
class LookaheadOptions:
    # Defaults from the W x N x G sweep on the 2-core CPU (BENCHMARKS.md, "Lookahead and auto"): every
    # window token costs a few per cent of a step here, so the smallest window wins: on this engine
    # W1 N2 G2 1.49x greedy on 20 HumanEval problems vs 1.43x for W2 N2 G2 (the previous default) and
    # 1.13x for W8 N2 G2 (8 problems, separate run: 1.74x vs 1.65x); W8 N4 G4 makes the most tokens per
    # step (2.50 vs 2.14) but runs at 0.56x.
    window: int = 1  # W, columns of the Jacobi window
    ngram: int = 2  # N, the n-gram size (the window has N-1 rows)
    pool_size: int = 2  # G, most continuations kept per key and verified per step
    seed: int = 0  # the window's initial guesses are drawn from the prompt with this seed
    # `auto` only: how it explores the window when the window is not worth it (see WindowGate).
    explore_every: int = 8  # first wait, in steps, before the window comes along to be re-measured
    max_explore_every: int = 64  # longest wait (each exploration that does not pay doubles it)
    gate_prior: float = 0.0  # the gain the window is credited with before it was measured

    def __post_init__(self) -> None:
        check_int("window", self.window, 1)
        check_int("ngram", self.ngram, 2)
        check_int("pool_size", self.pool_size, 1)
        check_int("seed", self.seed)
        if self.window * (self.ngram - 1) > MAX_WINDOW_TOKENS:
            raise GenerationError(f"window {self.window} x (ngram {self.ngram} - 1) = {self.window * (self.ngram - 1)} "
                                  f"tokens; a window holds at most {MAX_WINDOW_TOKENS}")
        if not 1 <= self.explore_every <= self.max_explore_every or self.gate_prior < 0:
            raise GenerationError(f"need 1 <= explore_every <= max_explore_every and gate_prior >= 0, got "
                             f"{self.explore_every}, {self.max_explore_every}, {self.gate_prior}")


class NgramPool:
    """n-grams keyed by their first token: key -> up to G continuations of N-1 tokens, LRU."""

    def __init__(self, n: int, per_key: int) -> None:
        if n < 2 or per_key < 1:
            raise ValueError(f"n-gram size must be >= 2 and pool size >= 1, got n={n}, G={per_key}")
        self.n = n
        self.per_key = per_key
        self.table: dict[int, OrderedDict[tuple[int, ...], None]] = {}
        self._tail: list[int] = []  # the last N-1 tokens of the stream fed so far (see `feed`)

    def add(self, ngram: Sequence[int]) -> None:
        """Add one n-gram of exactly N tokens (a repeat becomes the most recent)."""
        slot = self.table.setdefault(ngram[0], OrderedDict())
        cont = tuple(ngram[1:])
        if cont in slot:
            slot.move_to_end(cont)
            return
        slot[cont] = None
        if len(slot) > self.per_key:
            slot.popitem(last=False)

    def add_text(self, tokens: Sequence[int], start: int = 0) -> None:
        """Add every n-gram of `tokens` that ends at index >= start (new text only)."""
        n = self.n
        for i in range(max(0, start - n + 1), len(tokens) - n + 1):
            self.add(tokens[i : i + n])

    def feed(self, tokens: Sequence[int]) -> None:
        """Append tokens to one running stream (the prompt, then the output) and add its new n-grams,
        those that end in `tokens`, without keeping the whole stream."""
        text = self._tail + list(tokens)
        self.add_text(text, len(self._tail))
        self._tail = text[-(self.n - 1) :]

    def candidates(self, key: int) -> list[tuple[int, ...]]:
        """Continuations of `key`, most recent first."""
        slot = self.table.get(key)
        return list(reversed(slot)) if slot else []


class JacobiWindow:
    """The 2D window: `rows[l][i]`, l < N-1 rows of W guesses."""

    def __init__(self, width: int, ngram: int, seed_tokens: Sequence[int], seed: int = 0) -> None:
        if width < 1 or ngram < 2:
            raise ValueError(f"window must be >= 1 and n-gram size >= 2, got W={width}, N={ngram}")
        if not seed_tokens:
            raise ValueError("the window needs tokens to start from (the prompt)")
        rng = random.Random(seed)
        self.width = width
        self.max_rows = ngram - 1
        self.rows: list[list[int]] = [[rng.choice(seed_tokens) for _ in range(width)]]

    def __len__(self) -> int:
        return len(self.rows) * self.width

    def tokens(self) -> list[int]:
        """The window's tokens row by row (node (l, i) is at l * W + i)."""
        return [t for row in self.rows for t in row]

    def depths(self) -> list[int]:
        """Places after the root of each node: (l, i) -> 1 + l + i."""
        return [1 + l + i for l in range(len(self.rows)) for i in range(self.width)]

    def sees(self) -> list[list[int]]:
        """For each node, the window nodes it sees besides the root: row 0 up to its column, then
        its own column in rows 1..l (itself included)."""
        W, out = self.width, []
        for l in range(len(self.rows)):
            for i in range(W):
                out.append(list(range(i + 1)) + [r * W + i for r in range(1, l + 1)])
        return out

    def last_row(self) -> range:
        """Indices (in `tokens()` order) of the last row: the only nodes whose choices are used."""
        return range((len(self.rows) - 1) * self.width, len(self.rows) * self.width)

    def update(self, last: Sequence[int]) -> list[list[int]]:
        """Take the model's choices at the last row's nodes; returns the finished n-grams."""
        last = list(last)
        grams: list[list[int]] = []
        if len(self.rows) == self.max_rows:
            grams = [[row[i] for row in self.rows] + [last[i]] for i in range(self.width)]
            self.rows = self.rows[1:]
        self.rows.append(last)
        return grams


class WindowGate:
    """Method `auto`: whether a step should carry the window and the pool's candidates.

    A step with only the reference draft is expected to commit `e` tokens at cost c(n); adding the
    window and candidates (m more tokens) commits `e + gain` at cost c(n + m), where `gain` is a running
    mean of the tokens the extra candidates added when they came along. Take them when that rate is
    higher. When they have not come along for a while they come once, so `gain` follows the text (code
    that repeats; prose that does not); each exploring step that finds them still not worth their cost
    doubles the wait before the next (from `explore_every` up to `max_explore_every` steps), so on text
    where the window never pays the exploring costs little.
    """

    # Defaults (LookaheadOptions): with the code-block engine a window step costs relatively more (a
    # 5-token step ~1.3x a 1-token step, not ~1.05x). A prior of 0.5 let the window start on, and on rag
    # its 76 steps in 526 saved 2 steps and cost 3% of decode time; starting off (prior 0) fixes that.
    # Of explorations every 8..64 and 16..128 steps, 8..64 came out best or tied on all three files
    # (BENCHMARKS.md, "Lookahead and auto").
    def __init__(self, step_cost: Sequence[float], explore_every: int = LookaheadOptions.explore_every,
                 max_explore_every: int = LookaheadOptions.max_explore_every, decay: float = 0.8,
                 prior: float = LookaheadOptions.gate_prior) -> None:
        self.step_cost = step_cost
        self.min_wait = explore_every
        self.max_wait = max_explore_every
        self.wait = explore_every
        self.decay = decay
        self.gain = prior
        self.idle = 0
        self._exploring = False
        self._threshold = 0.0  # the gain that would have made the last decision "worth it"

    def _cost(self, tokens: int) -> float:
        c = self.step_cost
        return c[min(tokens, len(c) - 1)] * max(1.0, tokens / (len(c) - 1))

    def use(self, expected: float, base_tokens: int, extra_tokens: int) -> bool:
        c0, c1 = self._cost(base_tokens), self._cost(base_tokens + extra_tokens)
        self._threshold = expected * (c1 / c0 - 1.0)  # (e + gain) / c1 > e / c0  <=>  gain > threshold
        self._exploring = False
        if self.gain > self._threshold:
            self.idle = 0
            return True
        self.idle += 1
        if self.idle >= self.wait:
            self.idle = 0
            self._exploring = True
            return True
        return False

    def observe(self, extra_accepted: int) -> None:
        self.gain = self.decay * self.gain + (1 - self.decay) * extra_accepted
        if self._exploring:
            paid = extra_accepted > self._threshold
            self.wait = self.min_wait if paid else min(self.max_wait, 2 * self.wait)
