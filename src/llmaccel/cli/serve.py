"""`llmaccel serve`: the OpenAI-compatible server (server/)."""

from __future__ import annotations

import importlib.util
import os
import signal
import threading
from pathlib import Path

from llmaccel.cli.options import UserError, add_device, add_model, device, read_text

API_KEY_ENV = "LLMACCEL_API_KEY"  # as vLLM's VLLM_API_KEY


def add_parsers(sub) -> None:
    s = sub.add_parser("serve", help="an OpenAI-compatible HTTP server (chat, completions, references, predictions)",
                       description="Serve one model over OpenAI's API. Binds 127.0.0.1 unless --host says "
                                   f"otherwise; with --api-key, --api-key-file or ${API_KEY_ENV}, /v1 needs "
                                   "'Authorization: Bearer KEY'.")
    add_model(s)
    add_device(s)
    s.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--api-key", action="append", default=[], metavar="KEY", help="a key clients must send (repeatable)")
    s.add_argument("--api-key-file", metavar="FILE", help="keys, one per line")
    s.add_argument("--max-queue", type=int, default=16, help="requests that may wait; past it, 429 (default 16)")
    s.add_argument("--max-tokens", type=int, default=4096, help="most tokens one answer may ask for (default 4096)")
    s.add_argument("--time-limit", type=float, default=600.0, metavar="S",
                   help="seconds one generation may run; then it ends with finish_reason length (default 600)")
    s.add_argument("--store", metavar="PATH", help="the answer store (SQLite; default: store.sqlite3 in the cache folder)")
    s.add_argument("--no-store", action="store_true", help="neither store answers nor draft from past ones")
    s.add_argument("--store-top-k", type=int, default=3, metavar="K",
                   help="past answers (of the most similar past prompts) drafted from per request (default 3)")
    s.add_argument("--prompt-cache-mb", type=int, default=1024, metavar="MB",
                   help="memory for recent sequences' KV entries, so a prompt that begins like one of them "
                        "prefills only the rest (default 1024; 0: off)")
    s.set_defaults(func=cmd_serve)

    b = sub.add_parser("bench-serve", help="the server's scenarios (RAG, Predicted Outputs, past answers, multi-turn) "
                                           "through HTTP: auto vs greedy, answers compared",
                       description="Starts a server on a loopback port (or uses --url) and runs each scenario's "
                                   "requests twice, interleaved: method greedy and method auto with the "
                                   "scenario's drafts. Needs the openai package (the dev extra).")
    add_model(b)
    b.add_argument("--scenario", action="append", choices=["rag", "predict", "cache", "multiturn", "overhead", "all"],
                   help="repeatable; default all")
    b.add_argument("--limit", type=int, default=20, help="rows per scenario (default 20)")
    b.add_argument("--max-new-tokens", type=int, default=128)
    b.add_argument("--url", help="a running llmaccel server instead of a new one (the overhead scenario needs none)")
    b.add_argument("--api-key", default="", help="for --url")
    b.add_argument("--json", metavar="OUT", help="write the summary and every request's figures here")
    b.set_defaults(func=cmd_bench_serve)

    st = sub.add_parser("store", help="inspect or manage the server's answer store",
                        description="stats: what the store holds; export: every entry as JSON lines (stdout or "
                                    "--out); import FILE: add exported entries; clear: delete every entry.")
    st.add_argument("action", choices=["stats", "export", "import", "clear"])
    st.add_argument("file", nargs="?", help="for import: a JSON-lines file (- for standard input)")
    st.add_argument("--store", metavar="PATH", help="the store file (default: store.sqlite3 in the cache folder)")
    st.add_argument("--out", metavar="FILE", help="for export: write here instead of standard output")
    st.set_defaults(func=cmd_store)


def store_path(args) -> str:
    from llmaccel.paths import cache_dir

    return args.store or str(cache_dir() / "store.sqlite3")


def open_store(path: str):
    from llmaccel.server.store import Store, StoreError

    try:
        return Store(path)
    except StoreError as exc:
        raise UserError(str(exc)) from None


