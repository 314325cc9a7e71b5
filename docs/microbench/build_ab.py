"""Whole greedy steps of SmolLM2 with the kernels of two source trees, alternating step by step in one
process: the running package's own extension ("this") and the other tree's ("other", built from its own
sources under its own hash), swapped under `skinny._ext` before each step, so the machine's drift hits
both alike. Both must pack weights the same way. Asserts that both give the same tokens every step.

    git worktree add /tmp/old <commit>
    .venv/bin/python docs/microbench/build_ab.py /tmp/old/src [--sizes 1,4,16] [--reps 150] [--context 300] [--fp32]

--fp32 loads the model with fp32 panels instead of code blocks. Prints the median of each per k and
this/other.
"""
import argparse
import functools
import importlib.util
import statistics
import time
from pathlib import Path

import torch

import llmaccel
from llmaccel.kernels import skinny

ap = argparse.ArgumentParser()
ap.add_argument("other")
ap.add_argument("--sizes", default="1,4,16")
ap.add_argument("--reps", type=int, default=150)
ap.add_argument("--context", type=int, default=300)
ap.add_argument("--fp32", action="store_true")
args = ap.parse_args()

spec = importlib.util.spec_from_file_location("skinny_other", Path(args.other) / "llmaccel/kernels/skinny.py")
other = importlib.util.module_from_spec(spec)
spec.loader.exec_module(other)
ext = {"this": skinny._load(), "other": other._load()}
assert ext["this"] is not ext["other"], "the two trees build the same extension"

pack = skinny.pack
if args.fp32:
    skinny.pack = functools.partial(pack, codes=False)
lm = llmaccel.load("smollm2-135m")
skinny.pack = pack

g = torch.Generator().manual_seed(0)
ctx = args.context
cache = lm.new_cache()
lm.forward(torch.randint(0, lm.vocab_size, (1, ctx), generator=g), 0, cache, keep=1)
sizes = [int(k) for k in args.sizes.split(",")]
times: dict[tuple[int, str], list[float]] = {}
for rep in range(args.reps + 5):
    for k in sizes:
        ids = torch.randint(0, lm.vocab_size, (1, k), generator=g)
        outs = {}
        for label in ("this", "other") if rep % 2 else ("other", "this"):
            skinny._ext = ext[label]
            t = time.perf_counter()
            outs[label] = lm.greedy(ids, ctx, cache, keep=k)
            dt = time.perf_counter() - t
            cache.rollback_to(ctx)
            if rep >= 5:  # warm-up
                times.setdefault((k, label), []).append(dt)
        assert outs["this"] == outs["other"], (k, outs)
skinny._ext = ext["this"]
print("| k | other ms | this ms | this / other |\n|---:|---:|---:|---:|")
for k in sizes:
    o, t = statistics.median(times[(k, "other")]), statistics.median(times[(k, "this")])
    print(f"| {k} | {o * 1e3:.2f} | {t * 1e3:.2f} | {t / o:.3f} |")
