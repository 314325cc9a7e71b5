"""The prompt cache: KV entries of recent token sequences, so a prompt that begins like one of them
prefills only what is new (a follow-up turn, the same system prompt, the same documents).

Prefill is most of a RAG request's time on a CPU (~1.3 s for an 850-token rag.dev prompt against ~1 s
of decoding its answer), and a conversation's next turn repeats the whole conversation so far. As
llama.cpp's `cache_prompt` and vLLM's automatic prefix caching do, the KV entries of each finished
sequence (prompt and answer) are kept, least recently used first out, within a memory bound; a new
prompt takes the entries of the longest common token prefix and runs only the rest. The entries were
computed in steps of other sizes than a cold prefill's, so they can differ from it in the last bits
(as a k-token step's logits differ from a one-token step's); the tokens are tested equal.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence

from llmaccel.kv import KVSnapshot

__all__ = ["PromptCache"]

MIN_REUSE = 16  # a shorter common prefix is not worth a copy of its entries


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class PromptCache:
    """Token sequences -> their KV entries, least recently used dropped first beyond `max_bytes`."""

    def __init__(self, max_bytes: int = 1 << 30) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple[int, ...], KVSnapshot] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = self.misses = 0
        self.reused_tokens = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def nbytes(self) -> int:
        return self._bytes

    def lookup(self, prompt: Sequence[int]) -> tuple[int, KVSnapshot] | None:
        """The longest usable prefix: (n, entries holding at least n) with n <= len(prompt) - 1 (the
        last prompt token must run, for its logits), or None below MIN_REUSE tokens."""
        with self._lock:
            best, best_key = 0, None
            for key in self._entries:
                n = min(common_prefix(key, prompt), len(prompt) - 1, self._entries[key].length)
                if n > best:
                    best, best_key = n, key
            if best < MIN_REUSE or best_key is None:
                self.misses += 1
                return None
            self._entries.move_to_end(best_key)
            self.hits += 1
            self.reused_tokens += best
            return best, self._entries[best_key]

    def add(self, tokens: Sequence[int], snap: KVSnapshot) -> None:
        """Keep `snap`, the entries of `tokens` (snap.length of them); an entry that is a prefix of
        another is dropped, as the longer one serves it too."""
        key = tuple(tokens[: snap.length])
        if snap.nbytes > self.max_bytes or len(key) < MIN_REUSE:
            return
        with self._lock:
            for other in [k for k in self._entries if len(k) <= len(key) and key[: len(k)] == k]:
                self._bytes -= self._entries.pop(other).nbytes
            if any(len(k) > len(key) and k[: len(key)] == key for k in self._entries):
                return  # a longer sequence with this prefix is already here
            self._entries[key] = snap
            self._bytes += snap.nbytes
            while self._bytes > self.max_bytes and self._entries:
                _, old = self._entries.popitem(last=False)
                self._bytes -= old.nbytes
