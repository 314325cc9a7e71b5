"""`llmaccel demo`: a retrieval-augmented question answered with greedy and with `reference`.

The passage is written for this demo (no data is downloaded). Both runs must give the same tokens;
the demo shows the answer, the decoding steps and the speedup.
"""

from __future__ import annotations

import sys

PASSAGE = (
    "The Rhine is one of the major rivers of Europe. It rises in the Swiss Alps, forms part of the "
    "border between Switzerland and Germany and between France and Germany, and flows north through "
    "Germany and the Netherlands to the North Sea. The river is about 1,230 kilometres long. Its largest "
    "cities are Cologne, Düsseldorf and Basel, and its delta around Rotterdam holds the largest port in "
    "Europe. Since Roman times the Rhine has been an important waterway for trade, and today barges carry "
    "coal, grain, chemicals and containers along most of its length."
)
QUESTION = "Describe the Rhine: where it rises, which countries it crosses, how long it is and what it carries."


def main(model: str = "smollm2-135m") -> None:
    import llmaccel

    print(f"loading {model} ...", file=sys.stderr)
    lm = llmaccel.load(model)
    prompt = f"[1] {PASSAGE}\n\nQuestion: {QUESTION}"
    runs = {}
    for method in ("greedy", "reference"):
        runs[method] = llmaccel.generate(lm, prompt, references=[PASSAGE], method=method, chat=True,
                                         max_new_tokens=128)
    g, r = runs["greedy"], runs["reference"]
    print("\n" + r.text.strip() + "\n")
    same = "identical" if g.token_ids == r.token_ids else "DIFFERENT (a bug: please report it)"
    for name, res in runs.items():
        print(f"{name:>9}: {len(res.token_ids)} tokens in {res.steps:3d} steps, "
              f"{res.decode_tokens_per_s:6.1f} tokens/s decode")
    print(f"speedup of reference over greedy: {r.decode_tokens_per_s / g.decode_tokens_per_s:.2f}x; outputs {same}")
