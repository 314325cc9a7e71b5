"""The naive oracles: recompute the whole sequence for every token, no cache, no tricks.

`oracle_greedy` takes the argmax; `oracle_sample` applies the sampling parameters one by one, in
plain Python and full-vocabulary torch ops (no batching, no shortcuts), then the Gumbel-max rule with
llmaccel's noise: the noise is the definition of a seeded draw, everything else is recomputed here.
"""

from __future__ import annotations

import math
from collections import Counter

import torch


@torch.inference_mode()
def _last_logits(model, ids: list[int]) -> torch.Tensor:
    return model(input_ids=torch.tensor([ids], device=model.device), use_cache=False).logits[0, -1].float().cpu()  # (V,)


@torch.inference_mode()
def oracle_greedy(model, prompt: list[int], max_new_tokens: int, eos_ids=()) -> list[int]:
    ids = list(prompt)
    out: list[int] = []
    for _ in range(max_new_tokens):
        tok = int(_last_logits(model, ids).argmax())
        out.append(tok)
        ids.append(tok)
        if tok in eos_ids:
            break
    return out


def processed_scores(logits: torch.Tensor, sampling, prompt: list[int], out: list[int]) -> torch.Tensor:
    """(V,) logits -> scores after bias, penalties, temperature and the top-k / top-p / min-p cuts (-inf)."""
    l = logits.clone()
    for tok, bias in sampling.logit_bias.items():
        l[tok] += bias
    if sampling.repetition_penalty != 1.0:
        for tok in set(prompt) | set(out):
            v = float(l[tok])
            l[tok] = v / sampling.repetition_penalty if v > 0 else v * sampling.repetition_penalty
    for tok, n in Counter(out).items():
        l[tok] -= sampling.frequency_penalty * n + sampling.presence_penalty
    if sampling.greedy:
        return l
    s = l / sampling.temperature
    V = s.shape[0]
    if 0 < sampling.top_k < V:
        kth = torch.sort(s, descending=True).values[sampling.top_k - 1]
        s[s < kth] = -math.inf
    if sampling.top_p < 1.0:
        p = s.softmax(-1)
        ranked = torch.sort(p, descending=True).values
        cum = torch.cumsum(ranked, 0)
        kept = [j for j in range(V) if float(cum[j] - ranked[j]) < sampling.top_p]  # mass ranked above < top_p
        s[p < ranked[kept[-1]]] = -math.inf
    if sampling.min_p > 0.0:
        p = s.softmax(-1)
        s[p < sampling.min_p * p.max()] = -math.inf
    return s


@torch.inference_mode()
def oracle_sample(model, prompt: list[int], max_new_tokens: int, sampling, seed: int, eos_ids=()) -> list[int]:
    """Plain sampling, one full forward per token: the token at position p is
    argmax(processed scores + noise(seed, p))."""
    from llmaccel.sampling import noise

    ids = list(prompt)
    out: list[int] = []
    for _ in range(max_new_tokens):
        s = processed_scores(_last_logits(model, ids), sampling, prompt, out)
        if not sampling.greedy:
            s = s + noise(seed, len(ids), s.shape[0])
        tok = int(s.argmax())
        out.append(tok)
        ids.append(tok)
        if tok in eos_ids:
            break
    return out
