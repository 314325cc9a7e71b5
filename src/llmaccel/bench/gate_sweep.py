"""Settings of `auto`'s window gate, timed against greedy and `reference` in one run.

Each sample runs greedy, `reference` and `auto` at every (first wait, longest wait, prior) setting of
the gate, interleaved per sample; every output must equal greedy's. `auto` aims at the best single
method, so the table gives each setting's decode speed relative to `reference` as well as to greedy.
"""

from __future__ import annotations

from pathlib import Path

from llmaccel.bench.data import Sample
from llmaccel.bench.sweep import markdown_table, pyplot, rates, save, timed_grid
from llmaccel.drafting.lookahead import LookaheadOptions

# (explore_every, max_explore_every, gate_prior): the defaults, the previous defaults, and the two
# other corners of the waits x prior square.
SETTINGS = ((8, 64, 0.0), (8, 64, 0.5), (16, 128, 0.0), (16, 128, 0.5))


def sweep(model_name: str, samples: list[Sample], max_new_tokens: int, settings=SETTINGS,
          progress: bool = True) -> dict:
    from llmaccel import models

    lm = models.load(model_name)
    named = [(f"auto {e}..{m} prior {p}", LookaheadOptions(explore_every=e, max_explore_every=m, gate_prior=p))
             for e, m, p in settings]
    grid = [("greedy", {"method": "greedy"}), ("reference", {"method": "reference"})]
    grid += [(name, {"method": "auto", "lookahead": la}) for name, la in named]
    measured = rates(timed_grid(lm, samples, grid, max_new_tokens, desc="gate sweep", progress=progress))
    ref = measured["reference"]["decode_tokens_per_s"]
    timed = [{"setting": name, "vs_reference": m["decode_tokens_per_s"] / ref, **m} for name, m in measured.items()]
    return {"model": model_name, "samples": len(samples), "max_new_tokens": max_new_tokens, "timed": timed}


def table(doc: dict) -> str:
    return markdown_table(
        ["setting", "decode tok/s", "vs greedy", "vs reference", "steps"],
        [[g["setting"], f"{g['decode_tokens_per_s']:.1f}", f"{g['speedup_vs_greedy']:.2f}x", f"{g['vs_reference']:.3f}",
          g["steps"]] for g in doc["timed"]])


def write(doc: dict, out: Path) -> Path:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.4))
    names = [g["setting"] for g in doc["timed"]]
    ax.barh(names, [g["vs_reference"] for g in doc["timed"]], color="tab:blue")
    ax.axvline(1.0, color="black", lw=0.8)
    ax.set(xlabel="decode speed relative to reference", xlim=(0.8, 1.1))
    ax.invert_yaxis()
    fig.suptitle(f"auto's gate, {doc['model']}, {doc['samples']} samples, {doc['max_new_tokens']} new tokens")
    return save(doc, out, fig)
