"""What llmaccel reads from a transformers model's config: its context length, its stop ids, whether
its RoPE depends on the position alone, and whether its steps fit CUDA graphs."""

from __future__ import annotations

import torch

DEFAULT_CONTEXT = 2048  # for a config that names no context length (none of the shipped models)


def max_context(config) -> int:
    """The longest sequence the model takes, from whichever key its config uses."""
    text = config.get_text_config()
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        v = getattr(text, key, None)
        if v:
            return int(v)
    return DEFAULT_CONTEXT


def eos_ids(model, tokenizer) -> tuple[int, ...]:
    """The ids that end generation: the generation config's and the model config's, else the tokenizer's."""
    ids: list[int] = []
    for src in (getattr(model, "generation_config", None), model.config):
        eos = getattr(src, "eos_token_id", None) if src is not None else None
        if eos is None:
            continue
        for e in eos if isinstance(eos, (list, tuple)) else [eos]:
            if e is not None and int(e) not in ids:
                ids.append(int(e))
    if not ids and tokenizer is not None and tokenizer.eos_token_id is not None:
        ids.append(int(tokenizer.eos_token_id))
    return tuple(ids)


def static_rope(cfg) -> bool:
    """Whether RoPE's cos and sin depend on the position alone (no rescaling by the sequence's length)."""
    rope = getattr(cfg, "rope_parameters", None) or getattr(cfg, "rope_scaling", None) or {}
    return isinstance(rope, dict) and rope.get("rope_type", rope.get("type", "default")) in ("default", "llama3", "linear")


GRAPH_MODEL_TYPES = ("llama", "qwen2")  # full attention in every layer, the KV cache's update as the only state


# Most of the GPU's memory the static KV cache (capacity = the model's whole context) may take; beyond
# it the model decodes eagerly on the growing cache.
GRAPH_CACHE_SHARE = 0.25


def graphable(model, capacity: int) -> bool:
    """CUDA graphs for this model's steps: on a GPU, a model type with full attention in every layer
    (no sliding windows), a rotary embedding without data-dependent rescaling, and a static cache
    of `capacity` entries that fits in GRAPH_CACHE_SHARE of the GPU's memory."""
    cfg = model.config.get_text_config()
    if model.device.type != "cuda" or cfg.model_type not in GRAPH_MODEL_TYPES:
        return False
    if getattr(cfg, "use_sliding_window", False) or set(getattr(cfg, "layer_types", None) or ["full_attention"]) != {"full_attention"}:
        return False
    if not static_rope(cfg):
        return False  # dynamic / long-rope scaling reads the positions on the host
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    kv_heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
    cache_bytes = 2 * cfg.num_hidden_layers * kv_heads * head_dim * capacity * model.dtype.itemsize
    return cache_bytes <= GRAPH_CACHE_SHARE * torch.cuda.get_device_properties(model.device).total_memory
