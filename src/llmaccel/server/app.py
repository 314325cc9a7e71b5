"""The HTTP layer: FastAPI routes in OpenAI's shapes over the worker (worker.py).

    /v1/chat/completions, /v1/completions   generate (streamed as server-sent events with "stream": true)
    /v1/models                              the one model served
    /health, /metrics                       liveness; Prometheus text (no key needed, as vLLM's)
    /                                       the playground page (playground.html; it asks for the key)

Every answer other than 200 has OpenAI's error shape ({"error": {"message", "type", "param", "code"}}),
and no client input reaches a 500: bad input is an ApiError raised before the job is queued.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from llmaccel.prompt_cache import PromptCache
from llmaccel.server.metrics import Metrics
from llmaccel.server.protocol import (PREDICTION, STORE, ApiError, ChatRequest, CompletionRequest, Limits, chat_job,
                                      completion_job, parse_body)
from llmaccel.server.store import Store, scope_of_key
from llmaccel.server.text import TextStream, answer_text
from llmaccel.server.worker import Ticket, Worker

log = logging.getLogger(__name__)

__all__ = ["ServerConfig", "create_app"]


@dataclass
class ServerConfig:
    api_keys: Sequence[str] = ()  # empty: no key needed
    limits: Limits = field(default_factory=Limits)
    max_queue: int = 16  # requests waiting beyond the running one; past it, 429
    shutdown_grace_s: float = 10.0  # a running generation's time to finish on shutdown
    store: Store | None = None  # past answers to draft from (closed with the app); None: none
    store_top_k: int = 3  # past answers drafted from per request
    prompt_cache: PromptCache | None = None  # recent sequences' KV entries; None: every prompt prefilled in full
    worker_thread: bool = True  # False: the caller runs app.state.worker.run() (serve: on the loading thread)


class _Hooks:
    """What the worker calls around each job, on its thread: the store's answers join the references
    before; after, the answer is stored and the metrics take its figures."""

    def __init__(self, lm, metrics: Metrics, store: Store | None, top_k: int) -> None:
        self.lm, self.metrics, self.store, self.top_k = lm, metrics, store, top_k
        self.prefill_s_per_token: float | None = None  # of cold prefills, for the prompt cache's saving

    def before(self, ticket: Ticket) -> None:
        job = ticket.job
        if self.store is None or job.method == "greedy" or not job.prompt_text.strip():
            return
        try:
            entries = self.store.search(job.prompt_text, ticket.scope, self.top_k)
        except sqlite3.Error as exc:  # the store helps speed only: a request goes on without it
            log.warning("answer store search failed: %s", exc)
            return
        for entry in entries:
            job.references.append(self.lm.tokenizer.encode(entry.answer, add_special_tokens=False))
            job.reference_sources.append(STORE)
            ticket.store_hits += 1

    def after(self, ticket: Ticket, result) -> None:
        if result.cached_prompt_tokens == 0 and result.prompt_tokens > 0:
            per = result.prefill_s / result.prompt_tokens
            old = self.prefill_s_per_token
            self.prefill_s_per_token = per if old is None else 0.8 * old + 0.2 * per
        ticket.prefill_saved_s = result.cached_prompt_tokens * (self.prefill_s_per_token or 0.0)
        self.metrics.record(ticket, result, ticket.prefill_saved_s)
        job = ticket.job
        if self.store is not None and job.store and result.stop_reason not in (None, "cancelled", "time"):
            try:
                self.store.add(job.prompt_text, answer_text(self.lm.decode, job.stop, result.token_ids), ticket.scope,
                               self.lm.name)
            except sqlite3.Error as exc:
                log.warning("answer store write failed: %s", exc)


def source_pieces(text: TextStream, tokens: list[int], sources: list[str | None]) -> list[tuple[str, str | None]]:
    """A step's new text, split where the source of its tokens changes: [(text, source)], source None
    for the model's own token (the bonus), else the draft source the tokens were accepted from."""
    pieces: list[tuple[str, str | None]] = []
    run: list[int] = []
    for i, t in enumerate(tokens):
        run.append(t)
        src = sources[i] if i < len(sources) else None
        nxt = sources[i + 1] if i + 1 < len(tokens) and i + 1 < len(sources) else object()
        if nxt != src:
            delta = text.push(run)
            if delta:
                pieces.append((delta, src))
            run = []
    return pieces


