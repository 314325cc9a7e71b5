"""Forced-decoding step tables (the LLMA paper's step columns): no model forward, only the tokenizer."""

from __future__ import annotations

from pathlib import Path

from llmaccel.bench.data import DataError, load_rows
from llmaccel.drafting.reference import ReferenceOptions, count_steps


def file_steps(tokenizer, path: str | Path, options: ReferenceOptions, limit: int | None = None) -> dict:
    """Sum over a file's rows of target tokens (= greedy steps) and `reference` steps. Only LLMA rows
    have a target (result.text); a file without any is a DataError."""
    tokens = steps = 0
    rows = load_rows(path, limit)
    if not any(s.target for s in rows):
        raise DataError(f"{path}: no row has a target (an LLMA row's result.text) to count forced steps for")
    for s in rows:
        target = tokenizer.encode(s.target, add_special_tokens=False)
        refs = [tokenizer.encode(d, add_special_tokens=False) for d in s.references]
        tokens += len(target)
        steps += count_steps(target, refs, options=options)
    return {"file": Path(path).name, "tokens": tokens, "greedy_steps": tokens, "reference_steps": steps,
            "step_ratio": tokens / steps if steps else float("nan")}


def step_grid(tokenizer, path, match_lens, copy_lens, limit=None) -> list[dict]:
    rows = []
    for m in match_lens:
        for c in copy_lens:
            r = file_steps(tokenizer, path, ReferenceOptions(match_len=m, copy_len=c, adaptive=False), limit)
            rows.append({"match_len": m, "copy_len": c, **r})
    return rows


def step_table(model: str, paths: list[str], limit: int | None = None,
               match_lens=(1, 2, 3), copy_lens=(4, 8, 16, 32)) -> str:
    from llmaccel.models import load_tokenizer

    tok = load_tokenizer(model)
    lines = ["| file | match_len | copy_len | target tokens (greedy steps) | reference steps | step ratio |",
             "| --- | --- | --- | --- | --- | --- |"]
    for p in paths:
        for r in step_grid(tok, p, match_lens, copy_lens, limit):
            lines.append(f"| {r['file']} | {r['match_len']} | {r['copy_len']} | {r['tokens']} | "
                         f"{r['reference_steps']} | {r['step_ratio']:.2f}x |")
    return "\n".join(lines)
