"""The alternating loop of build_ab.py and glue_ab.py: whole greedy steps of k tokens over a prefilled
context, two settings of one process taking turns step by step (the order swapped every rep), so the
machine's drift hits both alike."""
import statistics
import time
from collections.abc import Callable

import torch


def alternate(lm, settings: dict[str, Callable[[], None]], sizes: list[int], reps: int, context: int,
              warmup: int = 5) -> tuple[dict[tuple[int, str], float], int]:
    """Each rep and size, one random k-token step under each setting (`settings[name]()` applies it), the
    cache rolled back after each. Returns the median seconds per (k, name) over the reps after `warmup`,
    and how many steps' greedy tokens differed between the settings."""
    a, b = settings
    g = torch.Generator().manual_seed(0)
    cache = lm.new_cache()
    lm.forward(torch.randint(0, lm.vocab_size, (1, context), generator=g), 0, cache, keep=1)
    times: dict[tuple[int, str], list[float]] = {}
    differ = 0
    for rep in range(reps + warmup):
        for k in sizes:
            ids = torch.randint(0, lm.vocab_size, (1, k), generator=g)
            outs = {}
            for name in (a, b) if rep % 2 else (b, a):
                settings[name]()
                t = time.perf_counter()
                outs[name] = lm.greedy(ids, context, cache, keep=k)
                dt = time.perf_counter() - t
                cache.rollback_to(context)
                if rep >= warmup:
                    times.setdefault((k, name), []).append(dt)
            differ += outs[a] != outs[b]
    return {key: statistics.median(v) for key, v in times.items()}, differ
