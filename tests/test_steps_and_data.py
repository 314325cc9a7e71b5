"""Forced step counting (Algorithm 2), the drafting guard, and benchmark rows."""

from __future__ import annotations

import json
import random

import pytest

from llmaccel.bench.data import DataError, clean_target, load_rows, user_message
from llmaccel.drafting.reference import (
    DEFAULT_STEP_COST,
    AcceptanceTracker,
    ReferenceOptions,
    choose_draft_length,
    count_steps,
)


def test_count_steps_basic():
    target = [1, 2, 3, 4, 5, 6, 7, 8]
    assert count_steps(target, [], options=ReferenceOptions(match_len=1, copy_len=4, adaptive=False)) == 8
    # the whole target is in a reference: first token from prefill, then copies of copy_len + bonus
    ref = [9, 1, 2, 3, 4, 5, 6, 7, 8]
    assert count_steps(target, [ref], options=ReferenceOptions(match_len=1, copy_len=16, adaptive=False)) == 2
    assert count_steps(target, [ref], options=ReferenceOptions(match_len=1, copy_len=2, adaptive=False)) == 4
    assert count_steps([], [ref]) == 0


def test_count_steps_never_worse_than_greedy_and_monotone_in_copy_len():
    rng = random.Random(3)
    for _ in range(50):
        refs = [[rng.randrange(5) for _ in range(rng.randint(0, 40))] for _ in range(rng.randint(0, 3))]
        target = [rng.randrange(5) for _ in range(rng.randint(1, 40))]
        counts = [count_steps(target, refs, options=ReferenceOptions(match_len=1, copy_len=c, adaptive=False))
                  for c in (0, 1, 4, 16)]
        assert counts[0] == len(target)
        assert all(c <= len(target) for c in counts)
        assert counts == sorted(counts, reverse=True)  # longer copies never take more steps


def test_guard_skips_drafts_that_do_not_pay():
    flat = [0.0] + [1.0] * 40  # drafted tokens free: always draft everything
    assert choose_draft_length(10, 0.5, flat) == 10
    steep = [0.0] + [float(k) for k in range(1, 41)]  # a k-token step costs k: never draft
    assert choose_draft_length(10, 0.99, steep) == 0
    moderate = [0.0] + [1.0 + 0.5 * (k - 1) for k in range(1, 41)]
    assert choose_draft_length(10, 0.3, moderate) == 0  # 1.3 tokens for 1.5x the cost
    assert choose_draft_length(10, 0.9, moderate) == 3  # argmax_d (1 - .9^(d+1)) / (.1 (1 + d/2))
    assert choose_draft_length(10, 0.95, DEFAULT_STEP_COST) >= 8
    t = AcceptanceTracker()
    for _ in range(10):
        t.observe(8, 0)
    assert t.p < 0.1
    for _ in range(10):
        t.observe(8, 8)
    assert t.p > 0.9


def test_rows(tmp_path):
    rag = {"query": "why?", "docs": ["a b", "c d"], "result": {"text": "because"}}
    cnn = {"query": "Summarise: ART", "docs": ["ART"], "result": {"text": "1####summary"}}
    p = tmp_path / "rows.jsonl"
    p.write_text(json.dumps(rag) + "\n" + json.dumps(cnn) + "\n\n")
    rows = load_rows(p)
    assert rows[0].user_message == "[1] a b\n[2] c d\n\nQuestion: why?"
    assert rows[1].user_message == "Summarise: ART" and rows[1].target == "summary"
    assert len(load_rows(p, limit=1)) == 1
    assert user_message("q", []) == "\n\nQuestion: q"
    assert clean_target("plain") == "plain"
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json\n")
    with pytest.raises(DataError, match="bad.jsonl:1"):
        load_rows(bad)


def test_humaneval_problems_load_as_plain_completions():
    from llmaccel.bench.data import load_data

    rows = load_data("humaneval", limit=3)
    assert len(rows) == 3 and all(not r.chat and not r.references for r in rows)
    assert rows[0].user_message.startswith("from typing import List") and "def has_close_elements" in rows[0].user_message
    assert rows[0].target.strip().startswith("for idx")
    assert len(load_data("humaneval")) == 164


def test_step_cost_table_from_measurements():
    from llmaccel.drafting.reference import step_cost_table

    t = step_cost_table({1: 0.010, 2: 0.011, 4: 0.009, 8: 0.016}, longest=12)
    assert len(t) == 13 and t[1] == 1.0
    assert t[2] == pytest.approx(1.1) and t[3] == pytest.approx(1.1)  # interpolated
    assert t[4] == pytest.approx(1.1)  # a measured dip (a busy machine) counts as the shorter step's cost
    assert all(a <= b for a, b in zip(t[1:], t[2:]))  # never cheaper for more tokens
    assert t[6] == pytest.approx(1.35) and t[12] == pytest.approx(1.6 * 12 / 8)  # extrapolated in proportion
    # where extra tokens are dear, drafts get shorter for the same acceptance rate
    cheap = step_cost_table({1: 1.0, 16: 1.2, 32: 1.5})
    dear = step_cost_table({1: 1.0, 16: 2.4, 32: 4.0})
    assert choose_draft_length(16, 0.7, dear) < choose_draft_length(16, 0.7, cheap)