def finish_reason(stop_reason: str | None) -> str:
    return "stop" if stop_reason in ("eos", "stop_string") else "length"


def stats(ticket: Ticket, result) -> dict:
    """The response's `llmaccel` object: how the answer was made."""
    n = len(result.token_ids)
    return {
        "method": result.method,
        "steps": result.steps,
        "tokens_per_step": round(n / result.steps, 3) if result.steps else 0.0,
        "drafted": result.drafted_by_source(),
        "accepted": result.accepted_by_source(),
        "store_hits": ticket.store_hits,
        "queue_s": round((ticket.started or ticket.enqueued) - ticket.enqueued, 6),
        "time_to_first_token_s": round(ticket.first_token - ticket.enqueued, 6) if ticket.first_token else None,
        "prefill_s": round(result.prefill_s, 6),
        "cached_prompt_tokens": result.cached_prompt_tokens,
        "prefill_saved_s": round(ticket.prefill_saved_s, 6),
        "decode_s": round(result.decode_s, 6),
        "stop_reason": result.stop_reason,
        "seed": result.seed,
    }


def usage(result) -> dict:
    drafted = result.drafted_by_source().get(PREDICTION, 0)
    accepted = result.accepted_by_source().get(PREDICTION, 0)
    n = len(result.token_ids)
    return {"prompt_tokens": result.prompt_tokens, "completion_tokens": n, "total_tokens": result.prompt_tokens + n,
            "prompt_tokens_details": {"cached_tokens": result.cached_prompt_tokens},
            "completion_tokens_details": {"accepted_prediction_tokens": accepted,
                                          "rejected_prediction_tokens": drafted - accepted}}


def _token_text(lm, t: int) -> str:
    return lm.tokenizer.decode([t])


def chat_logprobs(lm, lps) -> dict:
    def entry(t, lp):
        s = _token_text(lm, t)
        return {"token": s, "logprob": lp, "bytes": list(s.encode())}
    return {"content": [{**entry(x.token, x.logprob), "top_logprobs": [entry(t, lp) for t, lp in x.top]} for x in lps]}


def completion_logprobs(lm, lps, offset: int = 0) -> dict:
    tokens = [_token_text(lm, x.token) for x in lps]
    offsets, at = [], offset
    for s in tokens:
        offsets.append(at)
        at += len(s)
    return {"tokens": tokens, "token_logprobs": [x.logprob for x in lps],
            "top_logprobs": [{_token_text(lm, t): lp for t, lp in x.top} for x in lps], "text_offset": offsets}


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with a 413 past `limit` bytes before it is all read."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"the request body has {int(declared):,} bytes; at most {limit:,} are accepted")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"the request body exceeds {limit:,} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def _watch_disconnect(request: Request, ticket: Ticket) -> None:
    while not ticket.cancelled.is_set():
        if await request.is_disconnected():
            ticket.cancel()
            return
        await asyncio.sleep(0.2)


