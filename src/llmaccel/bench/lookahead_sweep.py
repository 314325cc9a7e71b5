"""W x N x G sweep for `lookahead`, timed against greedy and `reference` in one run.

Each sample runs greedy, `reference` (defaults) and `lookahead` at every (window W, n-gram N, pool G)
setting, interleaved per sample; every output must equal greedy's (exactness is the contract). The
table and plot give decode speed relative to greedy, and tokens per step.
"""

from __future__ import annotations

from pathlib import Path

from llmaccel.bench.data import Sample
from llmaccel.bench.sweep import markdown_table, pyplot, rates, save, timed_grid
from llmaccel.drafting.lookahead import LookaheadOptions

WINDOWS = (1, 2, 4, 8)
NGRAMS = (2, 3, 4)
POOLS = (2, 4)


def sweep(model_name: str, samples: list[Sample], max_new_tokens: int, windows=WINDOWS, ngrams=NGRAMS,
          pools=POOLS, progress: bool = True) -> dict:
    from llmaccel import models

    lm = models.load(model_name)
    options: list[tuple[str, str, LookaheadOptions | None]] = [("greedy", "greedy", None), ("reference", "reference", None)]
    options += [(f"W{w}N{n}G{g}", "lookahead", LookaheadOptions(window=w, ngram=n, pool_size=g))
                for w in windows for n in ngrams for g in pools]
    settings = [(name, {"method": method, "lookahead": la}) for name, method, la in options]
    measured = rates(timed_grid(lm, samples, settings, max_new_tokens, desc="lookahead sweep", progress=progress))
    grid = [{"setting": name, "window": la.window if la else None, "ngram": la.ngram if la else None,
             "pool_size": la.pool_size if la else None,
             "tokens_per_step": measured[name]["tokens"] / measured[name]["steps"], **measured[name]}
            for name, _, la in options]
    return {"model": model_name, "samples": len(samples), "max_new_tokens": max_new_tokens, "timed": grid}


def table(doc: dict) -> str:
    return markdown_table(
        ["setting", "W", "N", "G", "decode tok/s", "speedup vs greedy", "tokens/step"],
        [[g["setting"], g["window"] or "-", g["ngram"] or "-", g["pool_size"] or "-",
          f"{g['decode_tokens_per_s']:.1f}", f"{g['speedup_vs_greedy']:.2f}x", f"{g['tokens_per_step']:.2f}"]
         for g in doc["timed"]])


def write(doc: dict, out: Path) -> Path:
    plt = pyplot()
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
    return save(doc, out, fig)
