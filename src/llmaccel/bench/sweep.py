"""match_len x copy_len sweep for `reference` (the paper's Figures 4-5), timed against greedy in one run.

Each sample runs greedy and every (match_len, copy_len) setting with the guard off (the raw trade-off)
plus the default options with the guard on, interleaved per sample. The same grid is also counted by
forced decoding on the rows' `result.text` targets (no model), so both views sit side by side.
"""

from __future__ import annotations

import json
from pathlib import Path

from llmaccel.bench.data import Sample
from llmaccel.bench.run import prompt_ids
from llmaccel.bench.steps import step_grid
from llmaccel.drafting.reference import ReferenceOptions
from llmaccel.engine import Decoder

MATCH_LENS = (1, 2, 3)
COPY_LENS = (4, 8, 16, 32)


def sweep(model_name: str, samples: list[Sample], max_new_tokens: int, data_path: str | None = None,
          match_lens=MATCH_LENS, copy_lens=COPY_LENS, progress: bool = True) -> dict:
    from tqdm import tqdm

    from llmaccel import models

    lm = models.load(model_name)
    settings = [("greedy", None), ("guarded default", ReferenceOptions())]
    settings += [(f"m{m}c{c}", ReferenceOptions(match_len=m, copy_len=c, adaptive=False))
                 for m in match_lens for c in copy_lens]
    totals = {name: {"tokens": 0, "decode_s": 0.0, "steps": 0} for name, _ in settings}
    bar = tqdm(total=len(samples) * len(settings), disable=not progress, desc="sweep", unit="run")
    for s in samples:
        prompt = prompt_ids(lm, s.user_message, s.chat)
        refs = [lm.tokenizer.encode(d, add_special_tokens=False) for d in s.references]
        want = None
        for name, opts in settings:
            r = Decoder(lm, prompt, method="greedy" if opts is None else "reference", references=refs,
                        max_new_tokens=max_new_tokens, options=opts).run()
            if want is None:
                want = r.token_ids
            elif r.token_ids != want:
                raise AssertionError(f"{name} differs from greedy on sample {s.id}")  # exactness is the contract
            t = totals[name]
            t["tokens"] += len(r.token_ids)
            t["decode_s"] += r.decode_s
            t["steps"] += r.steps
            bar.update(1)
    bar.close()
    base = totals["greedy"]["tokens"] / totals["greedy"]["decode_s"]
    grid = []
    for name, opts in settings:
        t = totals[name]
        rate = t["tokens"] / t["decode_s"]
        grid.append({"setting": name, "match_len": opts.match_len if opts else None,
                     "copy_len": opts.copy_len if opts else None, "adaptive": bool(opts and opts.adaptive),
                     "decode_tokens_per_s": rate, "speedup_vs_greedy": rate / base, **t})
    doc = {"model": model_name, "samples": len(samples), "max_new_tokens": max_new_tokens, "timed": grid}
    if data_path:
        doc["forced_steps"] = step_grid(lm.tokenizer, data_path, match_lens, copy_lens, limit=len(samples))
    return doc


def table(doc: dict) -> str:
    lines = ["| setting | match_len | copy_len | decode tok/s | speedup vs greedy | steps | tokens |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for g in doc["timed"]:
        lines.append(f"| {g['setting']} | {g['match_len'] or '-'} | {g['copy_len'] or '-'} | "
                     f"{g['decode_tokens_per_s']:.1f} | {g['speedup_vs_greedy']:.2f}x | {g['steps']} | {g['tokens']} |")
    return "\n".join(lines)


def write(doc: dict, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1))
    fig, axes = plt.subplots(1, 2 if "forced_steps" in doc else 1, figsize=(10, 3.8), squeeze=False)
    ax = axes[0][0]
    for m in sorted({g["match_len"] for g in doc["timed"] if g["match_len"] and not g["adaptive"]}):
        pts = [(g["copy_len"], g["speedup_vs_greedy"]) for g in doc["timed"] if g["match_len"] == m and not g["adaptive"]]
        ax.plot(*zip(*pts), marker="o", label=f"match_len={m}")
    ax.axhline(1.0, color="black", lw=0.8)
    ax.set_xscale("log", base=2)
    ax.set(xlabel="copy_len", ylabel="decode speedup vs greedy", title="timed (guard off)")
    ax.legend()
    if "forced_steps" in doc:
        ax = axes[0][1]
        for m in sorted({r["match_len"] for r in doc["forced_steps"]}):
            pts = [(r["copy_len"], r["step_ratio"]) for r in doc["forced_steps"] if r["match_len"] == m]
            ax.plot(*zip(*pts), marker="o", label=f"match_len={m}")
        ax.set_xscale("log", base=2)
        ax.set(xlabel="copy_len", ylabel="greedy steps / reference steps", title="forced decoding on result.text")
        ax.legend()
    fig.suptitle(f"{doc['model']}, {doc['samples']} samples, {doc['max_new_tokens']} new tokens")
    fig.tight_layout()
    png = out.with_suffix(".png")
    fig.savefig(png, dpi=120)
    plt.close(fig)
    return png
