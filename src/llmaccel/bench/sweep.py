"""match_len x copy_len sweep for `reference` (the paper's Figures 4-5), timed against greedy in one run.

Each sample runs greedy and every (match_len, copy_len) setting with the guard off (the raw trade-off)
plus the default options with the guard on, interleaved per sample. The same grid is also counted by
forced decoding on the rows' `result.text` targets (no model), so both views sit side by side.
"""

from __future__ import annotations

import json
from pathlib import Path

from llmaccel.bench.data import Sample
from llmaccel.bench.run import sample_prompt_ids
from llmaccel.bench.steps import step_grid
from llmaccel.drafting.reference import ReferenceOptions
from llmaccel.engine import Decoder

MATCH_LENS = (1, 2, 3)
COPY_LENS = (4, 8, 16, 32)


class OutputsDiffer(Exception):
    """Two settings gave different tokens on one sample: a finding (a bug), not a user error."""


def timed_grid(lm, samples: list[Sample], settings: list[tuple[str, dict]], max_new_tokens: int,
               desc: str = "sweep", progress: bool = True) -> dict[str, dict]:
    """Run every setting (a name and `Decoder` keyword arguments) on every sample, the order rotated per
    sample so machine drift hits all alike. Every output must equal every other (greedy is among the
    settings, so all equal greedy: exactness is the contract). Returns per-setting totals of tokens,
    decode_s and steps."""
    from tqdm import tqdm

    totals = {name: {"tokens": 0, "decode_s": 0.0, "steps": 0} for name, _ in settings}
    inputs = [(sample_prompt_ids(lm, s), [lm.tokenizer.encode(d, add_special_tokens=False) for d in s.references])
              for s in samples]  # all prompts first: a row that cannot be one fails before any run
    bar = tqdm(total=len(samples) * len(settings), disable=not progress, desc=desc, unit="run")
    for k, (s, (prompt, refs)) in enumerate(zip(samples, inputs)):
        want = None
        for name, kwargs in settings[k % len(settings):] + settings[: k % len(settings)]:
            r = Decoder(lm, prompt, references=refs, max_new_tokens=max_new_tokens, **kwargs).run()
            if want is None:
                want = r.token_ids
            elif r.token_ids != want:
                raise OutputsDiffer(f"{name} differs from the other settings on sample {s.id}")
            t = totals[name]
            t["tokens"] += len(r.token_ids)
            t["decode_s"] += r.decode_s
            t["steps"] += r.steps
            bar.update(1)
    bar.close()
    return totals


def rates(totals: dict[str, dict]) -> dict[str, dict]:
    """Per setting: its totals plus decode tokens/s and the speedup over the "greedy" setting."""
    base = totals["greedy"]["tokens"] / totals["greedy"]["decode_s"]
    out = {}
    for name, t in totals.items():
        rate = t["tokens"] / t["decode_s"]
        out[name] = {"decode_tokens_per_s": rate, "speedup_vs_greedy": rate / base, **t}
    return out


def save(doc: dict, out: Path, fig) -> Path:
    """OUT.json and the figure beside it as PNG."""
    import matplotlib.pyplot as plt

    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1))
    png = out.with_suffix(".png")
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    plt.close(fig)
    return png


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def sweep(model_name: str, samples: list[Sample], max_new_tokens: int, data_path: str | None = None,
          match_lens=MATCH_LENS, copy_lens=COPY_LENS, progress: bool = True) -> dict:
    from llmaccel import models

    lm = models.load(model_name)
    options = [("greedy", None), ("guarded default", ReferenceOptions())]
    options += [(f"m{m}c{c}", ReferenceOptions(match_len=m, copy_len=c, adaptive=False))
                for m in match_lens for c in copy_lens]
    settings = [(name, {"method": "greedy"} if o is None else {"method": "reference", "options": o}) for name, o in options]
    measured = rates(timed_grid(lm, samples, settings, max_new_tokens, progress=progress))
    grid = [{"setting": name, "match_len": opts.match_len if opts else None,
             "copy_len": opts.copy_len if opts else None, "adaptive": bool(opts and opts.adaptive), **measured[name]}
            for name, opts in options]
    doc = {"model": model_name, "samples": len(samples), "max_new_tokens": max_new_tokens, "timed": grid}
    if data_path:
        doc["forced_steps"] = step_grid(lm.tokenizer, data_path, match_lens, copy_lens, limit=len(samples))
    return doc


def markdown_table(header: list[str], rows: list[list]) -> str:
    """A markdown table: the header, then one line per row (cells as given)."""
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows])


def table(doc: dict) -> str:
    return markdown_table(
        ["setting", "match_len", "copy_len", "decode tok/s", "speedup vs greedy", "steps", "tokens"],
        [[g["setting"], g["match_len"] or "-", g["copy_len"] or "-", f"{g['decode_tokens_per_s']:.1f}",
          f"{g['speedup_vs_greedy']:.2f}x", g["steps"], g["tokens"]] for g in doc["timed"]])


def write(doc: dict, out: Path) -> Path:
    plt = pyplot()
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
    return save(doc, out, fig)
