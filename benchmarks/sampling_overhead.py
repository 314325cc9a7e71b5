"""What the sampling rule adds to a one-token step.

    .venv/bin/python benchmarks/sampling_overhead.py [--model smollm2-135m] [--rounds 4]

Same positions (the rule's cost): along each prompt's greedy continuation, every position's one-token step
is run three ways in turn (rotated), the cache rolled back in between: the greedy step (the model's own
`greedy`, the path plain decoding takes) and the sampled step (full logits, then `Sampler.choose`, as the
decoder makes it) at T=0.7 top-p 0.95 and at T=1.0. Same tokens, same context lengths: the difference is
the rule (and the logits it needs).

Whole generations (what a user sees, noisier): plain decoding (method greedy, no drafts) greedy and
sampled, interleaved per prompt; the texts differ, so the steps run at different context lengths.

Also times the parts alone on a row of a real prompt's logits.
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
NEW_TOKENS = 96


def same_position_ms(lm, prompt) -> dict[str, list[float]]:
    """Each setting's one-token step time (ms) at every position of the prompt's greedy continuation."""
    cache = lm.new_cache()
    token = lm.greedy(torch.tensor([prompt]), 0, cache, keep=1)[0]
    samplers = {k: smp.Sampler(sp, lm.vocab_size, prompt) for k, sp in SETTINGS.items() if not sp.greedy}
    names, out = list(SETTINGS), {k: [] for k in SETTINGS}
    pos = len(prompt)
    for i in range(NEW_TOKENS):
        ids = torch.tensor([[token]])
        j = i % len(names)
        for k in names[j:] + names[:j]:
            t = time.perf_counter()
            if k == "greedy":
                nxt = lm.greedy(ids, pos, cache, keep=1)[0]
            else:
                samplers[k].choose(lm.forward(ids, pos, cache, keep=1)[0], [pos + 1], [()])
            out[k].append((time.perf_counter() - t) * 1e3)
            cache.rollback_to(pos)
        lm.greedy(ids, pos, cache, keep=1)  # the step kept
        token, pos = nxt, pos + 1
    return out


def generation_ms(lm, prompt, sampling) -> list[float]:
    r = llmaccel.Decoder(lm, prompt, method="greedy", max_new_tokens=NEW_TOKENS, sampling=sampling).run()
    return [s.forward_s * 1e3 for s in r.step_stats]


def part_us(fn, n=300) -> float:
    for _ in range(10):
        fn()
    t = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t) / n * 1e6


def table(title: str, times: dict[str, list[float]]) -> None:
    mean0, med0 = statistics.mean(times["greedy"]), statistics.median(times["greedy"])
    print(f"\n{title}\n| decoding | mean step ms | vs greedy | median step ms | vs greedy |\n| --- | --- | --- | --- | --- |")
    for k, v in times.items():
        mean, med = statistics.mean(v), statistics.median(v)
        print(f"| {k} | {mean:.2f} | {mean / mean0 - 1:+.1%} | {med:.2f} | {med / med0 - 1:+.1%} |")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--rounds", type=int, default=4)
    args = ap.parse_args()
    lm = llmaccel.load(args.model)
    samples = load_data("humaneval", 3) + load_data("../shared/data/llma/rag.dev.jsonl", 3)
    prompts = [sample_prompt_ids(lm, s) for s in samples]
    names = list(SETTINGS)
    same = {k: [] for k in SETTINGS}
    whole = {k: [] for k in SETTINGS}
    for r in range(args.rounds):
        for i, p in enumerate(prompts):
            for k, v in same_position_ms(lm, p).items():
                same[k] += v
            j = (r + i) % len(names)  # per prompt, every setting in turn (rotated), so a slow phase hits all
            for k in names[j:] + names[:j]:
                whole[k] += generation_ms(lm, p, SETTINGS[k])
    table(f"same positions ({len(same['greedy'])} steps each)", same)
    table("whole generations", whole)
    V = lm.vocab_size
    logits = lm.forward(torch.tensor([prompts[0]]), 0, lm.new_cache(), keep=1)[0]  # (1, V) a real row
    choice = {k: smp.Sampler(sp, V, prompts[0]) for k, sp in SETTINGS.items() if not sp.greedy}
    print(f"\nparts on a row of {V} real logits (us): noise of a whole position {part_us(lambda: smp.noise(1, 5, V)):.0f}, "
          f"top-p 0.95 cut through torch (GPU / no kernels) {part_us(lambda: smp.filter_scores(logits / 0.7, 0, 0.95, 0.0)):.0f}, "
          + ", ".join(f"whole choice {k} {part_us(lambda c=c: c.choose(logits, [len(prompts[0])], [()])):.0f}"
                      for k, c in choice.items()))


if __name__ == "__main__":
    main()
