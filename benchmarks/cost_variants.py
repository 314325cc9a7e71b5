"""cost(k)/cost(1) of SmolLM2's engine steps under two weight layouts and two kinds of context, one process.

    .venv/bin/python benchmarks/cost_variants.py [--context 300] [--rounds 3] [--reps 9]

Layouts: the code blocks the engine uses by default (`skinny.pack` finds the GGUF blocks in the fp32
weights), and fp32 panels (`skinny.pack(w, codes=False)`: 540 MB of fp32 weights streamed a step, the
layout the issue's target was written against and the one models without block-coded weights get).
Contexts: random tokens, as `llmaccel cost` uses (flat logits: the int8 LM head's bound leaves ~110
candidate tokens a row to check exactly), and real text from the LLMA files with the text's own next k
tokens as the step (~3 candidates a row, as in decoding real text). Each round times every variant
with `step_cost.measure`'s loop (sizes interleaved per rep); the table gives medians over rounds.
"""
import argparse
import functools
import statistics
import time

import torch

from llmaccel import models
from llmaccel.bench.data import long_text
from llmaccel.kernels import skinny

SIZES = (1, 2, 4, 8, 16, 32)


def step_times(lm, prompt: torch.Tensor, steps, reps: int) -> dict[int, float]:
    """Median seconds of lm.greedy on a k-token step after `prompt`; steps(k) gives the step's ids."""
    ctx = prompt.shape[1]
    cache = lm.new_cache()
    lm.forward(prompt, 0, cache, keep=1)
    times: dict[int, list[float]] = {k: [] for k in SIZES}
    for r in range(reps + 2):
        for k in SIZES:
            ids = steps(k)
            t = time.perf_counter()
            lm.greedy(ids, ctx, cache, keep=k)
            dt = time.perf_counter() - t
            cache.rollback_to(ctx)
            if r >= 2:
                times[k].append(dt)
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--context", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--reps", type=int, default=9)
    args = ap.parse_args()

    pack = skinny.pack
    lms = {"code blocks": models.load("smollm2-135m")}
    skinny.pack = functools.partial(pack, codes=False)  # this script only: the second copy gets fp32 panels
    try:
        lms["fp32 panels"] = models.load("smollm2-135m")
    finally:
        skinny.pack = pack

    tok = lms["code blocks"].tokenizer
    text = tok(long_text(20000), return_tensors="pt").input_ids  # (1, n)
    V = lms["code blocks"].vocab_size
    g = torch.Generator().manual_seed(0)
    ctx = args.context
    contexts = {
        "random": (torch.randint(0, V, (1, ctx), generator=g), lambda k: torch.randint(0, V, (1, k), generator=g)),
        "text": (text[:, :ctx], lambda k: text[:, ctx:ctx + k]),
    }
    runs: dict[tuple[str, str], list[dict[int, float]]] = {}
    for r in range(args.rounds):
        for layout, lm in lms.items():
            for kind, (prompt, steps) in contexts.items():
                c = step_times(lm, prompt, steps, args.reps)
                runs.setdefault((layout, kind), []).append(c)
                print(f"round {r} {layout:12s} {kind:6s} " + " ".join(f"k={k}:{c[k] * 1e3:.2f}" for k in SIZES)
                      + f"  16/1 {c[16] / c[1]:.3f}", flush=True)
    print(f"\n{ctx} cached tokens, medians of {args.rounds} rounds (ms, and cost(k)/cost(1))\n")
    print("| layout | context | " + " | ".join(f"k={k}" for k in SIZES) + " | cost(16)/cost(1) |")
    print("|---|---|" + "---:|" * (len(SIZES) + 1))
    for (layout, kind), cs in runs.items():
        med = {k: statistics.median(c[k] for c in cs) for k in SIZES}
        cells = " | ".join(f"{med[k] * 1e3:.1f} ({med[k] / med[1]:.2f}x)" for k in SIZES)
        print(f"| {layout} | {kind} | {cells} | {med[16] / med[1]:.2f}x |")


if __name__ == "__main__":
    main()
