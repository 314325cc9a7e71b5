"""cost(k)/cost(1): what a decoding step of k tokens costs relative to a 1-token step."""

from __future__ import annotations

import statistics
import time

import torch

STEP_SIZES = (1, 2, 4, 8, 16, 32)


def step_costs(lm, context: int = 1000, sizes=STEP_SIZES, reps: int = 15, seed: int = 0,
               hf_cache: bool = False) -> dict[int, float]:
    """Median seconds of a k-token step on top of `context` cached tokens, sizes interleaved per rep.

    `hf_cache=True` uses transformers' DynamicCache (its default path) instead of llmaccel's.
    """
    g = torch.Generator().manual_seed(seed)
    V = lm.vocab_size
    prompt = torch.randint(0, V, (1, context), generator=g)
    if hf_cache:
        from transformers import DynamicCache

        cache = DynamicCache()
        cache.rollback_to = lambda n: cache.crop(n - cache.get_seq_length())
    else:
        cache = lm.new_cache()
    lm.forward(prompt, 0, cache, keep=1)
    times: dict[int, list[float]] = {k: [] for k in sizes}
    for r in range(reps + 2):
        for k in sizes:
            ids = torch.randint(0, V, (1, k), generator=g)
            t = time.perf_counter()
            logits = lm.forward(ids, context, cache, keep=k)
            logits.argmax(-1).tolist()
            dt = time.perf_counter() - t
            cache.rollback_to(context)
            if r >= 2:  # two warm-up rounds
                times[k].append(dt)
    return {k: statistics.median(v) for k, v in times.items()}


def cost_table(costs_by_label: dict[str, dict[int, float]]) -> str:
    sizes = list(next(iter(costs_by_label.values())))
    head = "| engine | " + " | ".join(f"k={k}" for k in sizes) + " | cost(16)/cost(1) |"
    lines = [head, "|" + " --- |" * (len(sizes) + 2)]
    for label, c in costs_by_label.items():
        cells = " | ".join(f"{c[k] * 1000:.1f} ms ({c[k] / c[sizes[0]]:.2f}x)" for k in sizes)
        r16 = f"{c[16] / c[1]:.2f}x" if 16 in c and 1 in c else "-"
        lines.append(f"| {label} | {cells} | {r16} |")
    return "\n".join(lines)
