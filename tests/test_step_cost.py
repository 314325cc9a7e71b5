"""The step-cost table: measured once per model and machine by load(), kept, read back by later loads."""

from __future__ import annotations

import json

import pytest

import llmaccel
from llmaccel import step_cost
from llmaccel.drafting.reference import DEFAULT_STEP_COST


@pytest.fixture
def kept(tmp_path, monkeypatch):
    """Step-cost tables kept under tmp_path (the kernels stay in the usual cache)."""
    monkeypatch.setattr(step_cost, "_folders", lambda: [tmp_path / "step-cost", tmp_path / "fallback"])
    return tmp_path / "step-cost"


def test_load_measures_once_then_reads_the_kept_table(model_dir, kept, monkeypatch):
    d, _ = model_dir
    lm = llmaccel.load(str(d))
    files = list(kept.glob("*.json"))
    assert len(files) == 1 and lm.step_cost[1] == 1.0
    assert all(a <= b for a, b in zip(lm.step_cost[1:], lm.step_cost[2:]))
    doc = json.loads(files[0].read_text())
    assert doc["model"] == str(d) and set(doc["seconds"]) == {str(k) for k in step_cost.STEP_SIZES}

    def no_clock(*args, **kwargs):
        raise AssertionError("measured again")

    monkeypatch.setattr(step_cost, "measure", no_clock)
    again = llmaccel.load(str(d))
    assert again.step_cost == lm.step_cost  # read back, not measured
    given = llmaccel.load(str(d), step_cost=DEFAULT_STEP_COST)
    assert given.step_cost == DEFAULT_STEP_COST
    assert llmaccel.load(str(d), step_cost=None).step_cost is None


def test_a_broken_kept_table_is_measured_again(model_dir, kept):
    d, _ = model_dir
    lm = llmaccel.load(str(d))
    path = step_cost.table_path(lm)
    path.write_text("{not json")
    assert llmaccel.load(str(d)).step_cost[1] == 1.0
    assert json.loads(path.read_text())["seconds"]["1"] > 0  # kept anew


def test_an_unwritable_cache_keeps_the_table_in_the_temp_dir(model_dir, tmp_path, monkeypatch, caplog):
    d, _ = model_dir
    blocker = tmp_path / "file"
    blocker.write_text("")  # a folder below it cannot be made
    fallback = tmp_path / "fallback"
    monkeypatch.setattr(step_cost, "_folders", lambda: [blocker / "step-cost", fallback])
    lm = llmaccel.load(str(d))
    assert lm.step_cost[1] == 1.0 and len(list(fallback.glob("*.json"))) == 1
    monkeypatch.setattr(step_cost, "measure", lambda *a, **k: (_ for _ in ()).throw(AssertionError("measured")))
    assert llmaccel.load(str(d)).step_cost == lm.step_cost  # read back from the temp dir: the same table
    monkeypatch.undo()
    monkeypatch.setattr(step_cost, "_folders", lambda: [blocker / "a", blocker / "b"])
    assert llmaccel.load(str(d)).step_cost[1] == 1.0  # nowhere to keep it: measured, and said once
    assert "not kept" in caplog.text


def test_the_key_names_model_layout_and_machine(model_dir, kept):
    d, _ = model_dir
    fast = llmaccel.load(str(d), step_cost=None)
    plain = llmaccel.load(str(d), lean_forward=False, pack=False, step_cost=None)
    assert step_cost.table_key(fast) != step_cost.table_key(plain)
    assert step_cost.table_key(fast) == step_cost.table_key(llmaccel.load(str(d), step_cost=None))
