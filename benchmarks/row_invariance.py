"""Are a k-token step's logits those of k one-token steps? Per row, the largest difference, for the
default engine and with parts of it switched (where a sampled token can flip: sampling.py).

    .venv/bin/python benchmarks/row_invariance.py [--model smollm2-135m]

The prompt is prefilled once per case; then the same k tokens go in either as one k-token chain step
or as k one-token steps, from caches that hold the same prefill. Row 0 of a chain step attends to the
same keys as the one-token step, so a difference there comes from the linears (the GEMM's tiles
for k rows), not from the attention.
"""

from __future__ import annotations

import argparse

import torch

import llmaccel
from llmaccel.kernels import skinny


def logits_both_ways(lm, prompt: list[int], tokens: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    p = torch.tensor([prompt])
    a = lm.new_cache()
    lm.forward(p, 0, a, keep=1)
    chain = lm.forward(torch.tensor([tokens]), len(prompt), a, keep=len(tokens))[0]  # (k, V)
    b = lm.new_cache()
    lm.forward(p, 0, b, keep=1)
    ones = torch.cat([lm.forward(torch.tensor([[t]]), len(prompt) + i, b, keep=1)[0] for i, t in enumerate(tokens)])
    return chain, ones


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    args = ap.parse_args()
    lm = llmaccel.load(args.model)
    prompt = lm.chat_prompt("Summarise the plot of Hamlet in three sentences.")
    tokens = llmaccel.generate(lm, prompt, method="greedy", max_new_tokens=8).token_ids
    print("| engine, k | max abs difference of the logits per row | rows bit-equal |\n| --- | --- | --- |")
    for tiles in (True, False):
        skinny.step_attention_tiles(tiles)
        for k in (2, 4, 8):
            chain, ones = logits_both_ways(lm, prompt, tokens[:k])
            diff = (chain - ones).abs().amax(-1)
            same = sum(bool(torch.equal(chain[i], ones[i])) for i in range(k))
            name = "default" if tiles else "multi-token attention through SDPA"
            print(f"| {name}, k={k} | {' '.join(f'{d:.1e}' for d in diff.tolist())} | {same} of {k} |")
    skinny.step_attention_tiles(True)


if __name__ == "__main__":
    main()
