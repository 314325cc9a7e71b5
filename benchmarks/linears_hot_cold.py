"""SmolLM2's own packed linears through skinny.linear, in situ (the real model's weights and layouts):
30 layers' q/k/v, o, gate/up and down "cold" (every layer in turn, as a step reads them) and "hot" (one
layer's four matrices 30 times, so they stay in L2), and the LM head, at 1 and 16 rows.

    .venv/bin/python benchmarks/linears_hot_cold.py

Hot vs cold tells whether a row count is bound by the kernel's work or by reading the weights.
Medians of 40 rounds, ms.
"""
import statistics
import time

import torch

import llmaccel
from llmaccel.kernels import skinny

torch.set_grad_enabled(False)
lm = llmaccel.load("smollm2-135m")
st = lm.stack


def mats(layer):
    return [(layer.qkv.packed, layer.qkv.n, 576), (layer.o.packed, 576, 576),
            (layer.gate_up.packed, layer.gate_up.n, 576), (layer.down.packed, 576, 1536)]


head = (st.head.packed, st.head.n, 576)
for M in (1, 16):
    xs = {K: torch.randn(M, K) for K in (576, 1536)}

    def run(ms):
        t = time.perf_counter()
        for p, n, K in ms:
            skinny.linear(xs[K], p, n)
        return time.perf_counter() - t

    cold = [m for layer in st.layers for m in mats(layer)]
    hot = mats(st.layers[0]) * len(st.layers)
    res = {"layers cold": [], "layers hot": [], "head": []}
    for _ in range(40):
        res["layers cold"].append(run(cold))
        res["layers hot"].append(run(hot))
        res["head"].append(run([head]))
    print(f"M={M}: " + ", ".join(f"{k} {statistics.median(v) * 1e3:.2f}" for k, v in res.items()))
