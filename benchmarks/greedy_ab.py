"""Plain greedy decoding (1-token steps only) of SmolLM2 with the AMX path off and on, alternating
generation by generation in one process: decode tokens/s of each setting, medians.

    .venv/bin/python benchmarks/greedy_ab.py [--rows 5] [--rounds 3] [--max-new-tokens 128]

The prompts are the first --rows rows of ../shared/data/llma/cnndm.dev.jsonl (the chat template over the
user message, as `llmaccel bench` builds them); the tokens of both settings are checked equal.
"""
import argparse
import statistics

import llmaccel
from llmaccel.bench.data import load_rows
from llmaccel.kernels import skinny

ap = argparse.ArgumentParser()
ap.add_argument("--data", default="../shared/data/llma/cnndm.dev.jsonl")
ap.add_argument("--rows", type=int, default=5)
ap.add_argument("--rounds", type=int, default=3)
ap.add_argument("--max-new-tokens", type=int, default=128)
args = ap.parse_args()

lm = llmaccel.load("smollm2-135m")
rows = load_rows(args.data, args.rows)
rates: dict[bool, list[float]] = {False: [], True: []}
for _ in range(args.rounds):
    for row in rows:
        out = {}
        for amx in (False, True):
            skinny.use_amx(amx)
            r = llmaccel.generate(lm, row.user_message, method="greedy", chat=row.chat, max_new_tokens=args.max_new_tokens)
            out[amx] = r.token_ids
            rates[amx].append(len(r.token_ids) / r.decode_s)
        assert out[False] == out[True], "AMX and vector paths decoded different tokens"
skinny.use_amx(True)
off, on = statistics.median(rates[False]), statistics.median(rates[True])
print(f"greedy decode tok/s: vector path {off:.1f}, AMX path {on:.1f}, AMX / vector {on / off:.3f}")
