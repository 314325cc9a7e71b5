"""A step's torch glue around the C++ layers, before and after commit 27ce7e5, alternating step by step in one
process: "old" runs the model's rotary module and F.rms_norm for the final norm, "new" looks RoPE's rows
up in lean's table and normalises in C++ (`skinny.rms_norm_rows`). Prints medians per k and new/old, and
whether the greedy tokens differed in any step.

    .venv/bin/python benchmarks/glue_ab.py [--sizes 1,2,4] [--reps 120] [--context 300]
"""
import argparse

import torch
import torch.nn.functional as F

import llmaccel
from llmaccel.kernels import skinny

from ab import alternate

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


def setting(rope, norm):
    def apply():
        st.rope, skinny.rms_norm_rows = rope, norm
    return apply


sizes = [int(k) for k in args.sizes.split(",")]
medians, differ = alternate(lm, {"old": setting(None, torch_norm), "new": setting(st.rope, cpp_norm)}, sizes,
                            args.reps, args.context)
print("| k | old ms | new ms | new / old |\n|---:|---:|---:|---:|")
for k in sizes:
    a, b = medians[(k, "old")], medians[(k, "new")]
    print(f"| {k} | {a * 1e3:.2f} | {b * 1e3:.2f} | {b / a:.3f} |")
print(f"steps whose greedy tokens differed: {differ} of {len(sizes) * (args.reps + 5)}")
