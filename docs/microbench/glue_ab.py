"""A step's torch glue around the C++ layers, before and after session 25, alternating step by step in one
process: "old" runs the model's rotary module and F.rms_norm for the final norm, "new" looks RoPE's rows
up in lean's table and normalises in C++ (`skinny.rms_norm_rows`). Prints medians per k and new/old, and
whether the greedy tokens differed in any step.

    .venv/bin/python docs/microbench/glue_ab.py [--sizes 1,2,4] [--reps 120] [--context 300]
"""
import argparse
import statistics
import time

import torch
import torch.nn.functional as F

import llmaccel
from llmaccel.kernels import skinny

ap = argparse.ArgumentParser()
ap.add_argument("--sizes", default="1,2,4")
ap.add_argument("--reps", type=int, default=120)
ap.add_argument("--context", type=int, default=300)
args = ap.parse_args()

torch.set_grad_enabled(False)
lm = llmaccel.load("smollm2-135m")
st = lm.stack
cpp_norm = skinny.rms_norm_rows


def torch_norm(x, w, eps):
    return F.rms_norm(x, x.shape[-1:], w, eps)


variants = {"old": (None, torch_norm), "new": (st.rope, cpp_norm)}
g = torch.Generator().manual_seed(0)
ctx = args.context
cache = lm.new_cache()
lm.forward(torch.randint(0, lm.vocab_size, (1, ctx), generator=g), 0, cache, keep=1)
sizes = [int(k) for k in args.sizes.split(",")]
times: dict[tuple[int, str], list[float]] = {}
differ = 0
for rep in range(args.reps + 5):
    for k in sizes:
        ids = torch.randint(0, lm.vocab_size, (1, k), generator=g)
        outs = {}
        for name in ("old", "new") if rep % 2 else ("new", "old"):
            st.rope, skinny.rms_norm_rows = variants[name]
            t = time.perf_counter()
            outs[name] = lm.greedy(ids, ctx, cache, keep=k)
            dt = time.perf_counter() - t
            cache.rollback_to(ctx)
            if rep >= 5:
                times.setdefault((k, name), []).append(dt)
        differ += outs["old"] != outs["new"]
st.rope, skinny.rms_norm_rows = variants["new"]
print("| k | old ms | new ms | new / old |\n|---:|---:|---:|---:|")
for k in sizes:
    a, b = statistics.median(times[(k, "old")]), statistics.median(times[(k, "new")])
    print(f"| {k} | {a * 1e3:.2f} | {b * 1e3:.2f} | {b / a:.3f} |")
print(f"steps whose greedy tokens differed: {differ} of {len(sizes) * (args.reps + 5)}")
