"""A Llama-family model's weights read into lean.py's `Stack`, with the RoPE table for its positions."""

from __future__ import annotations

import torch

from llmaccel import lean
from llmaccel.kernels import skinny
from llmaccel.models.config import max_context, static_rope

ROPE_TABLE_MAX = 16384  # positions in lean's RoPE table (SmolLM2's 8k context: 4 MB); the module beyond

LEAN_MODEL_TYPES = ("llama", "mistral", "qwen2")  # decoder stacks lean.py computes exactly as transformers does


def lean_stack(model) -> lean.Stack | None:
    """Read a Llama-family model's weights into lean.py's `Stack`; None if the model is of another kind."""
    cfg = model.config
    if cfg.model_type not in LEAN_MODEL_TYPES or getattr(cfg, "hidden_act", "silu") != "silu":
        return None
    if getattr(cfg, "mlp_bias", False) or getattr(cfg, "pretraining_tp", 1) != 1:
        return None
    inner = model.model
    if model.device.type != "cpu" or model.dtype != torch.float32:
        return None  # the skinny kernel and the measured gains are for fp32 on the CPU
    use_skinny = skinny.available()
    layers = [_layer(cfg, i, layer, use_skinny) for i, layer in enumerate(inner.layers)]
    head = model.lm_head
    a0 = inner.layers[0].self_attn

    def rotary(positions: torch.Tensor):  # (1, T) -> cos, sin (1, T, D), from the model's own module
        return inner.rotary_emb(inner.norm.weight, position_ids=positions)

    # a table of the first positions where the rotary embedding depends on the position alone
    rope = lean.rope_table(rotary, min(max_context(cfg), ROPE_TABLE_MAX)) if static_rope(cfg) else None

    return lean.Stack(
        embed=inner.embed_tokens.weight.detach(),
        layers=layers,
        norm=inner.norm.weight.detach(),
        head=lean.FusedLinear([head.weight], [head.bias], use_skinny),
        eps=float(inner.norm.variance_epsilon),
        n_heads=cfg.num_attention_heads,
        n_kv_heads=cfg.num_key_value_heads,
        head_dim=a0.head_dim,
        scaling=float(a0.scaling),
        rotary=rotary,
        rope=rope,
        cpp_layers=use_skinny and a0.head_dim % 2 == 0,
        # greedy steps take the argmax through an int8 copy of the head (28 MB for SmolLM2) and exact
        # float64 logits for the few tokens its error bound leaves open
        argmax_head=skinny.pack_argmax_head(head.weight) if use_skinny and head.bias is None else None,
    )


def _layer(cfg, i: int, layer, use_skinny: bool) -> lean.Layer:
    """Decoder layer `i`'s weights, q/k/v and gate/up fused, and its sliding window if it has one."""
    a, m = layer.self_attn, layer.mlp
    layer_types = getattr(cfg, "layer_types", None)
    if layer_types:
        window = cfg.sliding_window if layer_types[i] == "sliding_attention" else None
    else:
        window = getattr(cfg, "sliding_window", None) if cfg.model_type == "mistral" else None
    return lean.Layer(
        ln1=layer.input_layernorm.weight.detach(),
        qkv=lean.FusedLinear(
            [a.q_proj.weight, a.k_proj.weight, a.v_proj.weight],
            [a.q_proj.bias, a.k_proj.bias, a.v_proj.bias],
            use_skinny,
        ),
        o=lean.FusedLinear([a.o_proj.weight], [a.o_proj.bias], use_skinny),
        ln2=layer.post_attention_layernorm.weight.detach(),
        gate_up=lean.FusedLinear([m.gate_proj.weight, m.up_proj.weight], [None, None], use_skinny),
        down=lean.FusedLinear([m.down_proj.weight], [None], use_skinny),
        window=window,
    )
