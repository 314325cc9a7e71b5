"""W x N x G sweep for `lookahead`, timed against greedy and `reference` in one run.

Each sample runs greedy, `reference` (defaults) and `lookahead` at every (window W, n-gram N, pool G)
setting, interleaved per sample; every output must equal greedy's (exactness is the contract). The
table and plot give decode speed relative to greedy, and tokens per step.
"""

from __future__ import annotations

import json
from pathlib import Path

from llmaccel.bench.data import Sample
from llmaccel.bench.run import prompt_ids
from llmaccel.drafting.lookahead import LookaheadOptions
from llmaccel.engine import Decoder

WINDOWS = (1, 2, 4, 8)
NGRAMS = (2, 3, 4)
POOLS = (2, 4)


def sweep(model_name: str, samples: list[Sample], max_new_tokens: int, windows=WINDOWS, ngrams=NGRAMS,
          pools=POOLS, progress: bool = True) -> dict:
    from tqdm import tqdm

    from llmaccel import models

    lm = models.load(model_name)
    settings: list[tuple[str, str, LookaheadOptions | None]] = [("greedy", "greedy", None), ("reference", "reference", None)]
    settings += [(f"W{w}N{n}G{g}", "lookahead", LookaheadOptions(window=w, ngram=n, pool_size=g))
                 for w in windows for n in ngrams for g in pools]
    totals = {name: {"tokens": 0, "decode_s": 0.0, "steps": 0} for name, _, _ in settings}
    bar = tqdm(total=len(samples) * len(settings), disable=not progress, desc="lookahead sweep", unit="run")
    for k, s in enumerate(samples):
        prompt = prompt_ids(lm, s.user_message, s.chat)
        refs = [lm.tokenizer.encode(d, add_special_tokens=False) for d in s.references]
        want = Decoder(lm, prompt, max_new_tokens=max_new_tokens).run().token_ids
        order = settings[k % len(settings):] + settings[: k % len(settings)]  # rotate: drift hits all alike
        for name, method, la in order:
            r = Decoder(lm, prompt, method=method, references=refs, max_new_tokens=max_new_tokens, lookahead=la).run()
            if r.token_ids != want:
                raise AssertionError(f"{name} differs from greedy on sample {s.id}")
            t = totals[name]
            t["tokens"] += len(r.token_ids)
            t["decode_s"] += r.decode_s
            t["steps"] += r.steps
            bar.update(1)
    bar.close()
    base = totals["greedy"]["tokens"] / totals["greedy"]["decode_s"]
    grid = []
    for name, _, la in settings:
        t = totals[name]
        rate = t["tokens"] / t["decode_s"]
        grid.append({"setting": name, "window": la.window if la else None, "ngram": la.ngram if la else None,
                     "pool_size": la.pool_size if la else None, "decode_tokens_per_s": rate,
                     "speedup_vs_greedy": rate / base, "tokens_per_step": t["tokens"] / t["steps"], **t})
    return {"model": model_name, "samples": len(samples), "max_new_tokens": max_new_tokens, "timed": grid}


def table(doc: dict) -> str:
    lines = ["| setting | W | N | G | decode tok/s | speedup vs greedy | tokens/step |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for g in doc["timed"]:
        lines.append(f"| {g['setting']} | {g['window'] or '-'} | {g['ngram'] or '-'} | {g['pool_size'] or '-'} | "
                     f"{g['decode_tokens_per_s']:.1f} | {g['speedup_vs_greedy']:.2f}x | {g['tokens_per_step']:.2f} |")
    return "\n".join(lines)


def write(doc: dict, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1))
    grid = [g for g in doc["timed"] if g["window"]]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for key, ax, label in (("speedup_vs_greedy", axes[0], "decode speedup vs greedy"),
                           ("tokens_per_step", axes[1], "tokens per step")):
        for n in sorted({g["ngram"] for g in grid}):
            for p in sorted({g["pool_size"] for g in grid}):
                pts = [(g["window"], g[key]) for g in grid if g["ngram"] == n and g["pool_size"] == p]
                ax.plot(*zip(*pts), marker="o", label=f"N={n} G={p}")
        ref = next(g for g in doc["timed"] if g["setting"] == "reference")
        ax.axhline(ref[key], color="grey", ls="--", lw=0.8, label="reference")
        if key == "speedup_vs_greedy":
            ax.axhline(1.0, color="black", lw=0.8)
        ax.set_xscale("log", base=2)
        ax.set(xlabel="window W", ylabel=label)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"lookahead, {doc['model']}, {doc['samples']} samples, {doc['max_new_tokens']} new tokens")
    fig.tight_layout()
    png = out.with_suffix(".png")
    fig.savefig(png, dpi=120)
    plt.close(fig)
    return png
