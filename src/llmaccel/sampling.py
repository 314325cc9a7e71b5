"""Seeded sampling that drafts cannot change: the parameters, the rule and its noise.

The rule. The token sampled at absolute position p (its index in prompt + output) is

    argmax over the vocabulary of  processed_logits / temperature + g(seed, p, token)

with g standard Gumbel noise: the Gumbel-max trick, so the token is distributed exactly as
softmax(processed / temperature) over what top-k, top-p and min-p keep. The noise is a hash of (seed,
p, token) and nothing else (`noise`): not of how many tokens a forward held, nor of which drafts were
tried. So the token a draft tree's node samples is the token plain sampling draws at that position
after that node's path, and verification stays greedy's equality test (verify.accept) at every node:
a drafted token is kept iff it equals the token sampled at its node. Every method's output is then
plain sampling's, token for token, and distributed as the processed distribution, as without drafts.

Penalties at a node come from the node's own path (prompt + committed output + the path's drafted
tokens): what a one-token step at that position would have seen. The order, and the semantics of
each parameter, are transformers' and vLLM's: logit_bias, repetition_penalty (over prompt and
output), presence/frequency penalties (over the output), then temperature, top-k, top-p, min-p.

What can still differ: a k-token step's logits may differ from a one-token step's in their last bits
(BENCHMARKS.md, "Sampling", says where and how often); a token flips when two perturbed scores are
closer than that.

Logprobs (`token_logprobs`) are the model's own distribution, log_softmax of the raw logits, before
any penalty or temperature: what vLLM returns by default and what scores a text.
"""

from __future__ import annotations

import math
import secrets
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch

from llmaccel.errors import GenerationError, InputTypeError, check_int
from llmaccel.verify import greedy_targets

__all__ = ["MAX_TOP_LOGPROBS", "Sampler", "Sampling", "TokenLogprob", "noise", "noise_key", "token_logprobs"]

MAX_TOP_LOGPROBS = 20  # as OpenAI's top_logprobs
GREEDY_BELOW = 1e-5  # temperatures below this are greedy (vLLM's rule): logits / 1e-6 lose all but the top
_M32, _M64 = (1 << 32) - 1, (1 << 64) - 1


def _number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputTypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    if not math.isfinite(value):
        raise GenerationError(f"{name} must be finite, got {value}")
    return float(value)


def _in_range(name: str, value: object, low: float, high: float, *, open_low: bool = False) -> float:
    v = _number(name, value)
    if v < low or v > high or (open_low and v == low):
        raise GenerationError(f"{name} must be in {'(' if open_low else '['}{low:g}, {high:g}], got {v:g}")
    return v


@dataclass(frozen=True)
class Sampling:
    """How tokens are chosen. The default, temperature 0, is greedy decoding.

    temperature: 0 (greedy) or more; top_k: keep the k most likely tokens (0 or -1: all); top_p: keep
    the smallest set of most likely tokens whose probability reaches top_p (1: all); min_p: drop tokens
    less likely than min_p times the most likely one (0: none); repetition_penalty: divide the positive
    logits (multiply the negative ones) of tokens in the prompt or output by it (1: off);
    presence_penalty / frequency_penalty: subtract this once per token that occurs in the output / per
    occurrence (0: off, OpenAI's range -2..2); logit_bias: token id -> value added to its logit
    (-100..100); seed: the noise's seed (None: a fresh random one, reported in the result).
    """

    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: Mapping[int, float] = field(default_factory=dict, hash=False)  # a dict: hashing skips it
    seed: int | None = None

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "temperature", _in_range("temperature", self.temperature, 0.0, math.inf))
        check_int("top_k", self.top_k)
        if self.top_k < -1:
            raise GenerationError(f"top_k must be at least 1 (0 or -1: no limit), got {self.top_k}")
        set_(self, "top_k", max(0, self.top_k))
        set_(self, "top_p", _in_range("top_p", self.top_p, 0.0, 1.0, open_low=True))
        set_(self, "min_p", _in_range("min_p", self.min_p, 0.0, 1.0))
        set_(self, "repetition_penalty", _in_range("repetition_penalty", self.repetition_penalty, 0.0, math.inf,
                                                   open_low=True))
        set_(self, "presence_penalty", _in_range("presence_penalty", self.presence_penalty, -2.0, 2.0))
        set_(self, "frequency_penalty", _in_range("frequency_penalty", self.frequency_penalty, -2.0, 2.0))
        set_(self, "logit_bias", _check_bias(self.logit_bias))
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)):
            raise InputTypeError(f"seed must be an integer, got {type(self.seed).__name__} {self.seed!r}")

    @property
    def greedy(self) -> bool:
        """Whether the choice is the argmax (of the processed logits): no noise, no seed."""
        return self.temperature < GREEDY_BELOW

    @property
    def processed(self) -> bool:
        """Whether the logits change before the choice (a bias or a penalty)."""
        return bool(self.logit_bias) or self.repetition_penalty != 1.0 or self.presence_penalty != 0.0 \
            or self.frequency_penalty != 0.0

    @property
    def plain_greedy(self) -> bool:
        """Greedy decoding of the raw logits: the engine's fast path (no logits needed, only the argmax)."""
        return self.greedy and not self.processed