def cmd_store(args) -> int:
    import json
    import sys

    from llmaccel.server.store import StoreError, read_jsonl

    path = store_path(args)
    if args.action != "import" and args.file:
        raise UserError(f"store {args.action} takes no file argument")
    if args.action in ("stats", "export", "clear") and args.store and not os.path.exists(path):
        raise UserError(f"no answer store at {path!r}")
    store = open_store(path)
    try:
        if args.action == "stats":
            print(json.dumps(store.stats(), indent=2))
        elif args.action == "export":
            out = open(args.out, "w", encoding="utf-8") if args.out else sys.stdout
            try:
                for row in store.export():
                    out.write(json.dumps(row, ensure_ascii=False) + "\n")
            finally:
                if args.out:
                    out.close()
        elif args.action == "import":
            if not args.file:
                raise UserError("store import needs a file of exported entries (JSON lines; - for standard input)")
            text = sys.stdin.read() if args.file == "-" else read_text(args.file, "the import file")
            try:
                n = store.import_rows(read_jsonl(text.splitlines()))
            except StoreError as exc:
                raise UserError(f"{args.file}: {exc}; nothing was imported") from None
            print(f"imported {n} entries into {path}")
        else:
            print(f"deleted {store.clear()} entries from {path}")
    finally:
        store.close()
    return 0


def api_keys(args) -> list[str]:
    keys = list(args.api_key)
    if args.api_key_file:
        keys += [line.strip() for line in read_text(args.api_key_file, "the API key file").splitlines() if line.strip()]
    if not keys and os.environ.get(API_KEY_ENV, "").strip():
        keys.append(os.environ[API_KEY_ENV].strip())
    if any(len(k) < 8 for k in keys):
        raise UserError("an API key must have at least 8 characters")
    return keys


def cmd_serve(args) -> int:
    import uvicorn

    import llmaccel
    from llmaccel.server import ServerConfig, create_app
    from llmaccel.server.protocol import Limits

    if not 0 < args.port < 65536:
        raise UserError(f"--port must be 1..65535, got {args.port}")
    if args.max_queue < 1 or args.max_tokens < 1 or args.time_limit <= 0 or args.store_top_k < 0:
        raise UserError("--max-queue and --max-tokens must be at least 1, --time-limit above 0, --store-top-k >= 0")
    if args.no_store and args.store:
        raise UserError("--store and --no-store contradict each other")
    keys = api_keys(args)
    store = None if args.no_store else open_store(store_path(args))
    lm = llmaccel.load(args.model, device=device(args))
    if args.prompt_cache_mb < 0:
        raise UserError(f"--prompt-cache-mb must be 0 (off) or more, got {args.prompt_cache_mb}")
    prompt_cache = llmaccel.PromptCache(args.prompt_cache_mb << 20) if args.prompt_cache_mb else None
    config = ServerConfig(api_keys=keys, max_queue=args.max_queue, store=store, store_top_k=args.store_top_k,
                          prompt_cache=prompt_cache, worker_thread=False,
                          limits=Limits(max_tokens=args.max_tokens, time_limit_s=args.time_limit))
    print(f"llmaccel: serving {lm.name} on http://{args.host}:{args.port}/v1"
          f" ({'API key required' if keys else 'no API key'};"
          f" {'no answer store' if store is None else 'answer store ' + str(store.path)})", flush=True)
    app = create_app(lm, config)
    server = uvicorn.Server(uvicorn.Config(app, host=args.host, port=args.port, log_level="warning",
                                           timeout_graceful_shutdown=int(config.shutdown_grace_s) + 5))
    # HTTP on a second thread, the model's steps on this one (the thread that loaded it: worker.run says
    # why); SIGTERM and Ctrl-C ask the server to shut down gracefully, which then stops the worker.
    http = threading.Thread(target=server.run, name="llmaccel-http", daemon=True)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: setattr(server, "should_exit", True))
    http.start()
    app.state.worker.run(until=http.is_alive)
    http.join(timeout=config.shutdown_grace_s + 10)
    if not server.started:
        raise UserError(f"could not listen on {args.host}:{args.port} (is the port in use?)")
    return 0


def cmd_bench_serve(args) -> int:
    import json

    import llmaccel
    from llmaccel.bench import serve as bench

    if importlib.util.find_spec("openai") is None:
        raise UserError("bench-serve needs the openai package: pip install openai (or make setup, the dev extra)")
    if args.limit < 1 or args.max_new_tokens < 1:
        raise UserError("--limit and --max-new-tokens must be at least 1")
    chosen = args.scenario or ["all"]
    scenarios = list(bench.SCENARIOS) if "all" in chosen else list(dict.fromkeys(chosen))
    if args.url and "overhead" in scenarios:
        raise UserError("the overhead scenario compares against the model in this process: drop --url or the scenario")
    lm = llmaccel.load(args.model)
    summary, calls = bench.run(lm, scenarios, args.limit, args.max_new_tokens, url=args.url, api_key=args.api_key)
    print(bench.report(summary))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"model": lm.name, "limit": args.limit,
                                               "max_new_tokens": args.max_new_tokens, "summary": summary,
                                               "calls": bench.calls_json(calls)}, indent=1))
    return 0
