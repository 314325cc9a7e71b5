"""The KV cache: preallocated per layer, written by position, rolled back by moving a length.

transformers' DynamicCache grows with `torch.cat`, which copies the whole cache on every step (measured:
20% of a 1-token step of SmolLM2 with 300 cached tokens, and it grows with the context). Here each
layer keeps a buffer with spare room; a step copies only its own new entries, and a rollback after a
rejected draft costs nothing: the length simply moves back (as in gpt-fast's static cache).

The cache never trims sliding-window layers: a rejected draft must be able to come back from any
position, so the window is enforced by the attention mask alone (transformers builds that mask from
the config for every layer type).
"""

from __future__ import annotations

import torch
from transformers.cache_utils import Cache, DynamicLayer

GROW_CHUNK = 256  # spare room added on growth, in tokens: amortises the rare re-allocation


def compact(buf: torch.Tensor, start: int, idx: torch.Tensor) -> None:
    """buf (B, H, capacity, D): entries idx (n,) (ascending, >= start) become entries start..start+n-1."""
    buf[:, :, start : start + len(idx)] = buf.index_select(2, idx)  # gather first: sources may overlap


class PreallocatedLayer(DynamicLayer):
    """One layer's keys and values in a buffer (B, H, capacity, D); `keys`/`values` are views of the valid part.

    The views are made when read, not each time the length moves: the C++ layers of a decoding step
    write the buffers directly and only move the length (`reserve`/`advance`, and `rollback_to` after a
    rejected draft). Two slices a layer at every move cost 0.17 ms of a SmolLM2 step (30 layers) in a
    hot loop and more in a real step, where each torch call finds its code and data evicted by the
    weights: steps plus rollback, alternating, 8.84 -> 8.47 ms at 1 token, 13.93 -> 13.62 ms at 16.
    """

    def __init__(self) -> None:
        self._kbuf: torch.Tensor | None = None  # (B, H_kv, capacity, D)
        self._vbuf: torch.Tensor | None = None
        self._len = 0
        super().__init__()

    # transformers' layer API reads `keys`/`values` and sets them to None on reset
    @property
    def keys(self) -> torch.Tensor | None:
        return None if self._kbuf is None else self._kbuf[:, :, : self._len]  # (B, H_kv, len, D), a view

    @keys.setter
    def keys(self, value: torch.Tensor | None) -> None:
        self._set_buffer("_kbuf", value)

    @property
    def values(self) -> torch.Tensor | None:
        return None if self._vbuf is None else self._vbuf[:, :, : self._len]

    @values.setter
    def values(self, value: torch.Tensor | None) -> None:
        self._set_buffer("_vbuf", value)

    def _set_buffer(self, name: str, value: torch.Tensor | None) -> None:
        if value is not None:  # only transformers' reset (None) assigns; a tensor would bypass the length
            raise TypeError("PreallocatedLayer: write entries through update(), not by assigning keys/values")
        setattr(self, name, None)
        self._len = 0

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.dtype, self.device = key_states.dtype, key_states.device
        self._kbuf = key_states.new_empty((*key_states.shape[:2], 0, key_states.shape[3]))
        self._vbuf = value_states.new_empty((*value_states.shape[:2], 0, value_states.shape[3]))
        self.is_initialized = True

    def _grow(self, need: int) -> None:
        cap = max(need + GROW_CHUNK, 2 * self._kbuf.shape[2])
        for name in ("_kbuf", "_vbuf"):
            old = getattr(self, name)
            new = old.new_empty((*old.shape[:2], cap, old.shape[3]))
            new[:, :, : self._len].copy_(old[:, :, : self._len])
            setattr(self, name, new)

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        # key_states, value_states: (B, H_kv, T, D), the new entries at positions len..len+T-1
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        end = self._len + key_states.shape[2]
        if end > self._kbuf.shape[2]:
            self._grow(end)
        self._kbuf[:, :, self._len : end].copy_(key_states)
        self._vbuf[:, :, self._len : end].copy_(value_states)
        self._set_length(end)
        return self.keys, self.values

    def _set_length(self, n: int) -> None:
        self._len = n

    def get_seq_length(self) -> int:
        return self._len

    def reserve(self, T: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The whole buffers (B, H_kv, capacity, D), with room for T more entries; a writer fills
        entries len..len+T-1 and then calls `advance(T)`. The layer must be initialised."""
        if self._len + T > self._kbuf.shape[2]:
            self._grow(self._len + T)
        return self._kbuf, self._vbuf

    def advance(self, T: int) -> None:
        self._set_length(self._len + T)

    def crop(self, tokens_to_remove: int) -> None:
        """Drop the last |tokens_to_remove| entries (transformers' convention: a negative count)."""
        if not self.is_initialized or tokens_to_remove == 0:
            return
        self._set_length(max(0, self._len - abs(tokens_to_remove)))

    @torch.inference_mode()
    def keep_slots(self, start: int, slots: torch.Tensor) -> None:
        """Keep entries start + slots (ascending offsets) as entries start.. and drop everything after."""
        if not self.is_initialized:
            return
        idx = slots.to(self.device) + start
        for buf in (self._kbuf, self._vbuf):
            compact(buf, start, idx)
        self._set_length(start + len(idx))

    def reset(self) -> None:
        self._len = 0
        super().reset()


class KVCache(Cache):
    """A transformers `Cache` of `PreallocatedLayer`s, created lazily one per attention layer."""

    def __init__(self) -> None:
        super().__init__(layer_class_to_replicate=PreallocatedLayer)

    def rollback_to(self, length: int) -> None:
        """Forget every entry at position >= length (a rejected draft)."""
        for layer in self.layers:
            drop = layer.get_seq_length() - length
            if drop > 0:
                layer.crop(-drop)

    def keep_path(self, start: int, offsets: list[int]) -> None:
        """After a tree step written at entries start..: keep the entries at start + offsets (the root
        and the accepted path, ascending) as entries start.., forget the rest."""
        if offsets == list(range(len(offsets))):
            self.rollback_to(start + len(offsets))
            return
        slots = torch.tensor(offsets)
        for layer in self.layers:
            layer.keep_slots(start, slots)


def new_cache() -> KVCache:
    return KVCache()


class StaticLayer(DynamicLayer):
    """One layer's keys and values in a buffer of fixed size (B, H_kv, C, D), for CUDA graphs: a graph
    records the buffer's address, so it never moves or grows. A step writes its entries at the slots
    its owner holds in `slots` (a device tensor, so a graph replays the write at new places). Seen by
    attention: the whole buffer under a mask (graph steps), or the valid prefix (eager steps)."""

    def __init__(self, owner: StaticKVCache) -> None:
        super().__init__()
        self.owner = owner

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.dtype, self.device = key_states.dtype, key_states.device
        shape = (*key_states.shape[:2], self.owner.capacity, key_states.shape[3])  # (B, H_kv, C, D)
        # Zeros, not garbage: masked slots still enter the products, and 0 * NaN would be NaN.
        self.keys = key_states.new_zeros(shape)
        self.values = value_states.new_zeros(shape)
        self.is_initialized = True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        # key_states, value_states: (B, H_kv, T, D) for the slots in owner.slots (T,)
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        self.keys.index_copy_(2, self.owner.slots, key_states)
        self.values.index_copy_(2, self.owner.slots, value_states)
        seen = self.owner.visible  # None: the whole buffer (a graph step's mask hides the rest)
        if seen is None:
            return self.keys, self.values
        return self.keys[:, :, :seen], self.values[:, :, :seen]  # (B, H_kv, seen, D) views

    def get_seq_length(self) -> int:
        return self.owner.length


class StaticKVCache(Cache):
    """A transformers `Cache` of `StaticLayer`s of capacity C. The valid entries are 0..length-1; a
    rollback only moves `length`, since every step's mask is built from it."""

    def __init__(self, capacity: int) -> None:
        super().__init__(layer_class_to_replicate=lambda: StaticLayer(self))
        self.capacity = capacity
        self.length = 0
        self.slots: torch.Tensor | None = None  # (T,) where the running step writes; set by its runner
        self.visible: int | None = None  # keys attention sees in an eager step; None in a graph step
        self.generation = 0  # bumped per new sequence: a stale `StaticCacheHandle` must not write

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.length

    def rollback_to(self, length: int) -> None:
        self.length = min(self.length, length)

    @torch.inference_mode()
    def keep_path(self, start: int, offsets: list[int]) -> None:
        """As `KVCache.keep_path`: entries start + offsets (ascending) become entries start.."""
        if offsets != list(range(len(offsets))):
            idx = torch.tensor(offsets, device=self.layers[0].keys.device) + start  # (n,)
            for layer in self.layers:
                for buf in (layer.keys, layer.values):
                    compact(buf, start, idx)
        self.length = start + len(offsets)


class StaticCacheHandle:
    """What `new_cache()` hands one sequence on a CUDA-graphed model: the model's one static cache (its
    graphs hold that cache's addresses), usable until the next sequence takes it."""

    def __init__(self, cache: StaticKVCache) -> None:
        cache.generation += 1
        cache.length = 0
        self.cache = cache
        self.generation = cache.generation

    def claim(self) -> StaticKVCache:
        if self.generation != self.cache.generation:
            raise RuntimeError(
                "this KV cache was handed to a newer sequence: a CUDA-graphed model decodes one sequence at a time"
            )
        return self.cache

    def rollback_to(self, length: int) -> None:
        self.claim().rollback_to(length)

    def keep_path(self, start: int, offsets: list[int]) -> None:
        self.claim().keep_path(start, offsets)


class KVSnapshot:
    """A copy of the first `length` entries of every layer of a `KVCache`: keys[i], values[i]
    (B, H_kv, length, D) for layer i. What the prompt cache keeps (prompt_cache.py)."""

    def __init__(self, keys: list[torch.Tensor], values: list[torch.Tensor], length: int) -> None:
        self.keys, self.values, self.length = keys, values, length

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (*self.keys, *self.values))


@torch.inference_mode()
def snapshot(cache: KVCache, length: int) -> KVSnapshot | None:
    """The first `length` entries of `cache`, copied (None if a layer holds fewer or is not a KVCache's)."""
    layers = getattr(cache, "layers", None)
    if not isinstance(cache, KVCache) or not layers or any(l.get_seq_length() < length or l._kbuf is None for l in layers):
        return None
    return KVSnapshot([l._kbuf[:, :, :length].clone() for l in layers], [l._vbuf[:, :, :length].clone() for l in layers],
                      length)


@torch.inference_mode()
def restore(cache: KVCache, snap: KVSnapshot, length: int) -> None:
    """Fill an empty `cache` with the first `length` (<= snap.length) entries of `snap`."""
    if cache.get_seq_length() != 0:
        raise ValueError("restore() fills an empty cache")
    for i, (k, v) in enumerate(zip(snap.keys, snap.values)):
        cache.update(k[:, :, :length], v[:, :, :length], i)
