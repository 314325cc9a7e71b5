"""The command line on a tiny model folder: outputs equal the oracle, user errors are one clear line."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import rows_file
from llmaccel.cli import main
from oracle import oracle_greedy


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def test_generate_json_equals_oracle(model_dir, capsys, tmp_path):
    d, model = model_dir
    want = oracle_greedy(model, [1, 2, 3], 12)
    ref = tmp_path / "ref.txt"
    ref.write_text(" ".join(f"t{i}" for i in want[2:]))
    for method in ("greedy", "reference"):
        code, out, _ = run(capsys, "generate", "t1 t2 t3", "--model", d, "--max-new-tokens", 12,
                           "--method", method, "--reference", ref, "--json")
        assert code == 0
        doc = json.loads(out)
        assert doc["token_ids"] == want
        assert doc["steps"] <= 12 and set(doc) >= {"text", "prefill_s", "decode_s", "total_s"}


def test_prompt_from_file_and_stdin(model_dir, capsys, tmp_path, monkeypatch):
    import io

    d, model = model_dir
    want = oracle_greedy(model, [4, 5], 6)
    p = tmp_path / "prompt.txt"
    p.write_text("t4 t5")
    _, out, _ = run(capsys, "generate", "--prompt-file", p, "--model", d, "--max-new-tokens", 6, "--json")
    assert json.loads(out)["token_ids"] == want
    monkeypatch.setattr("sys.stdin", io.StringIO("t4 t5"))
    _, out, _ = run(capsys, "generate", "--model", d, "--max-new-tokens", 6, "--json")
    assert json.loads(out)["token_ids"] == want


@pytest.mark.parametrize(
    "args,message",
    [
        (["generate", "   "], "empty"),
        (["generate", "t1", "--max-new-tokens", "0"], "positive"),
        (["generate", "t1", "--reference", "/nonexistent/ref.txt"], "cannot read reference file"),
        (["generate", "--prompt-file", "/nonexistent/p.txt"], "cannot read prompt file"),
        (["generate", " ".join(["t1"] * 80)], "context"),
        (["bench", "--data", "/nonexistent.jsonl"], "cannot read"),
        (["bench", "--data", "DATA", "--methods", "greedy,warp"], "unknown method"),
        (["bench", "--data", "DATA", "--limit", "0"], "--limit must be positive"),
        (["generate", "t1", "--match-len", "0"], "--match-len"),
        (["generate", "t1", "--ngram", "1"], "--ngram must be at least 2"),
        (["bench", "--data", "DATA", "--window", "0"], "--window must be at least 1"),
        (["bench", "--data", "DATA", "--max-new-tokens", "-1"], "positive"),
        (["generate", "t1", "--device", "tpu"], "not a device name"),
        (["generate", "t1", "--device", "mps"], "only cpu and cuda"),
        (["cost", "--device", "cuda:99"], "cuda:99"),
        (["bench", "--data", "DATA", "--sweep", "--device", "cuda:99"], "cuda:99"),
    ],
)
def test_user_errors_are_one_line(model_dir, capsys, tmp_path, args, message):
    d, _ = model_dir
    data = rows_file(tmp_path / "rows.jsonl", [("q", ["d"], "x")])
    args = [str(data) if a == "DATA" else a for a in args]
    code, _, err = run(capsys, *args, "--model", d)
    assert code == 2
    assert message in err and err.startswith("llmaccel: error:")


def test_unknown_model_lists_aliases(capsys):
    code, _, err = run(capsys, "generate", "hello", "--model", "no-such-model")
    assert code == 2 and "smollm2-135m" in err and "gemma3-270m" in err


def test_bench_contract(model_dir, capsys, tmp_path):
    """`llmaccel bench` writes the OUT.json of the contract, and every method matches hf-greedy."""
    d, model = model_dir
    rows = rows_file(tmp_path / "rows.jsonl", [("t5 t6", ["t1 t2 t3 t4", "t3 t4 t5"], "t1 t2"),
                                               ("Summarise: t7 t8 t9", ["t7 t8 t9"], "t1 t2")])
    out = tmp_path / "out.json"
    code, stdout, _ = run(capsys, "bench", "--data", rows, "--model", d, "--max-new-tokens", 8, "--json", out,
                          "--methods", "hf-greedy,hf-pld,greedy,reference,lookahead,auto", "--window", 2)
    assert code == 0 and "| reference |" in stdout
    doc = json.loads(out.read_text())
    assert isinstance(doc["model"], str) and len(doc["samples"]) == 2
    for s in doc["samples"]:
        assert set(s) >= {"id", "prompt_tokens", "methods"}
        for m in ("hf-greedy", "hf-pld", "greedy", "reference", "lookahead", "auto"):
            assert set(s["methods"][m]) >= {"token_ids", "steps", "prefill_s", "decode_s", "total_s"}
    for m, summary in doc["summary"].items():
        assert set(summary) >= {"decode_tokens_per_s", "total_s", "steps", "tokens", "match_rate_vs_hf_greedy"}
        assert summary["match_rate_vs_hf_greedy"] == 1.0, m
    assert out.with_suffix(".png").exists()


def test_sampled_bench_and_generate(model_dir, capsys, tmp_path):
    """Sampled: every engine method equals plain sampling (--check passes), hf-sample is the baseline;
    generate prints the seed and logprobs, and the same seed gives the same tokens."""
    from llmaccel.sampling import Sampling
    from oracle import oracle_sample

    d, model = model_dir
    rows = rows_file(tmp_path / "rows.jsonl", [("t5 t6", ["t1 t2 t3 t4", "t3 t4 t5"], "t1 t2"),
                                               ("Summarise: t7 t8 t9", ["t7 t8 t9"], "t1 t2")])
    out = tmp_path / "out.json"
    code, stdout, _ = run(capsys, "bench", "--data", rows, "--model", d, "--max-new-tokens", 10, "--json", out,
                          "--temperature", 0.9, "--top-p", 0.95, "--seed", 4, "--check",
                          "--methods", "hf-sample,greedy,reference,lookahead,auto")
    assert code == 0 and "| hf-sample |" in stdout and "match plain" in stdout
    doc = json.loads(out.read_text())
    assert doc["sampling"]["temperature"] == 0.9 and doc["sampling"]["seed"] == 4
    assert all(doc["summary"][m]["match_rate_vs_plain"] == 1.0 for m in ("greedy", "reference", "lookahead", "auto"))
    sp = Sampling(temperature=0.9, top_p=0.95, seed=5)
    want = oracle_sample(model, [1, 2, 3], 12, sp, 5)
    code, out_json, err = run(capsys, "generate", "t1 t2 t3", "--model", d, "--max-new-tokens", 12, "--json",
                              "--temperature", 0.9, "--top-p", 0.95, "--seed", 5, "--logprobs", 2)
    got = json.loads(out_json)
    assert code == 0 and got["token_ids"] == want and got["seed"] == 5
    assert len(got["logprobs"]) == 12 and len(got["logprobs"][0]["top_logprobs"]) == 2
    code, _, err = run(capsys, "bench", "--data", rows, "--model", d, "--methods", "hf-sample,greedy")
    assert code == 2 and "--temperature" in err
    code, _, err = run(capsys, "generate", "t1", "--model", d, "--temperature", -1)
    assert code == 2 and "--temperature must be" in err


@pytest.mark.parametrize("flag,first_column", [("--sweep", "match_len"), ("--sweep-lookahead", "W"),
                                               ("--sweep-gate", "decode tok/s")])
def test_sweeps_write_table_json_and_plot(model_dir, capsys, tmp_path, flag, first_column):
    """The sweeps run every setting on every row (outputs checked equal inside) and write their files."""
    d, _ = model_dir
    rows = rows_file(tmp_path / "rows.jsonl", [("t5 t6 t7", ["t5 t6 t7 t8 t9"], "t8 t9")])
    out = tmp_path / "sweep.json"
    code, stdout, _ = run(capsys, "bench", flag, "--data", rows, "--model", d, "--max-new-tokens", 6, "--json", out)
    assert code == 0 and f"| setting | {first_column} |" in stdout
    doc = json.loads(out.read_text())
    assert {g["setting"] for g in doc["timed"]} >= {"greedy"}
    assert all(g["tokens"] > 0 for g in doc["timed"])
    assert out.with_suffix(".png").exists()
