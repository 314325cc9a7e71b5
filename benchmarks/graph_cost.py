"""Step costs on a GPU with and without CUDA graphs, same run: `.venv/bin/python benchmarks/graph_cost.py`.

The model has SmolLM2-135M's shape with random weights (the costs do not depend on the values), so the
GPU machine needs no model files. Prints `bench.cost`'s table for two rounds of each engine.
"""

from __future__ import annotations

import argparse

import torch

import llmaccel
from llmaccel.bench.cost import cost_table
from llmaccel.step_cost import measure as step_costs
from bench_skinny import HIDDEN, INTER, VOCAB  # benchmarks/, next to this file


def smollm2_shaped(device: str):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=INTER, num_hidden_layers=30,
                      num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=8192,
                      rope_theta=100000, tie_word_embeddings=True)
    return LlamaForCausalLM(cfg).to(device).eval()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--context", type=int, default=300)
    ap.add_argument("--reps", type=int, default=10)
    args = ap.parse_args(argv)
    engines = {"graphs": llmaccel.wrap(smollm2_shaped(args.device), None, cuda_graphs=True),
               "eager": llmaccel.wrap(smollm2_shaped(args.device), None, cuda_graphs=False)}
    res = {}
    for rnd in range(2):
        for name, lm in engines.items():
            res[f"{name}, round {rnd}"] = step_costs(lm, context=args.context, reps=args.reps)
    print(cost_table(res))


if __name__ == "__main__":
    main()
