"""The answer store: finished (prompt, answer) pairs in SQLite, found again by the words of a new prompt.

A search engine that answers from a cache of past answers is one of inference-with-reference's own
scenarios: a new question close to an old one gets an answer that copies much of the old answer. Each
request's most similar past prompts (FTS5's BM25 over the prompt text) lend their answers as
references. SQLite because it is embedded, transactional and has full-text search built in: one
file, WAL mode, one transaction per entry, so a killed server loses at most the entry it was writing.

Entries are scoped: each belongs to the API key that wrote it (stored as a hash, never the key), and a
search sees its own scope's entries only. Drafting never changes an answer, but its speed would tell
one tenant what another had asked.
"""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Entry", "Store", "StoreError", "scope_of_key"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    id INTEGER PRIMARY KEY,
    scope TEXT NOT NULL,
    prompt TEXT NOT NULL,
    answer TEXT NOT NULL,
    model TEXT NOT NULL DEFAULT '',
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS entries_key ON entries(scope, prompt);
CREATE VIRTUAL TABLE IF NOT EXISTS entries_fts USING fts5(scope, prompt, content='entries', content_rowid='id');
CREATE TRIGGER IF NOT EXISTS entries_ai AFTER INSERT ON entries BEGIN
    INSERT INTO entries_fts(rowid, scope, prompt) VALUES (new.id, new.scope, new.prompt);
END;
CREATE TRIGGER IF NOT EXISTS entries_ad AFTER DELETE ON entries BEGIN
    INSERT INTO entries_fts(entries_fts, rowid, scope, prompt) VALUES ('delete', old.id, old.scope, old.prompt);
END;
"""
MAX_QUERY_TERMS = 64  # a search uses the prompt's first distinct words, up to this many
MAX_ENTRY_CHARS = 1_000_000  # a longer prompt or answer is not stored


class StoreError(Exception):
    """The store file cannot be opened or read (not a store, locked, a disk error): one line for the user."""


@dataclass(frozen=True)
class Entry:
    prompt: str
    answer: str
    scope: str = ""
    model: str = ""
    created: float = 0.0


def scope_of_key(key: str) -> str:
    """The scope an API key's entries live in: a hash, so the file never holds a key. No key: ""."""
    return hashlib.sha256(key.encode()).hexdigest()[:32] if key else ""


def _scope_term(scope: str) -> str:
    # FTS5 tokenises the scope column; a fixed token stands for "no key" so every entry has one
    return "s" + (scope or "none")


def _query(text: str) -> str | None:
    """An FTS5 query matching any of the text's words (each quoted: no FTS5 syntax from the user)."""
    seen: dict[str, None] = {}
    for w in re.findall(r"\w+", text.lower()):
        if len(seen) >= MAX_QUERY_TERMS:
            break
        seen.setdefault(w, None)
    if not seen:
        return None
    return " OR ".join(f'"{w}"' for w in seen)


class Store:
    """One SQLite file. Safe to share between threads (one connection, serialised by a lock)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=10.0, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: a killed process loses nothing committed
            self._db.executescript(SCHEMA)
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"cannot open the answer store {str(self.path)!r}: {exc}") from None
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            try:
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error:
                pass
            self._db.close()

    def add(self, prompt: str, answer: str, scope: str = "", model: str = "") -> bool:
        """Store one finished answer (its own transaction); False if it was empty, too long, or the same
        prompt and answer are already in the scope."""
        if not prompt.strip() or not answer.strip() or len(prompt) > MAX_ENTRY_CHARS or len(answer) > MAX_ENTRY_CHARS:
            return False
        term = _scope_term(scope)
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                if self._db.execute("SELECT 1 FROM entries WHERE scope = ? AND prompt = ? AND answer = ? LIMIT 1",
                                    (term, prompt, answer)).fetchone():
                    self._db.execute("COMMIT")
                    return False
                self._db.execute("INSERT INTO entries(scope, prompt, answer, model, created) VALUES (?, ?, ?, ?, ?)",
                                 (term, prompt, answer, model, time.time()))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return True

    def search(self, prompt: str, scope: str = "", k: int = 3) -> list[Entry]:
        """The `k` entries of `scope` whose prompts best match `prompt` (BM25), best first; answers that
        repeat an earlier hit's are left out."""
        q = _query(prompt)
        if q is None or k <= 0:
            return []
        match = f'scope : "{_scope_term(scope)}" AND prompt : ({q})'
        with self._lock:
            rows = self._db.execute(
                "SELECT e.prompt, e.answer, e.scope, e.model, e.created FROM entries_fts f JOIN entries e ON e.id = f.rowid "
                "WHERE entries_fts MATCH ? ORDER BY bm25(entries_fts) LIMIT ?", (match, 4 * k)).fetchall()
        out, answers = [], set()
        for p, a, s, m, c in rows:
            if a not in answers:
                answers.add(a)
                out.append(Entry(p, a, s, m, c))
        return out[:k]

    def stats(self) -> dict:
        with self._lock:
            n, scopes = self._db.execute("SELECT COUNT(*), COUNT(DISTINCT scope) FROM entries").fetchone()
            chars = self._db.execute("SELECT COALESCE(SUM(LENGTH(prompt) + LENGTH(answer)), 0) FROM entries").fetchone()[0]
        size = sum(p.stat().st_size for p in self.path.parent.glob(self.path.name + "*") if p.is_file())
        return {"path": str(self.path), "entries": n, "scopes": scopes, "text_chars": chars, "file_bytes": size}

    def export(self) -> Iterator[dict]:
        with self._lock:
            rows = self._db.execute("SELECT prompt, answer, scope, model, created FROM entries ORDER BY id").fetchall()
        for p, a, s, m, c in rows:
            yield {"prompt": p, "answer": a, "scope": s[1:] if s != "snone" else "", "model": m, "created": c}

    def import_rows(self, rows: Iterable[dict]) -> int:
        """Add exported rows (one transaction for all); returns how many. A bad row raises StoreError
        naming it, and nothing is added."""
        n = 0
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for i, row in enumerate(rows, 1):
                    if not isinstance(row, dict) or not isinstance(row.get("prompt"), str) or not isinstance(
                            row.get("answer"), str) or not isinstance(row.get("scope", ""), str):
                        raise StoreError(f"row {i}: an entry is an object with text fields prompt, answer (and scope)")
                    try:
                        created = float(row.get("created") or time.time())
                    except (TypeError, ValueError):
                        raise StoreError(f"row {i}: created must be a number (seconds since 1970)") from None
                    self._db.execute(
                        "INSERT INTO entries(scope, prompt, answer, model, created) VALUES (?, ?, ?, ?, ?)",
                        (_scope_term(row.get("scope", "")), row["prompt"], row["answer"], str(row.get("model", "")),
                         created))
                    n += 1
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return n

    def clear(self) -> int:
        with self._lock:
            n = self._db.execute("SELECT COUNT(*) FROM entries").fetchone()[0]
            self._db.execute("DELETE FROM entries")
            self._db.execute("INSERT INTO entries_fts(entries_fts) VALUES ('rebuild')")
            self._db.execute("VACUUM")
        return n


def read_jsonl(lines: Iterable[str]) -> Iterator[dict]:
    for i, line in enumerate(lines, 1):
        if line.strip():
            try:
                yield json.loads(line)
            except json.JSONDecodeError as exc:
                raise StoreError(f"line {i} is not JSON: {exc}") from None
