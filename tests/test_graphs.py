"""The CUDA-graph step path (graphs.py) computed eagerly on the CPU: static cache, padding to a bucket,
masks built from staged inputs. The graphs themselves are recorded in test_cuda.py, on a GPU."""

from __future__ import annotations

import copy
import random

import pytest
import torch

import llmaccel
from conftest import build
from llmaccel.graphs import BUCKETS, GraphedSteps, bucket, step_visibility
from oracle import oracle_greedy
from test_engine import check_random_cases


def _padded(arch: str):
    plain, lm = build(arch)
    lm = llmaccel.wrap(copy.deepcopy(plain), lm.tokenizer, pack=False, lean_forward=False, cuda_graphs=False)
    lm.graphs = GraphedSteps(lm._static_step, torch.device("cpu"), lm.max_context, record=False)
    return plain, lm


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_padded_static_steps_equal_oracle(arch):
    plain, lm = _padded(arch)
    check_random_cases(plain, lm, random.Random(11), 8)
    assert lm.graphs.bucket_steps > 50  # the steps really went through the padded path


def test_padding_rows_do_not_change_the_real_rows():
    """A 3-token chain step in its 4-row bucket gives the logits of the same step run unpadded."""
    plain, lm = _padded("llama")
    prompt = torch.tensor([[5, 6, 7, 8, 9]])
    step = torch.tensor([[10, 11, 12]])
    cache = lm.new_cache()
    lm.forward(prompt, 0, cache, keep=1)
    got = lm.forward(step, 5, cache, keep=3)  # (1, 3, V)
    assert lm.graphs.bucket_steps == 1
    want = plain(input_ids=torch.cat([prompt, step], 1)).logits[:, 5:]
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_a_stale_cache_is_refused():
    _, lm = _padded("llama")
    old = lm.new_cache()
    lm.new_cache()
    with pytest.raises(RuntimeError, match="newer sequence"):
        lm.forward(torch.tensor([[1, 2]]), 0, old, keep=1)


def test_buckets_and_visibility():
    assert [bucket(t) for t in (1, 2, 3, 5, 64)] == [1, 2, 4, 8, 64] and bucket(65) is None
    assert BUCKETS[-1] >= llmaccel.engine.MAX_STEP_TOKENS
    vis = step_visibility(None, 2, 4)
    assert vis.tolist() == [[True, False, False, False], [True, True, False, False],
                            [False, False, True, False], [False, False, False, True]]


@pytest.mark.parametrize("T,masked", [(1, False), (1, True), (5, True)])
def test_folded_gqa_equals_grouped_sdpa(T, masked):
    """The CUDA path's grouped-query attention (query heads folded into rows) against SDPA's own GQA."""
    import torch.nn.functional as F

    from llmaccel.attention import folded_gqa

    g = torch.Generator().manual_seed(T)
    q = torch.randn(1, 9, T, 16, generator=g).transpose(1, 2).contiguous().transpose(1, 2)  # (1, 9, T, 16), strided like a model's
    k, v = torch.randn(2, 1, 3, 40, 16, generator=g)  # (1, 3, 40, 16) each
    mask = torch.rand(1, 1, T, 40, generator=g) < 0.7 if masked else None
    if mask is not None:
        mask[..., 0] = True  # every row sees a key
    want = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=0.25, enable_gqa=True)
    torch.testing.assert_close(folded_gqa(q, k, v, mask, 0.25), want, rtol=1e-5, atol=1e-6)
