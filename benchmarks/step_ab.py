"""Whole decoding steps of SmolLM2 with the AMX path off and on, alternating step by step in one process
(so the machine's drift hits both alike): k tokens on top of 300 cached ones, logits for all k and their
argmax, as `llmaccel cost` times them. Off, every row count takes the vector path.

    .venv/bin/python benchmarks/step_ab.py [--sizes 1,2,3,4,8,16] [--reps 300] [--context 300]

Prints the median of each setting per k, in ms, and their ratio.
"""
import argparse
import statistics
import time

import torch

import llmaccel
from llmaccel.kernels import skinny
from llmaccel.verify import greedy_targets

ap = argparse.ArgumentParser()
ap.add_argument("--sizes", default="1,2,3,4,8,16")
ap.add_argument("--reps", type=int, default=300)
ap.add_argument("--context", type=int, default=300)
args = ap.parse_args()
sizes = [int(k) for k in args.sizes.split(",")]

lm = llmaccel.load("smollm2-135m")
g = torch.Generator().manual_seed(0)
cache = lm.new_cache()
lm.forward(torch.randint(0, lm.vocab_size, (1, args.context), generator=g), 0, cache, keep=1)
times: dict[tuple[int, bool], list[float]] = {}
for rep in range(args.reps):
    for k in sizes:
        for amx in (False, True):
            skinny.use_amx(amx)
            ids = torch.randint(0, lm.vocab_size, (1, k), generator=g)
            t = time.perf_counter()
            greedy_targets(lm.forward(ids, args.context, cache, keep=k)[0])
            if rep >= 5:  # warm-up
                times.setdefault((k, amx), []).append(time.perf_counter() - t)
            cache.rollback_to(args.context)
skinny.use_amx(True)
print("| k | vector path | AMX path | AMX / vector |\n|---:|---:|---:|---:|")
for k in sizes:
    off, on = statistics.median(times[(k, False)]), statistics.median(times[(k, True)])
    print(f"| {k} | {off * 1e3:.2f} ms | {on * 1e3:.2f} ms | {on / off:.3f} |")