def _check_bias(bias: object) -> dict[int, float]:
    """OpenAI's logit_bias: token id (an int, or its decimal string as JSON sends it) -> -100..100."""
    if not isinstance(bias, Mapping):
        raise InputTypeError(f"logit_bias must map token ids to numbers, got {type(bias).__name__}")
    out: dict[int, float] = {}
    for key, value in bias.items():
        tok = key
        if isinstance(key, str) and key.strip().lstrip("-").isdigit():
            tok = int(key)
        if isinstance(tok, bool) or not isinstance(tok, int) or tok < 0:
            raise GenerationError(f"logit_bias keys must be token ids (integers >= 0), got {key!r}")
        out[tok] = _in_range(f"logit_bias[{tok}]", value, -100.0, 100.0)
    return out


# The noise ------------------------------------------------------------------------------------------


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


def noise_key(seed: int, position: int) -> tuple[int, int]:
    """The 64-bit key of one position's noise, as two 32-bit halves (k0, k1)."""
    key = _splitmix64(_splitmix64(seed & _M64) ^ position)
    return key & _M32, key >> 32


def _mix32(x: torch.Tensor) -> torch.Tensor:
    """kernels/sampling.cpp's mix32 on int64 tensors holding uint32 values (products wrap; the mask keeps 32 bits)."""
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & _M32
    x = x ^ (x >> 15)
    x = (x * 0x846CA68B) & _M32
    return x ^ (x >> 16)


def _log(x: torch.Tensor) -> torch.Tensor:
    """Cephes' logf of positive normal fp32 values, operation for operation as kernels/sampling.cpp's cephes_log."""
    bits = x.contiguous().view(torch.int32)
    e = (((bits >> 23) & 0xFF) - 126).float()
    m = ((bits & 0x007FFFFF) | 0x3F000000).view(torch.float32)  # x = m 2^e, m in [0.5, 1)
    small = m < 0.707106781186547524
    e = e - small.float()
    f = torch.where(small, m + m, m) - 1.0
    z = f * f
    y = torch.full_like(f, 7.0376836292e-2)
    for coef in (-1.1514610310e-1, 1.1676998740e-1, -1.2420140846e-1, 1.4249322787e-1, -1.6668057665e-1,
                 2.0000714765e-1, -2.4999993993e-1, 3.3333331174e-1):
        y = y * f + coef
    y = (y * f) * z
    y = y + e * -2.12194440e-4
    y = y + z * -0.5
    r = f + y
    return r + e * 0.693359375


def _noise_torch(k0: int, k1: int, vocab: int) -> torch.Tensor:
    x = (torch.arange(vocab, dtype=torch.int64) * 0x9E3779B1 + k0) & _M32
    x = _mix32(_mix32(x) ^ k1)
    u = ((x >> 9).float() + 0.5) * 1.1920928955078125e-7  # (23 bits + 0.5) / 2^23: in (0, 1), never 0 or 1
    return -_log(-_log(u))


