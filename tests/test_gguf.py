"""GGUF files through llmaccel's load path: a tiny Llama written with gguf's GGUFWriter converts once into
the cache and then decodes exactly as its dequantised weights do; bad files and unwritable caches fail
with one-line ModelLoadErrors before any conversion, and leave nothing behind in the cache."""

from __future__ import annotations

import errno
import logging
import os
import shutil
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch

from oracle import oracle_greedy

N_HEADS, N_KV_HEADS, HIDDEN, FFN, LAYERS, CONTEXT = 4, 2, 32, 64, 2, 64  # Q8_0 rows need multiples of 32


def _byte_level_vocab() -> tuple[list[str], list[str]]:
    """GPT-2's byte alphabet, two merges and an end token: the smallest tokenizer transformers rebuilds
    from GGUF metadata (tokenizer.ggml.model "gpt2")."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    spelling = bytes_to_unicode()
    merges = ["Ġ t", "h e"]
    return [spelling[b] for b in range(256)] + ["Ġt", "he", "<|endoftext|>"], merges


def _llama_cpp_rope_order(w: np.ndarray, n_heads: int) -> np.ndarray:
    """q/k rows in llama.cpp's order (its convert script's `permute`; transformers undoes it on load)."""
    return w.reshape(n_heads, 2, w.shape[0] // n_heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_tiny_gguf(path: Path, seed: int = 0):
    """Write a random tiny Llama as a GGUF file (matrices Q8_0, norms F32) with a byte-level BPE tokenizer.
    Returns the transformers model holding the weights the file decodes to (Q8_0 round trip), the oracle's."""
    import gguf
    from transformers import LlamaConfig, LlamaForCausalLM

    tokens, merges = _byte_level_vocab()
    eos = len(tokens) - 1
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tokens), hidden_size=HIDDEN, intermediate_size=FFN, num_hidden_layers=LAYERS,
                      num_attention_heads=N_HEADS, num_key_value_heads=N_KV_HEADS, max_position_embeddings=CONTEXT,
                      initializer_range=0.3, rms_norm_eps=1e-5, tie_word_embeddings=False,
                      bos_token_id=None, eos_token_id=eos, pad_token_id=None)
    model = LlamaForCausalLM(cfg).eval()

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny")
    w.add_context_length(CONTEXT)
    w.add_embedding_length(HIDDEN)
    w.add_feed_forward_length(FFN)
    w.add_block_count(LAYERS)
    w.add_head_count(N_HEADS)
    w.add_head_count_kv(N_KV_HEADS)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0)
    w.add_rope_dimension_count(HIDDEN // N_HEADS)
    w.add_vocab_size(len(tokens))
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types([gguf.TokenType.NORMAL] * eos + [gguf.TokenType.CONTROL])
    w.add_token_merges(merges)
    w.add_eos_token_id(eos)

    state = model.state_dict()
    names = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
    for i in range(LAYERS):
        hf = f"model.layers.{i}."
        names |= {f"blk.{i}.attn_norm": hf + "input_layernorm", f"blk.{i}.ffn_norm": hf + "post_attention_layernorm",
                  f"blk.{i}.attn_q": hf + "self_attn.q_proj", f"blk.{i}.attn_k": hf + "self_attn.k_proj",
                  f"blk.{i}.attn_v": hf + "self_attn.v_proj", f"blk.{i}.attn_output": hf + "self_attn.o_proj",
                  f"blk.{i}.ffn_gate": hf + "mlp.gate_proj", f"blk.{i}.ffn_up": hf + "mlp.up_proj",
                  f"blk.{i}.ffn_down": hf + "mlp.down_proj"}
    with torch.no_grad():
        for gguf_name, hf_name in names.items():
            weight = state[hf_name + ".weight"]
            a = weight.numpy()
            if a.ndim == 1:
                w.add_tensor(gguf_name + ".weight", a)
                continue
            q = gguf.quants.quantize(a, gguf.GGMLQuantizationType.Q8_0)  # rows quantised in blocks of 32
            weight.copy_(torch.from_numpy(gguf.quants.dequantize(q, gguf.GGMLQuantizationType.Q8_0)))
            if gguf_name.endswith(("attn_q", "attn_k")):  # a row permutation: quantising first is the same
                q = _llama_cpp_rope_order(q, N_HEADS if gguf_name.endswith("attn_q") else N_KV_HEADS)
            w.add_tensor(gguf_name + ".weight", q, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return model


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
    d = tmp_path_factory.mktemp("gguf")
    return d / "tiny.gguf", write_tiny_gguf(d / "tiny.gguf")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty LLMACCEL_CACHE for one test. The C++ kernels live in the cache too: they are loaded from
    the usual one first (once per process), or every test run would compile them again (minutes)."""
    from llmaccel.kernels import skinny

    skinny.available()
    monkeypatch.setenv("LLMACCEL_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def cache_entries(cache: Path) -> list[str]:
    return sorted(p.name for p in (cache / "models").iterdir()) if (cache / "models").exists() else []


def copy_of(gguf: Path, folder: Path) -> Path:
    """A fresh copy (its own path, so its own cache entry)."""
    folder.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy(gguf, folder / gguf.name))


def test_tiny_gguf_converts_once_then_decodes_like_its_weights(tiny_gguf, cache, caplog):
    import llmaccel
    from llmaccel import models

    path, reference = tiny_gguf
    with caplog.at_level(logging.WARNING, logger="llmaccel"):
        lm = models.load(str(path))
    assert "converting tiny.gguf" in caplog.text
    (entry,) = cache_entries(cache)  # the converted folder, and no scratch folder left
    assert entry.startswith("tiny-") and (cache / "models" / entry / "model.safetensors").exists()
    assert lm.stack is not None  # a Llama: the lean forward, as for SmolLM2

    prompt = lm.tokenizer.encode("the tea")
    want = oracle_greedy(reference, prompt, 16, lm.eos_token_ids)
    for method in ("greedy", "reference"):
        got = llmaccel.generate(lm, prompt, references=["the tea the tea"], method=method, max_new_tokens=16)
        assert got.token_ids == want, method

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="llmaccel"):
        again = models.load(str(path))
    assert "converting" not in caplog.text  # the second load reads the cache
    assert llmaccel.generate(again, prompt, max_new_tokens=16).token_ids == want


def _no_conversion(monkeypatch):
    """Fail the test if transformers is asked to read a GGUF file (the 30-80 s step on real models)."""
    from llmaccel.models import gguf_cache

    monkeypatch.setattr(gguf_cache, "_convert", lambda *a: pytest.fail("conversion started"))


@pytest.mark.parametrize("content,problem", [
    (os.urandom(4096), "does not start with the GGUF magic bytes"),
    (b"", "does not start with the GGUF magic bytes"),
    (b"GGUF\x03\x00", "ends inside its header"),
    (b"GGUF" + (9).to_bytes(4, "little") + bytes(16), "unknown GGUF version 9"),
    (b"GGUF" + (3).to_bytes(4, "little") + (10**6).to_bytes(8, "little") * 2, "more than its 24 bytes hold"),
])
def test_unreadable_gguf_fails_before_converting(tmp_path, cache, caplog, monkeypatch, content, problem):
    from llmaccel import models

    _no_conversion(monkeypatch)
    bad = tmp_path / "x.gguf"
    bad.write_bytes(content)
    with caplog.at_level(logging.WARNING, logger="llmaccel"), pytest.raises(models.ModelLoadError) as e:
        models.load(str(bad))
    assert str(e.value).startswith(f"{bad} is not a readable GGUF file: ") and problem in str(e.value)
    assert "\n" not in str(e.value) and "converting" not in caplog.text
    assert cache_entries(cache) == []


def test_cut_off_gguf_fails_in_one_line_and_leaves_no_scratch(tiny_gguf, tmp_path, cache):
    """A file cut off inside its tensors passes the header check; transformers' failure becomes one line."""
    from llmaccel import models

    data = tiny_gguf[0].read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(models.ModelLoadError, match=r"^transformers cannot read .*cut\.gguf: [^\n]+$"):
        models.load(str(cut))
    assert cache_entries(cache) == []


def test_failed_write_leaves_nothing_in_the_cache(tiny_gguf, tmp_path, cache, monkeypatch):
    """Disk full while saving: the scratch folder goes, and no folder is left under the model's name."""
    from transformers import tokenization_utils_base

    from llmaccel import models

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tokenization_utils_base.PreTrainedTokenizerBase, "save_pretrained", disk_full)
    with pytest.raises(models.ModelLoadError, match="cannot write the converted model .*No space left on device"):
        models.load(str(copy_of(tiny_gguf[0], tmp_path / "src")))
    assert cache_entries(cache) == []


def test_stale_scratch_folders_are_removed_fresh_ones_kept(tiny_gguf, tmp_path, cache):
    from llmaccel.models import gguf_cache

    (cache / "models").mkdir(parents=True)
    stale, live = cache / "models" / ".convert-killed", cache / "models" / ".convert-running"
    for d in (stale, live):
        d.mkdir()
        (d / "model.safetensors").write_bytes(b"partial")
    old = time.time() - gguf_cache.STALE_SCRATCH_S - 60
    os.utime(stale, (old, old))
    folder = gguf_cache.converted(copy_of(tiny_gguf[0], tmp_path / "src"))
    assert cache_entries(cache) == [".convert-running", folder.name]


def test_a_conversion_finished_elsewhere_first_is_kept(tmp_path):
    """Two processes converting the same file: the second rename fails, the first one's folder stands."""
    from llmaccel.models import gguf_cache

    out, scratch = tmp_path / "model", tmp_path / ".convert-x"
    for d in (out, scratch):
        d.mkdir()
        (d / "config.json").write_text("{}")
    gguf_cache._move_into_place(scratch, out)  # no error
    assert (out / "config.json").exists()


def test_a_folder_without_config_under_the_models_name_is_replaced(tmp_path):
    """Only whole conversions are renamed into place, so a folder there without config.json is debris."""
    from llmaccel.models import gguf_cache

    out, scratch = tmp_path / "model", tmp_path / ".convert-x"
    out.mkdir()
    (out / "model.safetensors").write_bytes(b"partial")
    scratch.mkdir()
    (scratch / "config.json").write_text("{}")
    gguf_cache._move_into_place(scratch, out)
    assert sorted(p.name for p in out.iterdir()) == ["config.json"] and not scratch.exists()


@contextmanager
def unwritable(folder: Path):
    """`folder` (and what it holds) read-only even for root: `chattr +i` (immutable) where the file system
    takes it, else chmod for a non-root user; skips the test where neither makes it so."""
    if os.geteuid() == 0:
        if subprocess.run(["chattr", "-R", "+i", str(folder)], capture_output=True).returncode != 0:
            pytest.skip("running as root and chattr +i does not work here: no way to make a folder read-only")
        undo = ["chattr", "-R", "-i", str(folder)]
    else:
        subprocess.run(["chmod", "-R", "a-w", str(folder)], check=True)
        undo = ["chmod", "-R", "u+w", str(folder)]
    try:
        probe = folder / ".probe"
        try:
            probe.mkdir()
            probe.rmdir()
            pytest.skip(f"{folder} stays writable")
        except OSError:
            pass
        yield
    finally:
        subprocess.run(undo, check=True)


def test_read_only_empty_cache_fails_before_converting(tiny_gguf, tmp_path, cache, monkeypatch):
    from llmaccel import models

    _no_conversion(monkeypatch)
    cache.mkdir()
    with unwritable(cache), pytest.raises(models.ModelLoadError) as e:
        models.load(str(tiny_gguf[0]))
    assert f"the cache folder {cache / 'models'} is not writable" in str(e.value)
    assert "set LLMACCEL_CACHE to a writable folder" in str(e.value)


def test_cache_path_under_a_file_fails_before_converting(tiny_gguf, tmp_path, monkeypatch):
    """The same check without root tricks: LLMACCEL_CACHE under a regular file cannot be created."""
    from llmaccel import models

    _no_conversion(monkeypatch)
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("LLMACCEL_CACHE", str(tmp_path / "a-file" / "cache"))
    with pytest.raises(models.ModelLoadError, match="is not writable .*set LLMACCEL_CACHE to a writable folder"):
        models.load(str(tiny_gguf[0]))


def test_read_only_cache_holding_the_model_loads(tiny_gguf, cache):
    import llmaccel
    from llmaccel import models

    path, reference = tiny_gguf
    models.load_tokenizer(str(path))  # converts
    with unwritable(cache):
        lm = models.load(str(path))
        prompt = lm.tokenizer.encode("he t")
        got = llmaccel.generate(lm, prompt, max_new_tokens=8).token_ids
    assert got == oracle_greedy(reference, prompt, 8, lm.eos_token_ids)