def create_app(lm, config: ServerConfig | None = None) -> FastAPI:
    """The app serving `lm` (a LoadedModel). The worker thread starts and stops with the app's lifespan."""
    config = config or ServerConfig()
    metrics = Metrics()
    hooks = _Hooks(lm, metrics, config.store, config.store_top_k)
    worker = Worker(lm, max_queue=config.max_queue, time_limit_s=config.limits.time_limit_s, hooks=hooks,
                    prompt_cache=config.prompt_cache)
    if config.prompt_cache is not None:
        metrics.watch_prompt_cache(config.prompt_cache)
    metrics.queue.set_function(worker.queue_length)
    metrics.running.set_function(lambda: 0 if worker.running is None else 1)
    keys = [k.encode() for k in config.api_keys]
    created = int(time.time())

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if config.worker_thread:
            worker.start()
        yield
        await run_in_threadpool(worker.stop, config.shutdown_grace_s)
        if config.store is not None:
            config.store.close()

    app = FastAPI(title="llmaccel", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.worker, app.state.metrics, app.state.lm = worker, metrics, lm

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        return JSONResponse(ApiError(400, "invalid request").body(), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        msg = {404: f"no such endpoint: {request.method} {request.url.path}",
               405: f"{request.method} is not allowed on {request.url.path}"}.get(exc.status_code, str(exc.detail))
        return JSONResponse(ApiError(exc.status_code, msg).body(), status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception):
        log.exception("unhandled error")
        return JSONResponse(ApiError(500, "internal error; see the server's log", type="server_error").body(),
                            status_code=500)

    @app.middleware("http")
    async def _count(request: Request, call_next):
        response = await call_next(request)
        path = request.url.path
        endpoint = path if path in ("/v1/chat/completions", "/v1/completions", "/v1/models", "/health",
                                    "/metrics", "/") else "other"
        metrics.requests.labels(endpoint, str(response.status_code)).inc()
        return response

    def scope_of(request: Request) -> str:
        """The tenant of a request (the hash of its API key; "" when no keys are configured), or a 401
        without a valid key."""
        if not keys:
            return ""
        auth = request.headers.get("authorization", "")
        given = auth[7:].strip().encode() if auth[:7].lower() == "bearer " else b""
        ok = False
        for k in keys:  # every key compared, in constant time each: the timing says nothing about which
            ok |= hmac.compare_digest(given, k)
        if not ok:
            raise ApiError(401, "a valid API key is needed: send it as 'Authorization: Bearer KEY'",
                           code="invalid_api_key")
        return scope_of_key(given.decode())

    playground = (Path(__file__).parent / "playground.html").read_text(encoding="utf-8")

    @app.get("/")
    async def page():
        """The playground: a chat with references and a prediction, each token coloured by its source."""
        return HTMLResponse(playground)

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": lm.name, "queue": worker.queue_length(), "running": worker.running is not None}

    @app.get("/metrics")
    async def metrics_text():
        return Response(metrics.text(), media_type="text/plain; version=0.0.4; charset=utf-8")

    def model_card() -> dict:
        return {"id": lm.name, "object": "model", "created": created, "owned_by": "llmaccel",
                "max_model_len": lm.max_context}

    @app.get("/v1/models")
    async def models(request: Request):
        scope_of(request)
        return {"object": "list", "data": [model_card()]}

    @app.get("/v1/models/{name:path}")
    async def model(name: str, request: Request):
        scope_of(request)
        if name != lm.name:
            raise ApiError(404, f"the model {name!r} does not exist; this server serves {lm.name!r}",
                           code="model_not_found")
        return model_card()

    async def start(request: Request, parse, make_job) -> Ticket:
        """Checks, queues and waits for the job to start (or fail): errors are answered before any stream."""
        scope = scope_of(request)
        raw = await read_body(request, config.limits.max_body_bytes)
        req = parse_body(raw, parse, config.limits)
        job = await run_in_threadpool(make_job, req, lm, config.limits)
        ticket = Ticket(job, asyncio.get_running_loop(), scope)
        worker.submit(ticket)
        watcher = asyncio.create_task(_watch_disconnect(request, ticket))
        try:
            kind, value = await ticket.next()
        finally:
            watcher.cancel()
        if kind == "error":
            raise value
        return ticket

    async def collect(request: Request, ticket: Ticket):
        """A non-streamed job's logprobs and result."""
        watcher = asyncio.create_task(_watch_disconnect(request, ticket))
        lps = []
        try:
            while True:
                kind, value = await ticket.next()
                if kind == "step":
                    lps += value.logprobs or []
                elif kind == "done":
                    return lps, value
                elif kind == "error":
                    raise value
        finally:
            watcher.cancel()

    async def answer(request: Request, ticket: Ticket, rid: str, obj: str, choice) -> dict:
        """The whole answer of a non-streamed request; `choice(text, logprobs)` makes the choice's
        content fields (chat's message, completions' text)."""
        lps, result = await collect(request, ticket)
        text = answer_text(lm.decode, ticket.job.stop, result.token_ids)
        return {"id": rid, "object": obj, "created": int(time.time()), "model": lm.name,
                "choices": [{"index": 0, **choice(text, lps if ticket.job.logprobs is not None else None),
                             "finish_reason": finish_reason(result.stop_reason)}],
                "usage": usage(result), "llmaccel": stats(ticket, result)}

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        ticket = await start(request, ChatRequest, chat_job)
        rid = f"chatcmpl-{uuid.uuid4().hex}"
        if ticket.job.stream:
            head = {"id": rid, "object": "chat.completion.chunk", "created": int(time.time()), "model": lm.name}
            return StreamingResponse(_stream(ticket, head, chat=True), media_type="text/event-stream")
        return await answer(request, ticket, rid, "chat.completion", lambda text, lps: {
            "message": {"role": "assistant", "content": text},
            "logprobs": chat_logprobs(lm, lps) if lps is not None else None})

    @app.post("/v1/completions")
    async def completions(request: Request):
        ticket = await start(request, CompletionRequest, completion_job)
        rid = f"cmpl-{uuid.uuid4().hex}"
        if ticket.job.stream:
            head = {"id": rid, "object": "text_completion", "created": int(time.time()), "model": lm.name}
            return StreamingResponse(_stream(ticket, head, chat=False), media_type="text/event-stream")
        return await answer(request, ticket, rid, "text_completion", lambda text, lps: {
            "text": text, "logprobs": completion_logprobs(lm, lps) if lps is not None else None})

    def sse(obj) -> str:
        return f"data: {json.dumps(obj, separators=(',', ':'))}\n\n"

    async def _events(ticket: Ticket) -> AsyncIterator[tuple]:
        """The job's steps, then its result; cancels the job if the client goes away."""
        try:
            while True:
                kind, value = await ticket.next()
                if kind == "error":
                    raise value
                yield kind, value
                if kind == "done":
                    return
        finally:
            ticket.cancel()  # a no-op once done; stops the generation if the client left

    async def _stream(ticket: Ticket, head: dict, chat: bool) -> AsyncIterator[str]:
        """A streamed answer as server-sent events: chat.completion.chunk or text_completion objects, the
        last one with finish_reason and the llmaccel object, then usage if asked, then [DONE]."""
        job = ticket.job
        to_logprobs = chat_logprobs if chat else completion_logprobs

        def chunk(delta: str, finish=None, logprobs=None, **extra) -> str:
            content = {"delta": {"content": delta} if delta else {}} if chat else {"text": delta}
            return sse({**head, "choices": [{"index": 0, **content, "logprobs": logprobs, "finish_reason": finish}],
                        **extra})

        text = TextStream(lm.decode, job.stop)
        if chat:
            yield sse({**head, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                            "logprobs": None, "finish_reason": None}]})
        try:
            async for kind, value in _events(ticket):
                if kind == "step":
                    pieces = source_pieces(text, value.new_tokens, value.sources)
                    delta = "".join(p for p, _ in pieces)
                    lp = to_logprobs(lm, value.logprobs) if job.logprobs is not None else None
                    if delta or lp:  # llmaccel.pieces: the delta by source (None: the model's own token)
                        yield chunk(delta, logprobs=lp, llmaccel={"pieces": pieces})
                else:
                    rest = text.finish()
                    if rest:
                        yield chunk(rest)
                    yield chunk("", finish=finish_reason(value.stop_reason), llmaccel=stats(ticket, value))
                    if job.include_usage:
                        yield sse({**head, "choices": [], "usage": usage(value)})
        except ApiError as exc:
            yield sse(exc.body())
        yield "data: [DONE]\n\n"

    return app
