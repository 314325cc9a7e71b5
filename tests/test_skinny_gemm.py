"""The skinny GEMM kernel (llmaccel.kernels.skinny) against F.linear, for odd shapes and all row counts."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from llmaccel.kernels import skinny


@pytest.fixture(scope="module", autouse=True)
def _need_kernel():
    if not skinny.available():  # compiles on first call (tens of seconds); skipped without a compiler
        pytest.skip("skinny gemm kernel could not be built here")


def _case(m: int, k: int, n: int, with_bias: bool, seed: int):
    g = torch.Generator().manual_seed(seed)
    # entries ~ 1/sqrt(k) so outputs are O(1) and an absolute tolerance means something
    w = torch.randn(n, k, generator=g) / k**0.5
    x = torch.randn(m, k, generator=g)
    b = torch.randn(n, generator=g) if with_bias else None
    return x, w, b


@pytest.mark.parametrize("n", [1, 7, 17, 48, 100, 577])
@pytest.mark.parametrize("k", [1, 5, 576, 1537])
@pytest.mark.parametrize("with_bias", [False, True])
def test_matches_f_linear(n, k, with_bias):
    for i, m in enumerate([1, 2, 3, 8, 9, 16, 17, 33, 40]):
        x, w, b = _case(m, k, n, with_bias, seed=1000 * n + 10 * k + i)
        y = skinny.linear(x, skinny.pack(w), n, b)
        assert y.shape == (m, n)
        torch.testing.assert_close(y, F.linear(x, w, b), rtol=1e-5, atol=2e-5)


def test_random_shapes():
    g = torch.Generator().manual_seed(7)
    for _ in range(40):
        m = int(torch.randint(1, 41, (1,), generator=g))
        k = int(torch.randint(1, 1600, (1,), generator=g))
        n = int(torch.randint(1, 700, (1,), generator=g))
        x, w, b = _case(m, k, n, bool(torch.randint(0, 2, (1,), generator=g)), seed=m * 7919 + k * 31 + n)
        torch.testing.assert_close(skinny.linear(x, skinny.pack(w), n, b), F.linear(x, w, b), rtol=1e-5, atol=2e-5)


def test_pack_layout_and_leading_dims():
    nb = skinny.panel_width()
    w = torch.arange(3 * 5, dtype=torch.float32).view(3, 5)
    p = skinny.pack(w)
    assert p.shape == (1, 5, nb)
    assert torch.equal(p[0, :, :3], w.t()) and not p[0, :, 3:].any()
    x = torch.randn(2, 3, 5)  # (..., K) inputs keep their leading dims
    torch.testing.assert_close(skinny.linear(x, p, 3), F.linear(x, w), rtol=1e-5, atol=1e-4)
    xt = torch.randn(5, 4).t()  # non-contiguous input
    torch.testing.assert_close(skinny.linear(xt, p, 3), F.linear(xt, w), rtol=1e-5, atol=1e-4)


def test_bad_arguments_raise():
    p = skinny.pack(torch.randn(10, 8))
    with pytest.raises(ValueError):
        skinny.linear(torch.randn(2, 9), p, 10)  # K mismatch
    with pytest.raises(ValueError):
        skinny.linear(torch.randn(2, 8), p, 10 + skinny.panel_width())  # n beyond the panels
    with pytest.raises(ValueError):
        skinny.linear(torch.randn(2, 8), p, 10, torch.randn(9))  # bias length
    with pytest.raises(RuntimeError):  # no autograd: refuse rather than silently drop the graph
        skinny.linear(torch.randn(2, 8, requires_grad=True), p, 10)
    with torch.no_grad():
        assert skinny.linear(torch.randn(2, 8, requires_grad=True), p, 10).shape == (2, 10)


def test_empty_and_other_dtypes():
    w, b = torch.randn(5, 8), torch.randn(5)
    p = skinny.pack(w)
    assert skinny.linear(torch.randn(0, 8), p, 5, b).shape == (0, 5)
    x = torch.randn(3, 8, dtype=torch.float64)
    torch.testing.assert_close(skinny.linear(x, p, 5, b), F.linear(x.float(), w, b), rtol=1e-5, atol=1e-4)


# ---- block-coded weights (GGUF Q4_1 / Q8_0 blocks streamed as codes) --------------------------------

from llmaccel.kernels.skinny import quantize_like_gguf


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("n, k", [(1, 32), (7, 64), (48, 576), (100, 1536), (577, 96)])
def test_codes_equal_fp32_panels_bitwise(bits, n, k):
    g = torch.Generator().manual_seed(n * k + bits)
    w = quantize_like_gguf(torch.randn(n, k, generator=g) * 0.05 - 0.01, bits)
    found = skinny.block_codes(w)
    assert found is not None and found[3] == bits
    d, m, q, _ = found
    assert torch.equal((d[..., None] * q.float() + m[..., None]).view(n, k), w)  # decodes to the weights
    codes, panels = skinny.pack(w), skinny.pack(w, codes=False)
    assert codes.dtype == torch.uint8 and codes.shape[-3:-1] == (panels.shape[0], k // 32)
    # on an AMX CPU: the vector path's layout, then the same blocks in the AMX tiles' order
    assert codes.dim() == (4 if skinny.has_amx() else 3)
    assert codes.numel() < panels.numel() * 4  # fewer bytes than the fp32 panels
    b = torch.randn(n, generator=g)
    skinny.use_amx(False)  # the vector path: the same fp32 products and sums as the fp32 panels
    try:
        for m_rows in [1, 2, 3, 4, 5, 8, 9, 16, 17, 33, 40]:
            x = torch.randn(m_rows, k, generator=g)
            # the same fp32 weights in the same order: the codes change what is read, not what is computed
            assert torch.equal(skinny.linear(x, codes, n, b), skinny.linear(x, panels, n, b))
            assert torch.equal(skinny.linear(x, codes, n), skinny.linear(x, panels, n))
            torch.testing.assert_close(skinny.linear(x, codes, n, b), F.linear(x, w, b), rtol=1e-5, atol=2e-5)
    finally:
        amx = skinny.use_amx(True)  # whether this CPU has the AMX path (use_amx(False) returns False)
    if amx:  # AMX tiles (CPUs that have them; 8-bit codes from 3 rows): block sums regrouped, fp32 accuracy
        for m_rows in [1, 2, 3, 4, 5, 6, 8, 9, 16, 17, 33, 40]:  # up to 5 rows x's three parts share one tile
            x = torch.randn(m_rows, k, generator=g) * 3
            exact = (x.double() @ w.double().T + b.double()).float()
            got, vec = skinny.linear(x, codes, n, b), skinny.linear(x, panels, n, b)
            torch.testing.assert_close(got, exact, rtol=1e-5, atol=2e-5)
            # no less accurate than the fp32 kernel (each block's sum is exact products in fp32)
            assert (got - exact).abs().max() <= 2 * (vec - exact).abs().max() + 1e-6
            if codes.dim() == 4:  # the AMX-order copy decodes to the same tiles as the vector layout
                assert torch.equal(got, skinny.linear(x, codes[0].contiguous(), n, b))


def test_codes_found_only_where_exact():
    g = torch.Generator().manual_seed(3)
    assert skinny.block_codes(torch.randn(8, 64, generator=g)) is None  # plain fp32 weights
    assert skinny.pack(torch.randn(8, 64, generator=g)).dtype == torch.float32
    w = quantize_like_gguf(torch.randn(8, 64, generator=g), 4)
    assert skinny.block_codes(w[:, :48]) is None  # K not a multiple of the block
    w2 = w.clone()
    w2[3, 17] = torch.nextafter(w2[3, 17], torch.tensor(1.0))  # one weight off by one ulp
    assert skinny.block_codes(w2) is None
    assert skinny.pack(w2).dtype == torch.float32
    w3 = w.clone()
    w3[2, 32:] = 0.25  # a constant block (d = 0) still codes exactly
    assert skinny.block_codes(w3) is not None
    w3[0, 0] = float("nan")
    assert skinny.block_codes(w3) is None


def test_codes_with_d_next_to_the_estimate():
    # |m| >> d: the block maximum d * 15 + m loses bits when rounded, so (max - min) / 15 rounds to an
    # fp16 neighbour of the d the block was made with in some blocks; those need the neighbour search
    g = torch.Generator().manual_seed(5)
    d = (torch.rand(256, 1, generator=g) * 1e-4 + 5e-5).half().float()  # fp16 numbers, as GGUF stores
    m = (-torch.rand(256, 1, generator=g) * 8 - 8).half().float()
    q = torch.randint(0, 16, (256, 32), generator=g)
    q[:, 0], q[:, 1] = 0, 15
    w = d * q + m
    assert (((w.amax(-1) - w.amin(-1)) / 15).half().float() != d[:, 0]).any()  # the case is exercised
    found = skinny.block_codes(w)
    assert found is not None and found[3] == 4
    assert torch.equal((found[0][..., None] * found[2].float() + found[1][..., None]).view(256, 32), w)


def test_bad_code_layout_raises():
    w = quantize_like_gguf(torch.randn(8, 64), 4)
    codes = skinny.pack(w)
    with pytest.raises(ValueError):
        skinny.linear(torch.randn(2, 64), codes[..., :-1].contiguous(), 8)  # not a block size
    with pytest.raises(ValueError):
        skinny.linear(torch.randn(2, 32), codes, 8)  # K mismatch


@pytest.mark.parametrize("V", [1, 3, 15, 16, 17, 33, 100, 4099])
def test_argmax_matches_torch(V):
    """The kernel's argmax is torch.argmax: first index on ties, the first NaN wins, rows of -inf, any length."""
    g = torch.Generator().manual_seed(V)
    for rows in (1, 2, 5, 16):
        x = torch.randn(rows, V, generator=g)
        x[:, ::7] = x.max()  # ties all over the row
        cases = [x, torch.randint(0, 3, (rows, V), generator=g).float(), torch.full((rows, V), float("-inf"))]
        y = x.clone()
        y[0, V // 2] = float("nan")
        y[-1, V - 1] = float("nan")
        y[-1, 0 if V < 3 else 2] = float("nan")
        cases.append(y)
        for c in cases:
            assert torch.equal(skinny.argmax(c), c.argmax(-1))
    x = torch.randn(2, 3, V, generator=g)
    assert torch.equal(skinny.argmax(x), x.argmax(-1))  # leading dims kept
    assert torch.equal(skinny.argmax(x.transpose(0, 1)), x.transpose(0, 1).argmax(-1))  # non-contiguous
    assert torch.equal(skinny.argmax(x.double()), x.double().argmax(-1))  # other dtypes through torch


@pytest.mark.parametrize("T, I", [(1, 1536), (3, 40), (16, 1536), (25, 37), (4, 7)])
def test_silu_mul_equals_aten_bitwise(T, I):
    """The C++ layer's MLP activation is at::silu(gate) * up to the bit (the same vector exp as ATen's own
    kernel on this CPU), full vectors and tails, over values from tiny to past exp's overflow."""
    g = torch.Generator().manual_seed(T * 100 + I)
    gu = torch.randn(T, 2 * I, generator=g) * torch.logspace(-6, 2.2, 2 * I)[torch.randperm(2 * I, generator=g)]
    gu[0, :3] = torch.tensor([0.0, -100.0, 89.0])[: min(3, I)]
    want = F.silu(gu[:, :I]) * gu[:, I:]
    got = skinny.silu_mul(gu)
    assert got.shape == (T, I) and torch.equal(got, want)
    assert torch.equal(skinny.silu_mul(gu.T.contiguous().T), want)  # a strided input is read as its values
    with pytest.raises(ValueError, match="silu_mul"):
        skinny.silu_mul(gu[:, :-1])
