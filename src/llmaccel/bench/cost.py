"""cost(k)/cost(1): what a decoding step of k tokens costs relative to a 1-token step."""

from __future__ import annotations

import statistics
import time


def cost_table(costs_by_label: dict[str, dict[int, float]]) -> str:
    sizes = list(next(iter(costs_by_label.values())))
    head = "| engine | " + " | ".join(f"k={k}" for k in sizes) + " | cost(16)/cost(1) |"
    lines = [head, "|" + " --- |" * (len(sizes) + 2)]
    for label, c in costs_by_label.items():
        cells = " | ".join(f"{c[k] * 1000:.1f} ms ({c[k] / c[sizes[0]]:.2f}x)" for k in sizes)
        r16 = f"{c[16] / c[1]:.2f}x" if 16 in c and 1 in c else "-"
        lines.append(f"| {label} | {cells} | {r16} |")
    return "\n".join(lines)


def lookup_cost(n_refs: int = 10, ref_len: int = 1000, steps: int = 300, vocab: int = 49152,
                seed: int = 0) -> dict[str, float]:
    """Time of the reference index per decoding step (propose + feed), with `n_refs` references.

    Text-like input: the references share phrases and the output copies spans of them, so matches are
    frequent and long, as in RAG. Returns the build time and the median / p99 per-step lookup time.
    """
    import random

    from llmaccel.drafting.reference import ReferenceDrafter, ReferenceOptions

    rng = random.Random(seed)
    phrases = [[rng.randrange(vocab) for _ in range(rng.randint(3, 12))] for _ in range(400)]

    def text(n: int) -> list[int]:
        out: list[int] = []
        while len(out) < n:
            out += rng.choice(phrases)
        return out[:n]

    refs = [text(ref_len) for _ in range(n_refs)]
    t = time.perf_counter()
    drafter = ReferenceDrafter(refs, ReferenceOptions())
    drafter.feed(text(ref_len))  # a prompt of the same size
    build = time.perf_counter() - t
    per_step = []
    for _ in range(steps):
        t = time.perf_counter()
        draft = drafter.propose(16)
        # the "model" accepts half of the draft, then a token copied from a random reference
        accepted = draft[: len(draft) // 2] + [rng.choice(rng.choice(refs))]
        drafter.observe(len(draft), len(draft) // 2)
        drafter.feed(accepted)
        per_step.append(time.perf_counter() - t)
    per_step.sort()
    return {"build_s": build, "median_step_s": statistics.median(per_step),
            "p99_step_s": per_step[int(0.99 * (len(per_step) - 1))]}
