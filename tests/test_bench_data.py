"""Benchmark rows in every form (LLMA, prompt, chat), --offset, bad rows, and `bench --check`."""

from __future__ import annotations

import json

import pytest

from llmaccel.bench.data import DataError, load_data, load_rows
from llmaccel.cli import main


def jsonl(path, *rows) -> str:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return str(path)


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def test_forms_are_told_apart_per_row(tmp_path):
    p = jsonl(tmp_path / "mixed.jsonl",
              {"query": "why?", "docs": ["a b"], "result": {"text": "because"}},
              {"prompt": "def f(x):", "references": ["return x"]},
              {"messages": [{"role": "user", "content": "hi"}]},
              {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "q1"},
                            {"role": "assistant", "content": "a1"}, {"role": "user", "content": "q2"}],
               "references": ["r1", "r2"], "id": "extra keys are ignored"})
    llma, prompt, one_turn, chat = load_rows(p)
    assert llma.chat and llma.references == ("a b",) and llma.target == "because" and llma.one_user_turn
    assert not prompt.chat and prompt.user_message == "def f(x):" and prompt.references == ("return x",)
    assert prompt.target == "" and prompt.one_user_turn
    assert one_turn.chat and one_turn.user_message == "hi" and one_turn.one_user_turn
    assert chat.messages[0] == ("system", "be brief") and len(chat.messages) == 4 and not chat.one_user_turn
    assert chat.user_message == "q2" and chat.references == ("r1", "r2")
    assert [s.id for s in (llma, prompt, one_turn, chat)] == [0, 1, 2, 3]
    assert chat.where == "mixed.jsonl:4"


def test_offset_and_limit_select_rows_keeping_ids(tmp_path):
    p = jsonl(tmp_path / "rows.jsonl", *[{"prompt": f"p{i}"} for i in range(5)])
    (tmp_path / "blank.jsonl").write_text("\n".join(['{"prompt": "a"}', "", '{"prompt": "b"}', "  ", '{"prompt": "c"}']))
    assert [s.user_message for s in load_rows(p, limit=2, offset=1)] == ["p1", "p2"]
    assert [s.id for s in load_rows(p, offset=3)] == [3, 4]
    assert [(s.user_message, s.where) for s in load_rows(tmp_path / "blank.jsonl", offset=1)] == [
        ("b", "blank.jsonl:3"), ("c", "blank.jsonl:5")]  # blank lines are not rows; lines keep their numbers
    with pytest.raises(DataError, match="has 5 rows; --offset 5 leaves none"):
        load_rows(p, offset=5)
    assert [s.id for s in load_data("humaneval", limit=2, offset=10)] == [10, 11]
    with pytest.raises(DataError, match="--offset 164"):
        load_data("humaneval", offset=164)


@pytest.mark.parametrize("row,message", [
    ({"query": "q", "docs": "abc def"}, '"docs" must be a list of strings, not a string'),
    ({"prompt": "p", "references": "abc"}, '"references" must be a list of strings, not a string'),
    ({"prompt": "p", "references": ["ok", 3]}, '"references"[1] must be a string, not a number'),
    ({"query": 5, "docs": []}, '"query" must be a string'),
    ({"query": "q", "docs": [], "result": "text"}, '"result" must be an object'),
    ({"prompt": ""}, '"prompt" is empty'),
    ({"prompt": ["a"]}, '"prompt" must be a string, not a list'),
    ({"messages": "hi"}, '"messages" must be a list'),
    ({"messages": []}, '"messages" is empty'),
    ({"messages": [{"role": "user"}]}, '"messages"[0] must be an object with "role" and "content"'),
    ({"messages": [{"role": "user", "content": [{"type": "text"}]}]}, '"messages"[0]: "content" must be a string'),
    ({"prompt": "p", "messages": []}, 'needs exactly one of "query" (LLMA), "prompt" or "messages"; it has "prompt" and "messages"'),
    ({"text": "p"}, "it has none"),
    (["a list"], "must be a JSON object, not a list"),
    ("{not json", "not JSON"),
])
def test_bad_rows_name_file_line_and_fault(tmp_path, row, message):
    p = jsonl(tmp_path / "bad.jsonl", {"prompt": "fine"}, row)
    with pytest.raises(DataError) as exc:
        load_rows(p)
    assert f"bad.jsonl:2: " in str(exc.value) and message in str(exc.value)


def test_files_that_are_not_utf8_or_empty(tmp_path):
    p = tmp_path / "latin1.jsonl"
    p.write_bytes(b'{"prompt": "ok"}\n{"prompt": "caf\xe9"}\n')
    with pytest.raises(DataError, match=r"latin1\.jsonl:2: not UTF-8 text \(byte 32\)"):
        load_rows(p)
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(DataError, match="has no rows"):
        load_rows(tmp_path / "empty.jsonl")
    sep = tmp_path / "sep.jsonl"  # U+2028 inside a JSON string is one row, not two lines
    sep.write_text(json.dumps({"prompt": "a\u2028b"}, ensure_ascii=False) + "\n", encoding="utf-8")
    assert load_rows(sep)[0].user_message == "a\u2028b"
    bom = tmp_path / "bom.jsonl"
    bom.write_bytes(b'\xef\xbb\xbf{"prompt": "x"}\n')
    assert load_rows(bom)[0].user_message == "x"


