"""The engine on a CUDA device: every method equals the naive oracle run on the same device.

CI has no GPU, so these are skipped there; they run on the project's GPU machine (BENCHMARKS.md, "On a
GPU" gives the command). On CUDA the engine runs transformers' modules with llmaccel's attention and masks
(the C++ kernels are for the CPU): Llama and Qwen2 with their steps recorded as CUDA graphs on a static
cache (graphs.py), the others eagerly on llmaccel's growing cache.
"""

from __future__ import annotations

import json
import random

import pytest
import torch

import llmaccel
from conftest import build, rows_file
from llmaccel.cli import main
from llmaccel.engine import Decoder
from test_engine import check_random_cases

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

CUDA_ARCHS = ["llama", "qwen2", "mistral", "gemma3", "gpt2"]


@pytest.fixture(scope="module", params=CUDA_ARCHS)
def tiny_cuda(request):
    return build(request.param, device="cuda")


@pytest.mark.parametrize("seed", range(4))
def test_methods_equal_oracle_on_cuda(tiny_cuda, seed):
    plain, lm = tiny_cuda
    assert lm.device.type == "cuda" and plain.device.type == "cuda"
    check_random_cases(plain, lm, random.Random(seed * 104729 + len(lm.name)), 4)
    if lm.model.config.model_type in ("llama", "qwen2"):  # steps through recorded CUDA graphs
        assert lm.graphs is not None and lm.graphs.graphs and lm.graphs.bucket_steps > 0
    else:
        assert lm.graphs is None


@pytest.mark.parametrize("seed", range(2))
def test_sampled_methods_equal_oracle_on_cuda(tiny_cuda, seed):
    """Seeded sampling on the GPU: every method gives the naive oracle's sampled tokens (noise from the
    CPU, the cuts and the choice on the GPU)."""
    from test_sampling import random_sampling

    plain, lm = tiny_cuda
    check_random_cases(plain, lm, random.Random(seed * 7919 + len(lm.name)), 3, sampling=random_sampling)


def test_graph_steps_equal_eager_steps_on_cuda():
    """The same sequence through the graphs and eagerly: the same tokens, and logits within rounding."""
    plain, lm = build("llama", seed=3, device="cuda")
    eager = llmaccel.wrap(plain, lm.tokenizer, cuda_graphs=False)
    assert lm.graphs is not None and eager.graphs is None
    rng = random.Random(5)
    for _ in range(6):
        prompt = [rng.randrange(lm.vocab_size) for _ in range(rng.randint(1, 30))]
        refs = [[rng.randrange(lm.vocab_size) for _ in range(40)]]
        for method in ("greedy", "lookahead"):
            a = Decoder(lm, prompt, method=method, references=refs, max_new_tokens=30).run()
            b = Decoder(eager, prompt, method=method, references=refs, max_new_tokens=30).run()
            assert a.token_ids == b.token_ids
    ids = torch.tensor([[1, 2, 3, 4, 5, 6]])
    caches = [m.new_cache() for m in (lm, eager)]
    for m, c in zip((lm, eager), caches):
        m.forward(ids[:, :3].to(m.input_device), 0, c, keep=1)
    got, want = (m.forward(ids[:, 3:].to(m.input_device), 3, c, keep=3) for m, c in zip((lm, eager), caches))
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_bench_on_cuda_matches_hf_greedy(model_dir, tmp_path, capsys):
    """`llmaccel bench --device cuda`: both models on the GPU, every method equal to hf-greedy there."""
    d, _ = model_dir
    rows = rows_file(tmp_path / "rows.jsonl", [("t5 t6", ["t1 t2 t3 t4", "t3 t4 t5"], "t1"),
                                               ("t7 t8 t9 t1", ["t7 t8 t9"], "t1")])
    out = tmp_path / "out.json"
    code = main(["bench", "--data", str(rows), "--model", str(d), "--device", "cuda", "--max-new-tokens", "10",
                 "--json", str(out), "--methods", "hf-greedy,hf-pld,greedy,reference,lookahead,auto"])
    capsys.readouterr()
    assert code == 0
    doc = json.loads(out.read_text())
    assert "device" in doc
    for m, summary in doc["summary"].items():
        assert summary["match_rate_vs_hf_greedy"] == 1.0, m
