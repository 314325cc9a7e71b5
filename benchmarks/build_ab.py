"""Whole greedy steps of SmolLM2 with the kernels of two source trees, alternating step by step in one
process: the running package's own extension ("this") and the other tree's ("other", built from its own
sources under its own hash), swapped under `skinny._ext` before each step, so the machine's drift hits
both alike. Both must pack weights the same way, and the other tree's extension must have every function
this tree's Python calls (since commit 27ce7e5, `rms_norm_rows`). Asserts that both give the same tokens every step.

    git worktree add /tmp/old <commit>
    .venv/bin/python benchmarks/build_ab.py /tmp/old/src [--sizes 1,4,16] [--reps 150] [--context 300] [--fp32]

--fp32 loads the model with fp32 panels instead of code blocks. Prints the median of each per k and
this/other.
"""
import argparse
import functools
import importlib.util
from pathlib import Path

import torch

import llmaccel
from llmaccel.kernels import skinny

from ab import alternate

ap = argparse.ArgumentParser()
ap.add_argument("other")
ap.add_argument("--sizes", default="1,4,16")
ap.add_argument("--reps", type=int, default=150)
ap.add_argument("--context", type=int, default=300)
ap.add_argument("--fp32", action="store_true")
args = ap.parse_args()

# the other tree's loader (before it had one, skinny.py loaded the extension: its _load)
kernels = Path(args.other) / "llmaccel/kernels"
split = (kernels / "loader.py").exists()
spec = importlib.util.spec_from_file_location("kernels_other", kernels / ("loader.py" if split else "skinny.py"))
other = importlib.util.module_from_spec(spec)
spec.loader.exec_module(other)
ext = {"this": skinny._load(), "other": other.load() if split else other._load()}
assert ext["this"] is not ext["other"], "the two trees build the same extension"

pack = skinny.pack
if args.fp32:
    skinny.pack = functools.partial(pack, codes=False)
lm = llmaccel.load("smollm2-135m")
skinny.pack = pack

sizes = [int(k) for k in args.sizes.split(",")]
medians, differ = alternate(lm, {"this": lambda: setattr(skinny, "_ext", ext["this"]),
                                 "other": lambda: setattr(skinny, "_ext", ext["other"])},
                            sizes, args.reps, args.context)
skinny._ext = ext["this"]
assert differ == 0, f"the two builds' tokens differed in {differ} steps"
print("| k | other ms | this ms | this / other |\n|---:|---:|---:|---:|")
for k in sizes:
    o, t = medians[(k, "other")], medians[(k, "this")]
    print(f"| {k} | {o * 1e3:.2f} | {t * 1e3:.2f} | {t / o:.3f} |")