def noise(seed: int, position: int, vocab: int) -> torch.Tensor:
    """(vocab,) fp32 Gumbel noise of position `position` under `seed`, on the CPU: the same bits from the
    C++ kernel (kernels/sampling.cpp) and from torch where it is not built."""
    from llmaccel.kernels import skinny

    k0, k1 = noise_key(seed, position)
    if skinny.available():
        return skinny.gumbel_noise(k0, k1, vocab)
    return _noise_torch(k0, k1, vocab)


# The choice ------------------------------------------------------------------------------------------


def filter_scores(s: torch.Tensor, top_k: int, top_p: float, min_p: float) -> torch.Tensor:
    """s (R, V) scores (logits / temperature), with -inf where top-k, then top-p, then min-p drop a
    token (transformers' order); in place. Ties at a cut are kept."""
    V = s.shape[-1]
    if 0 < top_k < V:
        kth = s.topk(top_k, dim=-1).values[:, -1:]  # (R, 1)
        s.masked_fill_(s < kth, -math.inf)
    if top_p < 1.0:
        p = s.softmax(-1)  # (R, V)
        s.masked_fill_(p < _nucleus_floor(s, p, top_p), -math.inf)
    if min_p > 0.0:
        s.masked_fill_(s < s.amax(-1, keepdim=True) + math.log(min_p), -math.inf)
    return s


def _nucleus_floor(s: torch.Tensor, p: torch.Tensor, top_p: float) -> torch.Tensor:
    """(R, 1): per row, the probability of the last token top-p keeps (ties with it are kept too).

    A token is kept when the mass of the tokens ranked above it is below top_p. Sorting all of a large
    vocabulary costs milliseconds per row; the nucleus nearly always lies among the tokens within a
    few nats of the best, so only those are sorted (the first n values of their sort are the first n of
    the full sort, summed in the same order), widening the set for a row whose set holds too little mass.
    """
    top = s.amax(-1, keepdim=True)  # (R, 1)
    floors = []
    for r in range(s.shape[0]):
        for delta in (8.0, 16.0, 32.0, math.inf):
            vals = p[r][s[r] >= top[r] - delta].sort(descending=True).values  # (n,) the candidates, ranked
            cum = vals.cumsum(0)
            if delta == math.inf or cum[-1] >= top_p:
                break
        kept = int(((cum - vals) < top_p).sum())
        floors.append(vals[kept - 1])
    return torch.stack(floors)[:, None]


