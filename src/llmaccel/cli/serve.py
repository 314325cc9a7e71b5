"""`llmaccel serve`: the OpenAI-compatible server (server/)."""

from __future__ import annotations

import os

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
    s.set_defaults(func=cmd_serve)


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
    if args.max_queue < 1 or args.max_tokens < 1 or args.time_limit <= 0:
        raise UserError("--max-queue and --max-tokens must be at least 1, --time-limit above 0")
    keys = api_keys(args)
    lm = llmaccel.load(args.model, device=device(args))
    config = ServerConfig(api_keys=keys, max_queue=args.max_queue,
                          limits=Limits(max_tokens=args.max_tokens, time_limit_s=args.time_limit))
    print(f"llmaccel: serving {lm.name} on http://{args.host}:{args.port}/v1"
          f" ({'API key required' if keys else 'no API key'})", flush=True)
    uvicorn.run(create_app(lm, config), host=args.host, port=args.port, log_level="warning",
                timeout_graceful_shutdown=int(config.shutdown_grace_s) + 5)
    return 0
