"""Cost of the reference index per MB of reference text: build time and memory, one process per size.

    .venv/bin/python benchmarks/index_size.py [--sizes 0.25,0.5,1,2,4] [--model smollm2-135m]

Real text: the LLMA rows' documents (../shared/data/llma), tokenized once with the model's tokenizer
and repeated to each size (repeats make the automaton no smaller: it indexes every position). Each
size is built in a fresh process so its peak RSS is its own. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

CHILD = """
import json, resource, sys, time
from llmaccel.drafting.reference import ReferenceDrafter, ReferenceOptions
tokens = json.load(open(sys.argv[1]))
n = int(sys.argv[2])
refs = [tokens[i : i + 1000] for i in range(0, n, 1000)]  # 1k-token references, as retrieved passages
def rss_mb():
    return int(open("/proc/self/statm").read().split()[1]) * resource.getpagesize() / 2**20
before = rss_mb()
t = time.perf_counter()
d = ReferenceDrafter(refs, ReferenceOptions())
d.feed(tokens[:300])
d.propose(16)  # the first draft completes the index (occurrence counts, best continuations)
build = time.perf_counter() - t
t = time.perf_counter()
for _ in range(200):
    d.feed(d.propose(16)[:4] or tokens[:1])
step = (time.perf_counter() - t) / 200
print(json.dumps({"build_s": build, "step_s": step, "rss_mb": rss_mb() - before}))
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="0.25,0.5,1,2,4", help="MB of text")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--data-dir", default="../shared/data/llma")
    args = ap.parse_args()
    from llmaccel.bench.data import long_text
    from llmaccel.models import load_tokenizer

    sizes = [float(s) for s in args.sizes.split(",")]
    text = long_text(400_000, args.data_dir)
    tok = load_tokenizer(args.model)
    tokens = tok.encode(text, add_special_tokens=False)
    chars_per_token = len(text.encode()) / len(tokens)
    need = int(max(sizes) * 2**20 / chars_per_token) + 1
    tokens = (tokens * (need // len(tokens) + 1))[:need]
    path = Path("runs/index-size-tokens.json")
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(tokens))
    print(f"{chars_per_token:.2f} bytes of text per token; {sys.argv[0]}")
    print("| MB of text | tokens | build s | s per MB | RSS MB | RSS MB per MB | step (propose+feed) us |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for mb in sizes:
        n = int(mb * 2**20 / chars_per_token)
        out = subprocess.run([sys.executable, "-c", CHILD, str(path), str(n)], capture_output=True, text=True,
                             check=True)
        r = json.loads(out.stdout)
        print(f"| {mb:g} | {n:,} | {r['build_s']:.2f} | {r['build_s'] / mb:.2f} | {r['rss_mb']:.0f} | "
              f"{r['rss_mb'] / mb:.0f} | {r['step_s'] * 1e6:.0f} |")


if __name__ == "__main__":
    main()
