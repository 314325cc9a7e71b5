"""Microbenchmark: SmolLM2-135M linears at decoding-step row counts, F.linear vs MKL packed vs skinny
(fp32 panels) vs skinny (code blocks).

    .venv/bin/python benchmarks/bench_skinny.py [--reps 11] [--rows 1,2,4,8,16,32] [--layers 30]

Per layer the seven linears of SmolLM2-135M (q 576x576, k/v 192x576, o 576x576, gate/up 1536x576,
down 576x1536), each layer with its own weights (~14 MB a layer, ~425 MB for 30, as in the real
model, so nothing stays in cache from one pass to the next), and separately the 49152x576 LM head
(113 MB; the cache is flushed before each timed call). The weights are random but quantised as the
GGUF file of SmolLM2 is (layers Q4_1, head Q8_0) and used by every method as fp32 values, so "skinny
(codes)" streams the code blocks and computes the same products as "skinny". Times are medians over --reps passes after
warm-up, the three methods interleaved rep by rep so that a noisy neighbour hits them alike.
Prints a markdown table in ms.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from llmaccel.kernels import skinny
from llmaccel.kernels.skinny import quantize_like_gguf

HIDDEN, INTER, KV, VOCAB = 576, 1536, 192, 49152
LAYER_SHAPES = [  # (out N, in K) as nn.Linear stores them
    (HIDDEN, HIDDEN), (KV, HIDDEN), (KV, HIDDEN), (HIDDEN, HIDDEN),  # q, k, v, o
    (INTER, HIDDEN), (INTER, HIDDEN), (HIDDEN, INTER),  # gate, up, down
]


def _mkl_ok() -> bool:
    return torch.backends.mkl.is_available() and hasattr(torch.ops.mkl, "_mkl_linear")


def _gguf_like(n: int, k: int, bits: int) -> torch.Tensor:
    return quantize_like_gguf(torch.randn(n, k) / k**0.5, bits)


def _time(fn) -> float:
    t = time.perf_counter()
    fn()
    return (time.perf_counter() - t) * 1e3


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=11)
    ap.add_argument("--rows", default="1,2,4,8,16,32")
    ap.add_argument("--layers", type=int, default=30)
    ap.add_argument("--no-head", action="store_true")
    args = ap.parse_args(argv)
    rows = [int(r) for r in args.rows.split(",")]
    torch.manual_seed(0)

    have_skinny = skinny.available()
    amx = have_skinny and skinny.use_amx(True)  # the CPU has AMX tiles (and the kernel may use them)
    have_mkl = _mkl_ok()
    info = f"threads {torch.get_num_threads()}"
    if have_skinny:
        ext = skinny._load()
        info += f", skinny: {ext.isa()} NB={ext.panel_width()} MR={ext.row_block()}"
    else:
        info += ", skinny kernel unavailable"
    print(f"<!-- {info} -->")

    with torch.inference_mode():
        layers = [[_gguf_like(n, k, 4) for n, k in LAYER_SHAPES] for _ in range(args.layers)]
        methods: dict[str, list] = {"F.linear": [[(w, w) for w in ws] for ws in layers]}
        if have_mkl:
            methods["MKL packed"] = [[(torch.ops.mkl._mkl_reorder_linear_weight(w, 16), w) for w in ws] for ws in layers]
        if have_skinny:
            methods["skinny"] = [[(skinny.pack(w, codes=False), w) for w in ws] for ws in layers]
            methods["skinny (codes)"] = [[(skinny.pack(w), w) for w in ws] for ws in layers]
            if amx:
                methods["skinny (codes, AMX)"] = methods["skinny (codes)"]

        def call(name, x, packed, w):
            if name == "F.linear":
                return F.linear(x, w)
            if name == "MKL packed":
                return torch.ops.mkl._mkl_linear(x, packed, w, None, x.shape[0])
            skinny.use_amx(name.endswith("AMX)"))  # ~1 us: a flag (off: the vector path for every row count)
            return skinny.linear(x, packed, w.shape[0])

        def one_pass(name, xs):
            for layer in methods[name]:
                for (packed, w) in layer:
                    call(name, xs[w.shape[1]], packed, w)

        table: dict[tuple[str, str], dict[int, float]] = {}
        for m in rows:
            xs = {HIDDEN: torch.randn(m, HIDDEN), INTER: torch.randn(m, INTER)}
            for name in methods:  # warm-up (first touch, thread pools, lazy init)
                one_pass(name, xs)
            samples: dict[str, list[float]] = {name: [] for name in methods}
            for _ in range(args.reps):
                for name in methods:
                    samples[name].append(_time(lambda: one_pass(name, xs)))
            for name in methods:
                table.setdefault(("layers", name), {})[m] = statistics.median(samples[name])

        if not args.no_head:
            del methods  # free ~1 GB before the head
            w = _gguf_like(VOCAB, HIDDEN, 8)
            head = {"F.linear": (w, w)}
            if have_mkl:
                head["MKL packed"] = (torch.ops.mkl._mkl_reorder_linear_weight(w, 16), w)
            if have_skinny:
                head["skinny"] = (skinny.pack(w, codes=False), w)
                head["skinny (codes)"] = (skinny.pack(w), w)
                if amx:
                    head["skinny (codes, AMX)"] = head["skinny (codes)"]
            flush = torch.empty(64 << 20)  # 256 MB, read between calls to evict the head from cache

            for m in rows:
                x = torch.randn(m, HIDDEN)
                samples = {name: [] for name in head}
                for name in head:
                    call(name, x, *head[name])
                for _ in range(args.reps):
                    for name, (packed, w) in head.items():
                        flush.sum()
                        samples[name].append(_time(lambda: call(name, x, packed, w)))
                for name in head:
                    table.setdefault(("LM head 49152x576", name), {})[m] = statistics.median(samples[name])

    print(f"| part | method | " + " | ".join(f"M={m}" for m in rows) + " |")
    print("|---|---|" + "---:|" * len(rows))
    for (part, name), vals in table.items():
        label = f"{args.layers} layers' linears" if part == "layers" else part
        print(f"| {label} | {name} | " + " | ".join(f"{vals[m]:.2f}" for m in rows) + " |")


if __name__ == "__main__":
    main()