class Sampler:
    """One generation's sampling state: the noise of the positions in play (cached: nodes at the same
    depth share a position, and a rejected draft's positions come back next step) and the counts the
    penalties read."""

    def __init__(self, sampling: Sampling, vocab_size: int, prompt: Sequence[int]) -> None:
        self.sampling = sampling
        self.vocab = vocab_size
        self.seed = sampling.seed if sampling.seed is not None else secrets.randbits(63)
        self._noise: dict[int, torch.Tensor] = {}
        self.counts: Counter[int] = Counter()  # output tokens so far
        self.seen: set[int] = set(prompt) if sampling.repetition_penalty != 1.0 else set()  # prompt + output
        bad = [t for t in sampling.logit_bias if t >= vocab_size]
        if bad:
            raise GenerationError(f"logit_bias names token ids outside the vocabulary (0..{vocab_size - 1}): {bad[:5]}")

    def commit(self, tokens: Sequence[int], next_position: int) -> None:
        """`tokens` joined the output; positions before `next_position` are decided (their noise goes)."""
        self.counts.update(tokens)
        if self.sampling.repetition_penalty != 1.0:
            self.seen.update(tokens)
        for p in [p for p in self._noise if p < next_position]:
            del self._noise[p]

    def noise(self, position: int, device: torch.device) -> torch.Tensor:
        """(V,) the noise of `position`, on `device` (where the logits are), kept until it is decided."""
        g = self._noise.get(position)
        if g is None or g.device != device:
            g = self._noise[position] = noise(self.seed, position, self.vocab).to(device)
        return g

    def choose(self, logits: torch.Tensor, positions: Sequence[int], paths: Sequence[Sequence[int]] | None) -> list[int]:
        """logits (R, V) of R rows -> the token each samples: row r at position positions[r], after
        paths[r] (its drafted tokens, newest last) on top of the committed output. paths None: no
        penalties (the lookahead window's guesses, which are drafts only)."""
        sp = self.sampling
        l = logits.float()
        if sp.processed and paths is not None:
            l = self._penalise(l.clone(), paths)
        if sp.greedy:
            return greedy_targets(l)
        from llmaccel.kernels import skinny

        if l.device.type == "cpu" and skinny.available():
            return self._choose_fused(l, positions)
        return self._choose_torch(l, positions)

    def _choose_torch(self, l: torch.Tensor, positions: Sequence[int]) -> list[int]:
        """The rule in torch ops: where the kernels are not built, and on a GPU."""
        sp = self.sampling
        s = filter_scores(l / sp.temperature, sp.top_k, sp.top_p, sp.min_p)
        g = torch.stack([self.noise(p, s.device) for p in positions])  # (R, V)
        return greedy_targets(s.add_(g))

    def _choose_fused(self, l: torch.Tensor, positions: Sequence[int]) -> list[int]:
        """The same rule in one C++ pass per row (kernels/sampling.cpp), the noise made where needed."""
        from llmaccel.kernels import skinny

        sp = self.sampling
        keys = torch.tensor([noise_key(self.seed, p) for p in positions], dtype=torch.int64)  # (R, 2)
        return skinny.sample_rows(l.contiguous(), keys, sp.temperature, sp.top_k, sp.top_p, sp.min_p).tolist()

    def _penalise(self, l: torch.Tensor, paths: Sequence[Sequence[int]]) -> torch.Tensor:
        """Bias and penalties on l (R, V), in place, row r seeing the output plus paths[r]."""
        sp = self.sampling
        if sp.logit_bias:
            l[:, torch.tensor(list(sp.logit_bias), device=l.device)] += torch.tensor(
                list(sp.logit_bias.values()), dtype=l.dtype, device=l.device)
        cols = sorted(self.seen | set(self.counts) | {t for path in paths for t in path})
        if not cols:
            return l
        R, at = l.shape[0], {t: j for j, t in enumerate(cols)}
        idx = torch.tensor(cols, device=l.device)  # (U,) the tokens any row's penalty touches
        counts = torch.tensor([self.counts.get(t, 0) for t in cols], dtype=l.dtype, device=l.device).repeat(R, 1)
        rows = [r for r, path in enumerate(paths) for _ in path]
        if rows:  # (R, U) output counts, each row with its path's tokens added
            hits = torch.tensor([at[t] for path in paths for t in path], device=l.device)
            counts.index_put_((torch.tensor(rows, device=l.device), hits), torch.ones(len(rows), dtype=l.dtype,
                                                                                     device=l.device), accumulate=True)
        sub = l[:, idx]  # (R, U)
        if sp.repetition_penalty != 1.0:
            seen = counts > 0
            if self.seen:  # prompt tokens count as seen too
                seen |= torch.tensor([t in self.seen for t in cols], device=l.device)
            rp = sp.repetition_penalty
            sub = torch.where(seen, torch.where(sub > 0, sub / rp, sub * rp), sub)
        if sp.frequency_penalty or sp.presence_penalty:
            sub = sub - sp.frequency_penalty * counts - sp.presence_penalty * (counts > 0).to(l.dtype)
        l[:, idx] = sub
        return l


@dataclass(frozen=True)
class TokenLogprob:
    """One generated token's log-probability under the model, and the most likely alternatives."""

    token: int
    logprob: float
    top: tuple[tuple[int, float], ...] = ()  # (token, logprob), most likely first


def token_logprobs(logits: torch.Tensor, tokens: Sequence[int], top: int) -> list[TokenLogprob]:
    """logits (R, V) of the rows that chose `tokens` (R of them) -> each token's log_softmax and the
    `top` most likely tokens (0..MAX_TOP_LOGPROBS) of its row."""
    lp = torch.log_softmax(logits.float(), dim=-1)  # (R, V)
    chosen = lp.gather(-1, torch.tensor(tokens, device=lp.device)[:, None])[:, 0].tolist()
    if top:
        vals, ids = lp.topk(top, dim=-1)
        alts = [tuple(zip(i, v)) for i, v in zip(ids.tolist(), vals.tolist())]
    else:
        alts = [()] * len(tokens)
    return [TokenLogprob(t, c, a) for t, c, a in zip(tokens, chosen, alts)]
