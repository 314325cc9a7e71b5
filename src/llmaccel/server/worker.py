"""The generation worker: one thread owns the model and runs the queued jobs one at a time.

Requests wait in a bounded queue (a full queue is a 429 for the next one). Each job's steps go back to
its request's event loop as they happen; a job whose client has gone, or that ran past its time
limit, stops at the next step. One thread, not a pool: a step already uses every core, and a second
generation at once would only slow both down. Batching several sequences into one step is the way to
serve more at once, and it belongs here: the worker is the one place that sees every job.
"""

from __future__ import annotations

import asyncio
import logging
import math
import queue
import threading
import time
from dataclasses import dataclass, field

from llmaccel.errors import GenerationError
from llmaccel.server.protocol import ApiError, Job

log = logging.getLogger(__name__)

__all__ = ["Ticket", "Worker"]


@dataclass
class Ticket:
    """A job in the worker, as its request sees it: events arrive on `events` as (kind, value) pairs:
    ("started", None), ("step", StepEvent), ("done", GenerationResult) or ("error", ApiError)."""

    job: Job
    loop: asyncio.AbstractEventLoop
    scope: str = ""  # the tenant (API key) the job belongs to
    events: asyncio.Queue = field(default_factory=asyncio.Queue)
    cancelled: threading.Event = field(default_factory=threading.Event)
    enqueued: float = field(default_factory=time.perf_counter)
    started: float | None = None  # when the worker took it
    first_token: float | None = None
    store_hits: int = 0  # stored answers drafted from
    prefill_saved_s: float = 0.0  # prefill time the prompt cache saved (estimated)

    def cancel(self) -> None:
        self.cancelled.set()

    def put(self, kind: str, value=None) -> None:
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, (kind, value))
        except RuntimeError:  # the request's loop is closed (shutting down): nobody is listening
            pass

    async def next(self):
        return await self.events.get()


class Worker:
    """Runs jobs on one thread. `hooks` see each job: `before(ticket)` may add references (the store),
    `after(ticket, result)` records it (metrics, the store)."""

    def __init__(self, lm, max_queue: int = 16, time_limit_s: float = 600.0, hooks=None, prompt_cache=None) -> None:
        self.lm = lm
        self.prompt_cache = prompt_cache
        if max_queue < 1:
            raise ValueError("max_queue must be at least 1")
        self.queue: queue.Queue[Ticket | None] = queue.Queue(maxsize=max_queue)
        self.time_limit_s = time_limit_s
        self.hooks = hooks
        self.running: Ticket | None = None
        self.mean_job_s = 1.0  # moving average, for Retry-After
        self._thread = threading.Thread(target=self._loop, name="llmaccel-worker", daemon=True)
        self._stopping = threading.Event()

    def start(self) -> None:
        """Run the jobs on a thread of the worker's own."""
        self._thread.start()

    def run(self, until=None) -> None:
        """Run the jobs on the calling thread until stopped (or until `until()` turns false, checked twice
        a second). The thread that loaded the model should run its steps: measured on SmolLM2 (2 cores,
        AVX2), steps on another thread than the loading one took ~1.7x as long (9-12 -> 16-23 ms), while a
        thread that both loads and decodes is as fast as the main thread. So `llmaccel serve` decodes on
        its main thread and serves HTTP from a second one."""
        self._loop(until)

    def submit(self, ticket: Ticket) -> None:
        """Queue a job, or raise a 429 ApiError when the queue is full (or a 503 while shutting down)."""
        if self._stopping.is_set():
            raise ApiError(503, "the server is shutting down", type="server_error")
        try:
            self.queue.put_nowait(ticket)
        except queue.Full:
            wait = max(1, math.ceil(self.mean_job_s * (self.queue.qsize() + 1)))
            raise ApiError(429, f"the server is busy: {self.queue.qsize()} requests are waiting; retry in {wait} s",
                           type="rate_limit_error", headers={"Retry-After": str(wait)}) from None

    def queue_length(self) -> int:
        return self.queue.qsize()

    def stop(self, grace_s: float = 10.0) -> None:
        """Refuse new jobs, cancel the waiting ones, give the running one `grace_s` to finish, then cancel it."""
        self._stopping.set()
        while True:
            try:
                t = self.queue.get_nowait()
            except queue.Empty:
                break
            if t is not None:
                t.put("error", ApiError(503, "the server is shutting down", type="server_error"))
        deadline = time.monotonic() + grace_s
        while self.running is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        if self.running is not None:
            self.running.cancel()
        try:
            self.queue.put(None, timeout=1.0)
        except queue.Full:
            pass
        if self._thread.is_alive():
            self._thread.join(timeout=5.0)

    def _loop(self, until=None) -> None:
        while True:
            try:
                ticket = self.queue.get(timeout=0.5)
            except queue.Empty:
                if until is not None and not until():
                    return
                continue
            if ticket is None:
                return
            if ticket.cancelled.is_set():
                continue
            self.running = ticket
            t0 = time.perf_counter()
            try:
                self._run(ticket)
            except Exception:  # a bug, not the client's input: logged here, a plain 500 for the client
                log.exception("generation failed")
                ticket.put("error", ApiError(500, "internal error while generating; see the server's log",
                                             type="server_error"))
            finally:
                self.running = None
                self.mean_job_s = 0.8 * self.mean_job_s + 0.2 * (time.perf_counter() - t0)

    def _run(self, ticket: Ticket) -> None:
        from llmaccel.engine import Decoder

        ticket.started = time.perf_counter()
        job = ticket.job
        if self.hooks is not None:
            self.hooks.before(ticket)
        try:
            decoder = Decoder(self.lm, job.prompt_ids, method=job.method, references=job.references,
                              reference_sources=job.reference_sources, max_new_tokens=job.max_tokens,
                              stop_strings=job.stop, sampling=job.sampling, logprobs=job.logprobs,
                              prompt_cache=self.prompt_cache if job.cache_prompt else None)
        except GenerationError as exc:
            ticket.put("error", ApiError(400, str(exc)))
            return
        ticket.put("started")
        deadline = ticket.started + self.time_limit_s
        events = decoder.events()
        reason = None
        try:
            for event in events:
                if ticket.first_token is None:
                    ticket.first_token = time.perf_counter()
                ticket.put("step", event)
                if ticket.cancelled.is_set():
                    reason = "cancelled"
                    break
                if time.perf_counter() > deadline:
                    reason = "time"
                    break
        finally:
            events.close()
        result = decoder.result()
        if reason is not None:
            result.stop_reason = reason
        if self.hooks is not None:
            self.hooks.after(ticket, result)
        ticket.put("done", result)
