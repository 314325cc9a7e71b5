"""Sampled bench runs in one table and one plot: speed against temperature, and the flip rate.

    .venv/bin/python benchmarks/sampling_summary.py runs/sample-*.json [--png docs/sampling-speed.png]

Each input is an OUT.json of `llmaccel bench` (greedy runs, with hf-greedy, give the temperature-0
points; sampled runs carry their "sampling" block). Per file and temperature: decode tok/s per method,
the ratio to the transformers baseline (hf-sample, or hf-greedy at temperature 0) and to plain
decoding (method greedy), the share of rows equal to plain, and the flips: a row whose tokens leave
plain's at some position counts one flip, over the tokens compared up to there (the rest of such a
row is a different text, not a fresh chance to flip).
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

ENGINE = ("greedy", "reference", "lookahead", "auto")


def flips(doc: dict, method: str) -> tuple[int, int]:
    """(flips, tokens compared) of `method` against plain decoding over the doc's rows."""
    n_flips = tokens = 0
    for row in doc["samples"]:
        a, b = row["methods"][method]["token_ids"], row["methods"]["greedy"]["token_ids"]
        same = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None)
        if same is None:
            tokens += min(len(a), len(b))
        else:
            n_flips += 1
            tokens += same + 1
    return n_flips, tokens


def rows(docs: list[tuple[str, dict]]) -> list[dict]:
    out = []
    for name, doc in docs:
        t = doc.get("sampling", {}).get("temperature", 0.0)
        summ = doc["summary"]
        base = "hf-sample" if "hf-sample" in summ else "hf-greedy"
        for m, s in summ.items():
            row = {"file": name, "T": t, "top_p": doc.get("sampling", {}).get("top_p", 1.0), "method": m,
                   "tok_s": s["decode_tokens_per_s"], "tokens": s["tokens"],
                   "vs_hf": s["decode_tokens_per_s"] / summ[base]["decode_tokens_per_s"] if base in summ else None,
                   "vs_plain": s["decode_tokens_per_s"] / summ["greedy"]["decode_tokens_per_s"] if "greedy" in summ else None,
                   "match": s.get("match_rate_vs_plain") if t > 0 else s.get("match_rate_vs_hf_greedy")}
            if m in ENGINE and m != "greedy" and "greedy" in summ:
                row["flips"] = flips(doc, m)
            out.append(row)
    return out


def table(rs: list[dict]) -> str:
    lines = ["| file | T | top_p | method | decode tok/s | vs hf | vs plain | match plain | flips / tokens |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rs:
        f = f"{r['flips'][0]} / {r['flips'][1]}" if "flips" in r else "-"
        fmt = lambda x, s="x": "-" if x is None else f"{x:.2f}{s}"
        match = "-" if r["match"] is None else f"{r['match']:.0%}"
        lines.append(f"| {r['file']} | {r['T']:g} | {r['top_p']:g} | {r['method']} | {r['tok_s']:.1f} | "
                     f"{fmt(r['vs_hf'])} | {fmt(r['vs_plain'])} | {match} | {f} |")
    return "\n".join(lines)


def plot(rs: list[dict], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = sorted({r["file"] for r in rs})
    fig, axes = plt.subplots(1, len(files), figsize=(4.2 * len(files), 3.4), squeeze=False)
    for ax, f in zip(axes[0], files):
        series = defaultdict(list)
        for r in rs:
            if r["file"] == f:
                name = "plain (method greedy)" if r["method"] == "greedy" else r["method"]
                if r["method"] in ("hf-sample", "hf-greedy") or r["method"] in ENGINE:
                    series[name].append((r["T"], r["tok_s"]))
        for name, pts in sorted(series.items()):
            pts.sort()
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=name,
                    color="#999999" if name.startswith("hf") else None, lw=2.5 if name.startswith("plain") else 1.5)
        ax.set_title(f)
        ax.set_xlabel("temperature")
        ax.set_ylabel("decode tokens/s")
        ax.set_ylim(bottom=0)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    plt.close(fig)


def _data_name(stem: str) -> str:
    parts = stem.split("-")
    return parts[1] if len(parts) >= 3 else stem


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("files", nargs="+")
    ap.add_argument("--png", default="docs/sampling-speed.png")
    args = ap.parse_args()
    # runs/<kind>-<data>-T<temperature>.json -> <data>
    docs = [(_data_name(Path(p).stem), json.loads(Path(p).read_text())) for p in args.files]
    rs = rows(docs)
    print(table(rs))
    totals = defaultdict(lambda: [0, 0])
    for r in rs:
        if "flips" in r:
            key = (r["method"], r["T"])
            totals[key][0] += r["flips"][0]
            totals[key][1] += r["flips"][1]
    for (m, t), (n, tok) in sorted(totals.items()):
        print(f"{m} T={t:g}: {n} flips in {tok} tokens ({n / tok:.2e} per token)" if tok else f"{m} T={t:g}: none")
    plot(rs, Path(args.png))
    print(f"wrote {args.png}")


if __name__ == "__main__":
    main()
