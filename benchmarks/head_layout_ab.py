"""Whole SmolLM2 steps with the LM head's 8-bit codes in both layouts (AMX order) or only the vector
path's layout (the AMX path then decodes from that one), alternating step by step in one process.

    .venv/bin/python benchmarks/head_layout_ab.py [--sizes 4,8,16] [--reps 200]
"""
import argparse
import statistics
import time

import torch

import llmaccel
from llmaccel.verify import greedy_targets

ap = argparse.ArgumentParser()
ap.add_argument("--sizes", default="4,8,16")
ap.add_argument("--reps", type=int, default=200)
args = ap.parse_args()
sizes = [int(k) for k in args.sizes.split(",")]

lm = llmaccel.load("smollm2-135m")
head = lm.stack.head
both = head.packed
assert both.dim() == 4, "this CPU has no AMX path (or the head is not 8-bit codes)"
one = both[0].contiguous()
g = torch.Generator().manual_seed(0)
cache = lm.new_cache()
lm.forward(torch.randint(0, lm.vocab_size, (1, 300), generator=g), 0, cache, keep=1)
times: dict[tuple[int, str], list[float]] = {}
for rep in range(args.reps):
    for k in sizes:
        for name, packed in (("one layout", one), ("AMX order", both)):
            head.packed = packed
            ids = torch.randint(0, lm.vocab_size, (1, k), generator=g)
            t = time.perf_counter()
            greedy_targets(lm.forward(ids, 300, cache, keep=k)[0])
            if rep >= 5:
                times.setdefault((k, name), []).append(time.perf_counter() - t)
            cache.rollback_to(300)
head.packed = both
print("| k | head codes, one layout | + AMX-order copy | ratio |\n|---:|---:|---:|---:|")
for k in sizes:
    a, b = statistics.median(times[(k, "one layout")]), statistics.median(times[(k, "AMX order")])
    print(f"| {k} | {a * 1e3:.2f} ms | {b * 1e3:.2f} ms | {b / a:.3f} |")
