"""What the sampling rule adds to a one-token step: plain decoding (method greedy, no drafts) greedy and
sampled, interleaved, on the same prompts; the mean time of a decoding step (forward + choice).

    .venv/bin/python benchmarks/sampling_overhead.py [--model smollm2-135m] [--rounds 6]

Also times the parts alone on one row of logits: the noise of one position (kernels/sampling.cpp), the cuts
(top-p 0.95), the choice.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import llmaccel
from llmaccel import sampling as smp
from llmaccel.bench.data import load_data
from llmaccel.bench.run import sample_prompt_ids

SETTINGS = {
    "greedy": llmaccel.Sampling(),
    "T=0.7 top_p=0.95": llmaccel.Sampling(temperature=0.7, top_p=0.95, seed=1),
    "T=1.0": llmaccel.Sampling(temperature=1.0, seed=1),
}


def step_ms(lm, prompt, sampling) -> list[float]:
    r = llmaccel.Decoder(lm, prompt, method="greedy", max_new_tokens=96, sampling=sampling).run()
    return [s.forward_s * 1e3 for s in r.step_stats]


def part_us(fn, n=300) -> float:
    for _ in range(10):
        fn()
    t = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t) / n * 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--rounds", type=int, default=6)
    args = ap.parse_args()
    lm = llmaccel.load(args.model)
    samples = load_data("humaneval", 3) + load_data("../shared/data/llma/rag.dev.jsonl", 3)
    prompts = [sample_prompt_ids(lm, s) for s in samples]
    times = {k: [] for k in SETTINGS}
    for r in range(args.rounds):
        for k in list(SETTINGS)[r % len(SETTINGS):] + list(SETTINGS)[: r % len(SETTINGS)]:
            for p in prompts:
                times[k] += step_ms(lm, p, SETTINGS[k])
    base = statistics.mean(times["greedy"])
    print("| decoding | mean step ms | vs greedy |\n| --- | --- | --- |")
    for k, v in times.items():
        print(f"| {k} | {statistics.mean(v):.2f} | {statistics.mean(v) / base - 1:+.1%} |")
    V = lm.vocab_size
    logits = torch.randn(1, V) * 3
    sampler = smp.Sampler(SETTINGS["T=0.7 top_p=0.95"], V, [1, 2])
    print(f"\nparts on one row of {V} logits (us): noise {part_us(lambda: smp.noise(1, 5, V)):.0f}, "
          f"top-p 0.95 cut through torch (GPU / no kernels) {part_us(lambda: smp.filter_scores(logits / 0.7, 0, 0.95, 0.0)):.0f}, "
          f"whole choice T=0.7 top_p=0.95 (noise cached) {part_us(lambda: sampler.choose(logits, [5], [()])):.0f}")


if __name__ == "__main__":
    main()
