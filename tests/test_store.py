"""The answer store (server/store.py): search by a prompt's words within one scope, export/import,
clear, bad input, the command line, and durability when the writing process is killed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from llmaccel.cli import main
from llmaccel.server.store import Store, StoreError, scope_of_key


def test_search_finds_similar_prompts_within_a_scope(tmp_path):
    s = Store(tmp_path / "a.sqlite3")
    a, b = scope_of_key("key-a-123456"), scope_of_key("key-b-123456")
    assert a != b and "key" not in a
    s.add("where does animal insulin come from", "from pigs or cows", a)
    s.add("how tall is the eiffel tower", "about 330 metres", a)
    s.add("where does animal insulin come from", "B's answer", b)
    hits = s.search("animal insulin: where does it come from?", a, k=3)
    assert [h.answer for h in hits][0] == "from pigs or cows" and "B's answer" not in [h.answer for h in hits]
    assert [h.answer for h in s.search("insulin", b)] == ["B's answer"]
    assert s.search("insulin", "") == []  # no key: its own scope, empty here
    assert s.search('"; DROP TABLE entries; -- AND OR NEAR(', a) == []  # no FTS5 syntax from the user
    assert s.search("", a) == [] and s.search("insulin", a, k=0) == []
    assert not s.add("", "x") and not s.add("x", "  ")
    assert not s.add("how tall is the eiffel tower", "about 330 metres", a)  # already there
    assert s.stats()["entries"] == 3 and s.stats()["scopes"] == 2
    s.close()


def test_export_import_clear_round_trip(tmp_path):
    s = Store(tmp_path / "a.sqlite3")
    s.add("q one", "answer one", scope_of_key("k-123456789"), "m")
    s.add("q two", "answer two")
    rows = list(s.export())
    t = Store(tmp_path / "b.sqlite3")
    assert t.import_rows(rows) == 2
    assert [(r["prompt"], r["answer"], r["scope"]) for r in t.export()] == [(r["prompt"], r["answer"], r["scope"]) for r in rows]
    assert [h.answer for h in t.search("one", scope_of_key("k-123456789"))] == ["answer one"]
    with pytest.raises(StoreError, match="row 2"):
        t.import_rows([{"prompt": "p", "answer": "a"}, {"prompt": 5, "answer": "a"}])
    assert t.stats()["entries"] == 2  # the bad import added nothing
    assert t.clear() == 2 and t.stats()["entries"] == 0 and t.search("one", scope_of_key("k-123456789")) == []
    s.close(), t.close()


def test_not_a_store_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.sqlite3"
    bad.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match="cannot open"):
        Store(bad)


def test_store_command(tmp_path, capsys):
    path = str(tmp_path / "s.sqlite3")
    s = Store(path)
    s.add("q one", "answer one")
    s.close()
    assert main(["store", "stats", "--store", path]) == 0
    assert json.loads(capsys.readouterr().out)["entries"] == 1
    out = tmp_path / "dump.jsonl"
    assert main(["store", "export", "--store", path, "--out", str(out)]) == 0
    assert main(["store", "import", str(out), "--store", path]) == 0
    assert "imported 1" in capsys.readouterr().out
    (tmp_path / "broken.jsonl").write_text('{"prompt": "p", "answer": "a"}\nnot json\n')
    assert main(["store", "import", str(tmp_path / "broken.jsonl"), "--store", path]) == 2
    assert "line 2" in capsys.readouterr().err
    assert main(["store", "clear", "--store", path]) == 0
    assert "deleted 2" in capsys.readouterr().out
    assert main(["store", "stats", "--store", str(tmp_path / "missing.sqlite3")]) == 2


WRITER = textwrap.dedent("""
    import sys
    from llmaccel.server.store import Store
    s = Store(sys.argv[1])
    for i in range(100000):
        s.add(f"prompt {i}", f"answer {i}")
        print(i, flush=True)  # acknowledged: committed before this line
""")


def test_entries_survive_sigkill(tmp_path):
    """A process killed while writing: the store opens, and every entry it acknowledged is there."""
    path = str(tmp_path / "k.sqlite3")
    p = subprocess.Popen([sys.executable, "-c", WRITER, path], stdout=subprocess.PIPE, text=True)
    acked = -1
    for line in p.stdout:
        acked = int(line)
        if acked >= 300:
            break
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    s = Store(path)
    prompts = {r["prompt"] for r in s.export()}
    assert all(f"prompt {i}" in prompts for i in range(acked + 1))
    assert s.search("prompt 17")[0].answer == "answer 17"
    s.close()
