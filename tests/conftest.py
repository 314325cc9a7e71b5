"""Tiny random models of several architectures, built from configs (no weights are downloaded)."""

from __future__ import annotations

import copy
import json

import pytest
import torch

VOCAB = 96


class IdTokenizer:
    """Stands in for a tokenizer: token i is the text 't{i} '."""

    eos_token_id = None
    chat_template = None

    def encode(self, text, add_special_tokens=True):
        return [int(w[1:]) for w in text.split()]

    def decode(self, ids, skip_special_tokens=True):
        return "".join(f"t{i} " for i in ids)


def _config(arch: str):
    import transformers as tf

    common = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                  initializer_range=0.3, eos_token_id=None, bos_token_id=None, pad_token_id=None)
    if arch == "llama":
        return tf.LlamaConfig(**common)
    if arch == "qwen2":
        return tf.Qwen2Config(**common)
    if arch == "mistral":
        return tf.MistralConfig(**common, sliding_window=8)
    if arch == "gemma3":
        return tf.Gemma3TextConfig(**common, head_dim=8, sliding_window=8,
                                   layer_types=["sliding_attention", "full_attention"])
    if arch == "gpt2":
        return tf.GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=512,
                             initializer_range=0.3, eos_token_id=None, bos_token_id=None)
    raise ValueError(arch)


# "-gguf": the same model with its weights quantised as a GGUF file holds them (linears Q4_1, embedding
# and LM head Q8_0), so the skinny kernel streams code blocks instead of fp32 panels
ARCHS = ["llama", "qwen2", "mistral", "gemma3", "gpt2", "llama-gguf", "gemma3-gguf"]


def quantize_like_gguf(model) -> None:
    """Every linear weight as Q4_1 and the embedding and LM head as Q8_0, in place (fp32 values)."""
    from llmaccel.kernels.skinny import quantize_like_gguf as q

    with torch.no_grad():
        for name, mod in model.named_modules():
            if isinstance(mod, torch.nn.Linear):
                mod.weight.copy_(q(mod.weight, 8 if name.endswith("lm_head") else 4))
        emb = model.get_input_embeddings().weight
        emb.copy_(q(emb, 8))


def build(arch: str, seed: int = 0, device: str = "cpu"):
    """(plain transformers model for the oracle, LoadedModel for the engine)."""
    from transformers import AutoModelForCausalLM

    import llmaccel

    torch.manual_seed(seed)
    config = _config(arch.removesuffix("-gguf"))
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).to(device).eval()
    if arch.endswith("-gguf"):
        quantize_like_gguf(model)
    plain = copy.deepcopy(model)
    return plain, llmaccel.wrap(model, IdTokenizer(), name=f"tiny-{arch}")


_cache: dict = {}


@pytest.fixture(params=ARCHS)
def tiny(request):
    if request.param not in _cache:
        _cache[request.param] = build(request.param)
    return _cache[request.param]


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    """A tiny Llama saved as a model folder, with a word-level tokenizer (token i is the word `t{i}`)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    d = tmp_path_factory.mktemp("tiny-llama")
    vocab = {f"t{i}": i for i in range(95)} | {"[UNK]": 95}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]").save_pretrained(d)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=64, initializer_range=0.3,
                      bos_token_id=None, eos_token_id=None, pad_token_id=None)
    model = LlamaForCausalLM(cfg).eval()
    model.save_pretrained(d)
    return d, model


def rows_file(path, rows):
    """An LLMA-format .jsonl at `path` from (query, docs, result text) triples; returns the path."""
    path.write_text("".join(json.dumps({"query": q, "docs": d, "result": {"text": t}}) + "\n" for q, d, t in rows))
    return path