@pytest.mark.parametrize("argv,message", [
    (["bench", "--data", "LATIN1"], "not UTF-8 text"),
    (["steps", "--data", "LATIN1"], "not UTF-8 text"),
    (["steps", "--data", "PROMPTS"], "no row has a target"),
    (["bench", "--data", "PROMPTS", "--offset", "2"], "leaves none to run"),
    (["bench", "--data", "PROMPTS", "--offset", "-1"], "--offset must be 0 or more"),
    (["bench", "--data", "PROMPTS", "--check", "--methods", "greedy,reference"], "add hf-greedy"),
    (["bench", "--data", "PROMPTS", "--check", "--sweep"], "--check is for method runs"),
    (["bench", "--data", "PROMPTS", "--methods", "greedy,greedy"], "names a method twice"),
    (["bench", "--data", "CHATS", "--sweep"], "needs a chat template"),  # sweeps template whole chats too
])
def test_user_errors_are_one_line(model_dir, capsys, tmp_path, argv, message):
    d, _ = model_dir
    files = {"LATIN1": tmp_path / "latin1.jsonl", "PROMPTS": tmp_path / "p.jsonl", "CHATS": tmp_path / "c.jsonl"}
    files["LATIN1"].write_bytes(b'{"query": "caf\xe9", "docs": []}\n')
    jsonl(files["PROMPTS"], {"prompt": "t1 t2"}, {"prompt": "t3"})
    jsonl(files["CHATS"], {"messages": [{"role": "user", "content": "t1"}, {"role": "assistant", "content": "t2"},
                                        {"role": "user", "content": "t3"}]})
    code, _, err = run(capsys, *[files.get(a, a) for a in argv], "--model", d)
    assert code == 2 and err.startswith("llmaccel: error:") and message in err and err.count("\n") == 1


@pytest.fixture(scope="module")
def chat_model_dir(model_dir, tmp_path_factory):
    """The tiny model with a chat template: each turn as `t{90 + role} content`, then `t93` to answer."""
    import shutil

    from transformers import AutoTokenizer

    d = tmp_path_factory.mktemp("tiny-chat")
    shutil.copytree(model_dir[0], d, dirs_exist_ok=True)
    tok = AutoTokenizer.from_pretrained(d)
    tok.chat_template = ("{% for m in messages %}{{ {'system': 't90', 'user': 't91', 'assistant': 't92'}[m['role']] }} "
                         "{{ m['content'] }} {% endfor %}{% if add_generation_prompt %}t93{% endif %}")
    tok.save_pretrained(d)
    return d


def test_bench_runs_prompt_and_chat_rows_and_checks(chat_model_dir, capsys, tmp_path):
    from llmaccel.bench.run import sample_prompt_ids
    from llmaccel.models import load

    rows = jsonl(tmp_path / "rows.jsonl",
                 {"prompt": "t5 t6 t7", "references": ["t5 t6 t7 t8 t9"]},
                 {"messages": [{"role": "system", "content": "t1"}, {"role": "user", "content": "t2 t3"},
                               {"role": "assistant", "content": "t4"}, {"role": "user", "content": "t5"}]},
                 {"query": "t8", "docs": ["t9"]})
    lm = load(str(chat_model_dir))
    prompts = [sample_prompt_ids(lm, s) for s in load_rows(rows)]
    assert prompts[0] == [5, 6, 7]  # plain completion: no template
    assert prompts[1] == [90, 1, 91, 2, 3, 92, 4, 91, 5, 93]  # the template over the whole conversation
    assert prompts[2][0] == 91 and prompts[2][-1] == 93
    out = tmp_path / "out.json"
    code, stdout, err = run(capsys, "bench", "--data", rows, "--model", chat_model_dir, "--max-new-tokens", 6,
                            "--methods", "hf-greedy,greedy,reference", "--check", "--json", out, "--offset", 1)
    assert code == 0, err
    doc = json.loads(out.read_text())
    assert [s["id"] for s in doc["samples"]] == [1, 2] and doc["samples"][0]["source"] == "rows.jsonl:2"
    assert doc["samples"][0]["prompt_tokens"] == 10
    assert all(s["match_rate_vs_hf_greedy"] == 1.0 for s in doc["summary"].values())


def test_check_fails_with_exit_1_naming_methods_and_rows(model_dir, capsys, tmp_path, monkeypatch):
    from llmaccel.bench import run as run_mod

    def same(ids):
        return {"token_ids": ids, "steps": 1, "prefill_s": 0.1, "decode_s": 0.1, "total_s": 0.2}

    doc = {"model": "m", "samples": [
        {"id": 0, "source": "rows.jsonl:1", "prompt_tokens": 2,
         "methods": {"hf-greedy": same([1, 2]), "reference": same([1, 3]), "llamacpp-greedy": same([4])}},
        {"id": 1, "source": "rows.jsonl:2", "prompt_tokens": 2,
         "methods": {"hf-greedy": same([5]), "reference": same([5]), "llamacpp-greedy": same([6])}}]}
    assert run_mod.differences(doc) == {"reference": ["rows.jsonl:1"]}  # llama.cpp rows do not count
    doc["summary"] = run_mod.summarise(doc["samples"], ["hf-greedy", "reference", "llamacpp-greedy"])
    monkeypatch.setattr(run_mod, "bench", lambda *a, **k: doc)
    rows = jsonl(tmp_path / "rows.jsonl", {"prompt": "t1"}, {"prompt": "t2"})
    code, stdout, err = run(capsys, "bench", "--data", rows, "--model", "model.gguf", "--check", "--methods",
                            "hf-greedy,reference", "--json", tmp_path / "out.json")
    assert code == 1 and "| reference |" in stdout
    assert "check failed: reference differs from hf-greedy on 1 of 2 rows: rows.jsonl:1" in err
