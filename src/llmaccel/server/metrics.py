"""The server's Prometheus metrics (prometheus-client), one registry per app so apps do not share them."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["Metrics"]

_LATENCY = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_PER_TOKEN = (0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.2, 0.5, 1)


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter("llmaccel_requests", "HTTP requests answered", ["endpoint", "status"], registry=r)
        self.prompt_tokens = Counter("llmaccel_prompt_tokens", "prompt tokens of finished generations", registry=r)
        self.completion_tokens = Counter("llmaccel_completion_tokens", "tokens generated", registry=r)
        self.steps = Counter("llmaccel_steps", "decoding forward passes (prefill included)", registry=r)
        self.drafted = Counter("llmaccel_drafted_tokens", "draft tokens fed to the model", ["source"], registry=r)
        self.accepted = Counter("llmaccel_accepted_tokens", "draft tokens accepted", ["source"], registry=r)
        self.queue = Gauge("llmaccel_queue_length", "requests waiting for the worker", registry=r)
        self.running = Gauge("llmaccel_running", "generations running (0 or 1)", registry=r)
        self.ttft = Histogram("llmaccel_time_to_first_token_seconds", "from arrival to the first token (queue included)",
                              buckets=_LATENCY, registry=r)
        self.tpot = Histogram("llmaccel_time_per_output_token_seconds", "decode time per output token after the first",
                              buckets=_PER_TOKEN, registry=r)
        self.cached_tokens = Counter("llmaccel_prompt_cache_tokens", "prompt tokens served by the prompt cache",
                                     registry=r)
        self.prefill_saved = Counter("llmaccel_prompt_cache_saved_seconds",
                                     "prefill time the prompt cache saved (estimated from cold prefills' time per token)",
                                     registry=r)
        self.cache_hits = Gauge("llmaccel_prompt_cache_hits", "prompts that found a cached prefix", registry=r)
        self.cache_misses = Gauge("llmaccel_prompt_cache_misses", "prompts that found none", registry=r)
        self.cache_bytes = Gauge("llmaccel_prompt_cache_bytes", "memory the prompt cache holds", registry=r)
        self.e2e = Histogram("llmaccel_request_seconds", "from arrival to the last token", buckets=_LATENCY, registry=r)

    def watch_prompt_cache(self, cache) -> None:
        self.cache_hits.set_function(lambda: cache.hits)
        self.cache_misses.set_function(lambda: cache.misses)
        self.cache_bytes.set_function(lambda: cache.nbytes)

    def record(self, ticket, result, saved_s: float = 0.0) -> None:
        """A finished generation's figures."""
        self.prompt_tokens.inc(result.prompt_tokens)
        self.cached_tokens.inc(result.cached_prompt_tokens)
        self.prefill_saved.inc(saved_s)
        self.completion_tokens.inc(len(result.token_ids))
        self.steps.inc(result.steps)
        for source, n in result.drafted_by_source().items():
            self.drafted.labels(source).inc(n)
        for source, n in result.accepted_by_source().items():
            self.accepted.labels(source).inc(n)
        if ticket.first_token is not None:
            self.ttft.observe(ticket.first_token - ticket.enqueued)
        if len(result.token_ids) > 1:
            self.tpot.observe(result.decode_s / (len(result.token_ids) - 1))
        self.e2e.observe(time.perf_counter() - ticket.enqueued)

    def text(self) -> bytes:
        return generate_latest(self.registry)
