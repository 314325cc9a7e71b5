"""The LM head's greedy choice through int8 tiles and an error bound (kernels/argmax_head.cpp) against the
argmax of float64 logits, and the model's `greedy` against the argmax of its own logits."""

from __future__ import annotations

import pytest
import torch

from llmaccel.kernels import skinny


@pytest.fixture(scope="module", autouse=True)
def _need_kernel():
    if not skinny.available() or not skinny.has_argmax_head():
        pytest.skip("no AMX int8 tiles here: the head's argmax goes through the logits")


def _oracle(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """argmax of the float64 logits, ties to the lowest id (torch.argmax's rule)."""
    return (x.double() @ w.double().T).argmax(-1)


@pytest.mark.parametrize("v, k", [(1, 1), (5, 3), (16, 64), (33, 70), (1000, 64), (3001, 577), (49152, 576)])
def test_matches_float64_argmax(v, k):
    g = torch.Generator().manual_seed(v * 1000 + k)
    w = torch.randn(v, k, generator=g)
    packed = skinny.pack_argmax_head(w)
    for m in (1, 2, 15, 16, 17, 33):
        x = torch.randn(m, k, generator=g) * 3
        got = skinny.argmax_head(x, packed, w)
        assert got.dtype == torch.int64 and got.shape == (m,)
        assert torch.equal(got, _oracle(x, w)), (m, got, _oracle(x, w))


def test_ties_near_ties_and_outliers():
    """Equal rows (exact ties: the lowest id), rows a hair apart (the bound cannot tell them apart: the
    float64 check must), zero rows, an outlier dimension in x, and a row of x equal to a weight row."""
    g = torch.Generator().manual_seed(1)
    v, k = 4099, 200
    w = torch.randn(v, k, generator=g)
    w[4000] = w[17]  # exact tie with a lower id
    w[2001] = w[2000] * (1 + 1e-6)  # near tie: 2001 wins where x . w_2000 > 0
    w[5:9] = 0
    packed = skinny.pack_argmax_head(w)
    xs = [w[17] * 2, w[2000] * 5, -w[2000] * 5, torch.zeros(k), torch.randn(k, generator=g)]
    spike = torch.randn(k, generator=g)
    spike[3] = 500.0
    xs.append(spike)
    x = torch.stack(xs)
    got = skinny.argmax_head(x, packed, w)
    want = _oracle(x, w)
    assert got[3] in (-1, 0)  # x = 0: every logit ties, more candidates than checked (the caller's logits decide)
    got[3] = want[3]
    assert torch.equal(got, want)
    assert got[0] == 17 and got[1] == 2001


def test_undecided_rows_and_fallback():
    """A non-finite row comes back -1 from the kernel; lean.greedy_head then takes it from the logits,
    as torch.argmax does (the first NaN)."""
    from llmaccel import lean
    from llmaccel.lean import FusedLinear

    g = torch.Generator().manual_seed(2)
    w = torch.randn(300, 64, generator=g)
    x = torch.randn(4, 64, generator=g)
    x[1, 5] = float("nan")
    x[2, 0] = float("inf")
    got = skinny.argmax_head(x, skinny.pack_argmax_head(w), w)
    assert got[1] == -1 and got[2] == -1 and got[0] >= 0 and got[3] >= 0

    class _Stack:  # what greedy_head reads from lean.Stack
        head = FusedLinear([w], [None], use_skinny=True)
        argmax_head = skinny.pack_argmax_head(w)

    ids = lean.greedy_head(_Stack, x)
    want = (x @ w.T).argmax(-1)
    assert ids[0] == want[0] and ids[3] == want[3]
    assert ids[1] == want[1] and ids[2] == want[2]  # the logits' own argmax (NaN rows: the first NaN)


def test_pack_refuses_non_finite_weights():
    w = torch.randn(10, 8)
    w[3, 3] = float("inf")
    assert skinny.pack_argmax_head(w) is None


def test_bad_arguments_raise():
    w = torch.randn(40, 64)
    packed = skinny.pack_argmax_head(w)
    with pytest.raises(ValueError):
        skinny.argmax_head(torch.randn(2, 63), packed, w)  # K does not match
    with pytest.raises(ValueError):
        skinny.argmax_head(torch.randn(2, 64), packed, torch.randn(40, 128))  # not w's tiles
    with pytest.raises(ValueError):
        skinny.argmax_head(torch.randn(2, 64), (packed[0], packed[1][:2]), w)


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_model_greedy_equals_argmax_of_logits(arch):
    """LoadedModel.greedy (int8 head + float64 check) gives the argmax of the logits `forward` returns,
    for chains and tree steps of a tiny model."""
    import copy

    from transformers import AutoModelForCausalLM

    import llmaccel
    from conftest import IdTokenizer, _config

    torch.manual_seed(4)
    model = AutoModelForCausalLM.from_config(_config(arch), dtype=torch.float32).eval()
    a = llmaccel.wrap(copy.deepcopy(model), IdTokenizer(), lean_forward=True)
    assert a.stack.argmax_head is not None
    V = a.vocab_size
    ca, cb = a.new_cache(), a.new_cache()
    prompt = torch.randint(0, V, (1, 30))
    assert a.greedy(prompt, 0, ca, keep=1) == a.forward(prompt, 0, cb, keep=1)[0].argmax(-1).tolist()
    pos = 30
    for k in (1, 2, 5, 16, 17):
        ids = torch.randint(0, V, (1, k))
        got = a.greedy(ids, pos, ca, keep=k)
        logits = a.forward(ids, pos, cb, keep=k)[0]
        # the same hidden states; the logits' argmax can differ only where two logits are within fp32 rounding
        want = logits.argmax(-1).tolist()
        for r, (g_, w_) in enumerate(zip(got, want)):
            assert g_ == w_ or abs(float(logits[r, g_] - logits[r, w_])) <= 1e-5 * float(logits[r].abs().max())
        pos += k
