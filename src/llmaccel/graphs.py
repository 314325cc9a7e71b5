"""Decoding steps on a GPU as CUDA graphs.

Why: on a GPU a step of a small model is bound by the host, not the GPU. A 1-token step of SmolLM2
through transformers' modules launches ~1400 kernels; on the H100 machine the GPU is busy 2.7 ms of a
20-30 ms step (BENCHMARKS.md, "On a GPU"). A CUDA graph records a step's kernels once and replays
them with one launch. A graph fixes shapes and addresses, hence:

- the KV cache is one static buffer per layer of capacity C (kv.StaticKVCache); a step writes its
  entries at slots held in a device tensor, and attends over all C slots under a mask, so a rollback
  only moves the cache's length;
- a step of T tokens runs in the graph of the smallest bucket Tb >= T. The Tb - T padding rows see
  the cached entries and themselves, write slots past the step's own (masked out until a later step
  overwrites them) and their logits are dropped;
- the step's inputs (token ids, positions, its start, the (Tb, Tb) visible matrix) reach the GPU in
  one copy into a staging buffer, and the mask is computed from them inside the graph.

Prefill and steps that fit no bucket run eagerly on the same cache. The graphs are recorded lazily,
one per bucket on its first use, after an eager warm-up that computes that very step.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch

from llmaccel.kv import StaticCacheHandle, StaticKVCache
from llmaccel.lean import step_mask

log = logging.getLogger(__name__)

# Step sizes that get a graph. Powers of two up to the engine's MAX_STEP_TOKENS: at most 2x padding,
# and 7 graphs in all.
BUCKETS = (1, 2, 4, 8, 16, 32, 64)

# (ids (1, T), positions (1, T), mask (1, 1, T, S) bool or None for causal, cache) -> logits (1, T, V)
StepFn = Callable[[torch.Tensor, torch.Tensor, "torch.Tensor | None", StaticKVCache], torch.Tensor]


def bucket(T: int) -> int | None:
    return next((b for b in BUCKETS if b >= T), None)


def step_visibility(visible: torch.Tensor | None, T: int, Tb: int) -> torch.Tensor:
    """(Tb, Tb) bool: which of the step's tokens each row sees; the chain's or tree's (T, T) visible matrix in
    the corner, and each padding row sees itself only."""
    vis = torch.zeros(Tb, Tb, dtype=torch.bool)
    vis[:T, :T] = torch.ones(T, T, dtype=torch.bool).tril_() if visible is None else visible.cpu()
    pad = torch.arange(T, Tb)
    vis[pad, pad] = True
    return vis


class GraphedSteps:
    """Runs a model's steps on one static KV cache, through CUDA graphs where a bucket fits."""

    def __init__(self, step: StepFn, device: torch.device, capacity: int, record: bool = True) -> None:
        """`record=False` runs each padded bucket step eagerly instead of through a graph: the same
        computation, which lets the tests check the static cache, padding and masks on a CPU."""
        self.step = step
        self.device = torch.device(device)
        self.capacity = capacity
        self.record = record
        self.cache = StaticKVCache(capacity)  # the graphs hold its buffers' addresses: one for all sequences
        n = BUCKETS[-1]
        # staging layout (int64): ids [0, n), positions [n, 2n), start [2n], visibility [2n + 1, 2n + 1 + n*n)
        self._n = n
        self.staging = torch.zeros(2 * n + 1 + n * n, dtype=torch.long, device=device)
        self._host = torch.zeros(self.staging.shape, dtype=torch.long)
        if self.device.type == "cuda":
            self._host = self._host.pin_memory()
        self.key_slots = torch.arange(capacity, device=device)  # (C,)
        self._rows = torch.arange(n, device=device)  # (n,)
        self.graphs: dict[int, tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}
        self._pool = None
        self.bucket_steps = 0  # steps run padded to a bucket (through a graph when recording): tests check it

    def new_cache(self) -> StaticCacheHandle:
        return StaticCacheHandle(self.cache)

    def forward(
        self, ids: torch.Tensor, start: int, handle: StaticCacheHandle, depth: torch.Tensor | None,
        visible: torch.Tensor | None,
    ) -> torch.Tensor:
        """ids (1, T) at positions start + (depth or 0..T-1), written at entries start..start+T-1;
        returns the logits (1, T, V) (a view into the graph's output for graph steps: read it before
        the next step)."""
        cache = handle.claim()
        T = ids.shape[1]
        if start != cache.length:
            raise ValueError(f"the step starts at entry {start} but the cache holds {cache.length}")
        if start + T > self.capacity:
            raise ValueError(f"the step ends past the cache's capacity of {self.capacity} entries")
        Tb = bucket(T)
        if start == 0 or Tb is None or start + Tb > self.capacity:
            logits = self._eager(ids, start, cache, depth, visible)
        else:
            self._stage(ids, start, depth, visible, T, Tb)
            if self.record:
                graph, out = self.graphs.get(Tb) or self._record(Tb, cache)
                graph.replay()
            else:
                out = self._graph_body(Tb, cache)
            self.bucket_steps += 1
            logits = out[:, :T]
        cache.length = start + T
        return logits

    def _stage(self, ids, start, depth, visible, T: int, Tb: int) -> None:
        """The step's inputs into the pinned host buffer, then one copy to the GPU."""
        h, n = self._host, self._n
        h[:Tb].zero_()
        h[:T].copy_(ids[0])
        pos = h[n : n + Tb]
        pos.fill_(start)  # padding rows sit at the step's first position
        pos[:T] += depth.cpu() if depth is not None else torch.arange(T)
        h[2 * n] = start
        h[2 * n + 1 : 2 * n + 1 + Tb * Tb].copy_(step_visibility(visible, T, Tb).view(-1))
        used = 2 * n + 1 + Tb * Tb
        self.staging[:used].copy_(h[:used])  # blocking: the host buffer is reused by the next step

    def _graph_body(self, Tb: int, cache: StaticKVCache) -> torch.Tensor:
        """One step of Tb rows from the staging buffer, with no host reads: what a graph records."""
        n, st = self._n, self.staging
        ids = st[:Tb][None]  # (1, Tb)
        pos = st[n : n + Tb][None]  # (1, Tb)
        start = st[2 * n]  # () entries before the step
        vis = st[2 * n + 1 : 2 * n + 1 + Tb * Tb].view(Tb, Tb).bool()  # (Tb, Tb)
        cache.slots = start + self._rows[:Tb]  # (Tb,)
        cache.visible = None
        rel = self.key_slots - start  # (C,) each slot's place relative to the step
        inside = (rel >= 0) & (rel < Tb)  # (C,) the step's own slots
        mask = (rel < 0) | (vis[:, rel.clamp(0, Tb - 1)] & inside)  # (Tb, C): cached entries + the visible matrix
        return self.step(ids, pos, mask[None, None], cache)

    def _record(self, Tb: int, cache: StaticKVCache):
        """Warm up (computing the staged step itself), then record the graph of bucket Tb."""
        stream = torch.cuda.Stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream):
            self._graph_body(Tb, cache)  # writes the same entries the replay will write again
        torch.cuda.current_stream(self.device).wait_stream(stream)
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool):
            out = self._graph_body(Tb, cache)  # (1, Tb, V), kept alive: the replays write it
        self.graphs[Tb] = (graph, out)
        log.info("recorded the CUDA graph for %d-token steps", Tb)
        return graph, out

    def _eager(self, ids, start: int, cache: StaticKVCache, depth, visible) -> torch.Tensor:
        """A step outside the graphs (prefill, or no bucket fits): attention over the valid entries only."""
        T = ids.shape[1]
        dev = self.device
        steps = torch.arange(T, device=dev)  # (T,)
        positions = start + (depth.to(dev) if depth is not None else steps)  # (T,)
        cache.slots = start + steps
        cache.visible = start + T
        mask = step_mask(start, positions, None if visible is None else visible.to(dev), None)  # (1, 1, T, start+T) or None
        return self.step(ids.to(dev), positions[None], mask, cache)
