"""Seeded sampling: every method gives plain sampling's tokens, and plain sampling draws from the right
distribution (chi-square against transformers' own sampling)."""

from __future__ import annotations

import math
import random
import zlib

import pytest
import torch

import llmaccel
from llmaccel import sampling as smp
from llmaccel.engine import Decoder, GenerationError
from llmaccel.methods import METHODS
from llmaccel.sampling import Sampling
from oracle import oracle_greedy, oracle_sample, processed_scores
from test_engine import check_random_cases

COPY_ALL = llmaccel.ReferenceOptions(match_len=1, copy_len=16, adaptive=False)


def random_sampling(rng: random.Random, vocab: int = 96) -> Sampling:
    """Random parameters (cuts, penalties, a bias, temperatures from greedy to hot) and a random seed."""
    return Sampling(
        temperature=rng.choice([0.0, 0.3, 0.7, 1.0, 1.0, 1.5]),
        top_k=rng.choice([0, 0, 3, 20]),
        top_p=rng.choice([1.0, 1.0, 0.95, 0.6]),
        min_p=rng.choice([0.0, 0.0, 0.1]),
        repetition_penalty=rng.choice([1.0, 1.0, 1.3, 0.8]),
        presence_penalty=rng.choice([0.0, 0.0, 0.7, -0.5]),
        frequency_penalty=rng.choice([0.0, 0.0, 0.4]),
        logit_bias=rng.choice([{}, {}, {rng.randrange(vocab): 4.0, rng.randrange(vocab): -100.0}]),
        seed=rng.randrange(-(2**40), 2**63),
    )


@pytest.mark.parametrize("seed", range(4))
def test_sampled_methods_equal_the_oracle(tiny, seed):
    plain, lm = tiny
    check_random_cases(plain, lm, random.Random(seed * 104729 + zlib.crc32(lm.name.encode()) % 1000), 3,
                       sampling=random_sampling)


def test_drafts_are_accepted_under_sampling(tiny):
    """The exact sampled continuation as a reference: nearly every drafted token is kept."""
    plain, lm = tiny
    sp = Sampling(temperature=1.0, top_p=0.9, seed=11)
    prompt = [3, 5, 7, 11]
    want = oracle_sample(plain, prompt, 30, sp, sp.seed)
    got = Decoder(lm, prompt, method="reference", references=[want], max_new_tokens=30, options=COPY_ALL,
                  sampling=sp).run()
    assert got.token_ids == want and got.steps <= 5


@pytest.mark.parametrize("method", METHODS)
def test_stops_under_sampling(tiny, method):
    """Stop strings, EOS inside a draft, and the context end cut a sampled output where plain sampling stops."""
    plain, lm = tiny
    sp = Sampling(temperature=0.8, seed=5)
    prompt = [7, 8, 9]
    want = oracle_sample(plain, prompt, 30, sp, sp.seed)
    stop = f"t{want[8]} t{want[9]} "
    first = next(i for i in range(30) if stop in lm.decode(want[: i + 1]))
    got = llmaccel.generate(lm, prompt, method=method, references=[want], max_new_tokens=30, stop=stop,
                            options=COPY_ALL, sampling=sp)
    assert got.token_ids == want[: first + 1] and got.stop_reason == "stop_string"
    at = [i for i in range(30) if want[i] not in want[:i]][-1]
    lm.eos_token_ids = (want[at],)
    try:
        got = llmaccel.generate(lm, prompt, method=method, references=[want], max_new_tokens=30, options=COPY_ALL,
                                sampling=sp)
    finally:
        lm.eos_token_ids = ()
    assert got.token_ids == want[: at + 1] and got.stop_reason == "eos"
    long = [4, 5] * ((lm.max_context - 6) // 2)
    room = lm.max_context - len(long)
    want = oracle_sample(plain, long, room, sp, sp.seed)
    got = Decoder(lm, long, method=method, references=[want], max_new_tokens=50, sampling=sp,
                  lookahead=llmaccel.LookaheadOptions(window=4, ngram=3, pool_size=3)).run()
    assert got.token_ids == want and got.stop_reason == "context"


def test_seeds(tiny):
    plain, lm = tiny
    prompt = [1, 2, 3, 4]
    runs = [llmaccel.generate(lm, prompt, max_new_tokens=24, sampling=Sampling(temperature=1.0, seed=s)).token_ids
            for s in (1, 1, 2)]
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]  # 24 tokens drawn at T=1 from a random model's wide distributions
    greedy = oracle_greedy(plain, prompt, 24)
    assert llmaccel.generate(lm, prompt, max_new_tokens=24, sampling=Sampling(temperature=0.0, seed=3)).token_ids == greedy
    fresh = llmaccel.generate(lm, prompt, max_new_tokens=24, sampling=Sampling(temperature=1.0))
    again = llmaccel.generate(lm, prompt, max_new_tokens=24, sampling=Sampling(temperature=1.0, seed=fresh.seed))
    assert fresh.seed is not None and again.token_ids == fresh.token_ids


def test_greedy_with_penalties_is_the_argmax_of_processed_logits(tiny):
    plain, lm = tiny
    sp = Sampling(repetition_penalty=1.5, frequency_penalty=0.5, logit_bias={3: 2.0})
    prompt = [3, 3, 4, 5]
    want = oracle_sample(plain, prompt, 20, sp, 0)
    for method in METHODS:
        got = llmaccel.generate(lm, prompt, method=method, references=[want], max_new_tokens=20, sampling=sp)
        assert got.token_ids == want and got.seed is None


@pytest.mark.parametrize("method", METHODS)
def test_logprobs_are_plain_decodings(tiny, method):
    """Per token: log_softmax of the model's logits at that position, the same for every method (to
    fp32 rounding), with the top alternatives in order."""
    plain, lm = tiny
    sp = Sampling(temperature=0.9, seed=2)
    prompt = [5, 6, 7]
    want = oracle_sample(plain, prompt, 20, sp, sp.seed)
    got = llmaccel.generate(lm, prompt, method=method, references=[want], max_new_tokens=20, sampling=sp,
                            logprobs=3, options=COPY_ALL)
    assert got.token_ids == want and len(got.logprobs) == 20
    with torch.inference_mode():
        logits = plain(input_ids=torch.tensor([prompt + want])).logits[0, len(prompt) - 1 : -1].float()  # (20, V)
    lp = torch.log_softmax(logits, -1)
    for i, entry in enumerate(got.logprobs):
        assert entry.token == want[i]
        assert entry.logprob == pytest.approx(float(lp[i, want[i]]), abs=1e-4)
        assert [t for t, _ in entry.top] == lp[i].topk(3).indices.tolist()
        assert [v for _, v in entry.top] == pytest.approx(lp[i].topk(3).values.tolist(), abs=1e-4)
    greedy = llmaccel.generate(lm, prompt, method=method, max_new_tokens=5, logprobs=0)
    assert greedy.token_ids == oracle_greedy(plain, prompt, 5) and all(e.top == () for e in greedy.logprobs)


def test_stream_carries_logprobs(tiny):
    _, lm = tiny
    events = list(llmaccel.stream(lm, [1, 2, 3], max_new_tokens=12, sampling=Sampling(temperature=1.0, seed=4),
                                  logprobs=1))
    assert all(len(e.logprobs) == len(e.new_tokens) for e in events)


@pytest.mark.parametrize("kwargs,match", [
    ({"temperature": -0.1}, "temperature"),
    ({"temperature": math.nan}, "finite"),
    ({"temperature": "hot"}, "number"),
    ({"top_p": 0.0}, "top_p"),
    ({"top_p": 1.5}, "top_p"),
    ({"top_k": -2}, "top_k"),
    ({"top_k": 2.5}, "integer"),
    ({"min_p": 1.1}, "min_p"),
    ({"repetition_penalty": 0.0}, "repetition_penalty"),
    ({"presence_penalty": 2.5}, "presence_penalty"),
    ({"frequency_penalty": -3}, "frequency_penalty"),
    ({"logit_bias": {5: 101}}, "logit_bias"),
    ({"logit_bias": {"x": 1}}, "token ids"),
    ({"logit_bias": [1, 2]}, "map"),
    ({"seed": 1.5}, "seed"),
    ({"seed": True}, "seed"),
])
def test_bad_parameters_are_one_line_errors(kwargs, match):
    with pytest.raises(GenerationError, match=match) as e:
        Sampling(**kwargs)
    assert "\n" not in str(e.value)


def test_bad_engine_arguments(tiny):
    _, lm = tiny
    with pytest.raises(GenerationError, match="outside the vocabulary"):
        Decoder(lm, [1, 2], sampling=Sampling(temperature=1.0, logit_bias={10**6: 1.0}))
    with pytest.raises(GenerationError, match="at most 20"):
        Decoder(lm, [1, 2], logprobs=21)
    with pytest.raises(GenerationError, match="Sampling"):
        Decoder(lm, [1, 2], sampling={"temperature": 1.0})
    assert Sampling(top_k=-1).top_k == 0 and Sampling(logit_bias={"7": 1}).logit_bias == {7: 1.0}


# The noise ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("vocab", [1, 7, 96, 49152, 262145])
def test_noise_kernel_and_torch_give_the_same_bits(vocab):
    from llmaccel.kernels import skinny

    if not skinny.available():
        pytest.skip("the CPU kernels did not build")
    for seed, pos in [(0, 0), (3, 17), (2**63 - 1, 10**6), (-7, 5)]:
        k0, k1 = smp.noise_key(seed, pos)
        assert torch.equal(skinny.gumbel_noise(k0, k1, vocab), smp._noise_torch(k0, k1, vocab))


def test_noise_is_standard_gumbel_and_keyed():
    g = smp._noise_torch(*smp.noise_key(1, 2), 200_000).double()
    assert abs(g.mean().item() - 0.5772157) < 0.01 and abs(g.var().item() - math.pi**2 / 6) < 0.03
    exact = torch.distributions.Gumbel(0.0, 1.0).cdf(torch.tensor([-1.0, 0.0, 1.0, 3.0])).double()
    assert torch.allclose(torch.stack([(g <= x).double().mean() for x in (-1.0, 0.0, 1.0, 3.0)]), exact, atol=0.005)
    other = smp._noise_torch(*smp.noise_key(1, 3), 200_000).double()
    assert abs(torch.corrcoef(torch.stack([g, other]))[0, 1].item()) < 0.01
    assert torch.equal(smp.noise(1, 2, 50), smp.noise(1, 2, 50)) and not torch.equal(smp.noise(1, 2, 50), smp.noise(2, 2, 50))


def test_fast_cuts_equal_the_naive_ones():
    """The sampler's top-k / top-p / min-p (batched rows, partial sorts) keep exactly the oracle's tokens."""
    rng = torch.Generator().manual_seed(0)
    for trial in range(60):
        V = [96, 1000, 5000][trial % 3]
        logits = torch.randn(4, V, generator=rng) * (1 + trial % 5)
        sp = Sampling(temperature=0.7, top_k=[0, 5, 50][trial % 3], top_p=[1.0, 0.9, 0.5, 0.99][trial % 4],
                      min_p=[0.0, 0.05][trial % 2])
        fast = smp.filter_scores(logits / sp.temperature, sp.top_k, sp.top_p, sp.min_p)
        for r in range(4):
            naive = processed_scores(logits[r], sp, [], [])
            assert torch.equal(torch.isinf(fast[r]), torch.isinf(naive)), (trial, r)


def test_fused_choice_equals_the_torch_choice():
    """kernels/sampling.cpp's fused choice and the torch ops pick the same token (cuts, noise, argmax),
    including where the fused choice skips tokens by the noise's bound: flat rows, ties, dropped tokens."""
    from llmaccel.kernels import skinny

    if not skinny.available():
        pytest.skip("the CPU kernels did not build")
    rng = torch.Generator().manual_seed(2)
    same = total = 0
    for trial in range(120):
        V = [96, 1000, 49152][trial % 3]
        sp = Sampling(temperature=[0.3, 0.7, 1.0, 1.6][trial % 4], top_k=[0, 0, 7, 100][trial % 4 - (trial % 2)],
                      top_p=[1.0, 0.95, 0.8][trial % 3 - (trial % 2)], min_p=[0.0, 0.0, 0.05][trial % 3], seed=trial)
        sampler = smp.Sampler(sp, V, [])
        logits = torch.randn(5, V, generator=rng) * (1 + trial % 6)
        logits[1] *= 0.001  # nearly flat: every token within the noise's reach of the best
        logits[2] = torch.randint(0, 3, (V,), generator=rng).float()  # ties everywhere
        logits[3, torch.randint(0, V, (V // 3,), generator=rng)] = -math.inf  # dropped tokens (logit_bias)
        positions = [trial, trial + 1, trial + 1, trial + 7, 10**6]
        fused, plain = sampler._choose_fused(logits, positions), sampler._choose_torch(logits, positions)
        same += sum(a == b for a, b in zip(fused, plain))
        total += len(fused)
    assert same == total


# The distribution -----------------------------------------------------------------------------------

DRAWS = 6000
SETTINGS = [
    dict(temperature=1.0),
    dict(temperature=0.6),
    dict(temperature=1.3, top_k=8),
    dict(temperature=1.0, top_p=0.7),
    dict(temperature=0.8, min_p=0.1),
    dict(temperature=1.0, repetition_penalty=1.4),
]


def _chi2_pvalue(a: torch.Tensor, b: torch.Tensor) -> float:
    """Two-sample chi-square test of homogeneity on token counts; bins with < 5 expected merged."""
    from scipy.stats import chi2_contingency

    order = torch.argsort(a + b, descending=True)
    a, b = a[order].tolist(), b[order].tolist()
    rows, tail = [], [0, 0]
    for x, y in zip(a, b):
        if x + y >= 10:
            rows.append([x, y])
        else:
            tail[0] += x
            tail[1] += y
    if sum(tail) >= 10:
        rows.append(tail)
    return float(chi2_contingency(torch.tensor(rows).T.numpy())[1])


def _transformers_counts(plain, prompt, kwargs, vocab: int) -> torch.Tensor:
    torch.manual_seed(1234)
    gen = dict(kwargs)
    gen.setdefault("top_k", 0)  # transformers' default top_k is 50; 0 turns it off as ours
    with torch.inference_mode():
        out = plain.generate(torch.tensor([prompt]), do_sample=True, max_new_tokens=1, num_return_sequences=DRAWS,
                             pad_token_id=0, **gen)
    return torch.bincount(out[:, -1], minlength=vocab)


def _engine_counts(lm, prompt, kwargs, vocab: int) -> torch.Tensor:
    """The engine's plain sampling over DRAWS seeds: one prefill, then the sampler at that position."""
    dec = Decoder(lm, prompt, max_new_tokens=1, sampling=Sampling(**kwargs, seed=0))
    with torch.inference_mode():
        logits = lm.forward(torch.tensor([prompt]), 0, lm.new_cache(), keep=1)[0]  # (1, V)
    toks = []
    for seed in range(DRAWS):
        dec.sampler.seed = seed
        dec.sampler._noise.clear()
        toks += dec.sampler.choose(logits, [len(prompt)], [()])
    assert Decoder(lm, prompt, max_new_tokens=1, sampling=Sampling(**kwargs, seed=7)).run().token_ids[0] == \
        _first_token(dec, logits, prompt, 7)  # the sampler here is the engine's
    return torch.bincount(torch.tensor(toks), minlength=vocab)


def _first_token(dec, logits, prompt, seed) -> int:
    dec.sampler.seed = seed
    dec.sampler._noise.clear()
    return dec.sampler.choose(logits, [len(prompt)], [()])[0]


@pytest.mark.parametrize("kwargs", SETTINGS, ids=lambda k: ",".join(f"{a}={b}" for a, b in k.items()))
def test_plain_sampling_matches_transformers_distribution(kwargs):
    """Next-token frequencies of the engine's sampling and of transformers' generate(do_sample=True),
    DRAWS each on a tiny random Llama: a chi-square test of homogeneity (fixed seeds: no flakes) must
    not reject at 0.1%. The same test rejects a sampler at the wrong temperature (it has power)."""
    from conftest import build

    plain, lm = build("llama", seed=3)
    prompt = [5, 9, 9, 14, 2, 9, 30]  # repeated tokens: the repetition penalty has something to act on
    vocab = lm.vocab_size
    ours = _engine_counts(lm, prompt, kwargs, vocab)
    theirs = _transformers_counts(plain, prompt, kwargs, vocab)
    assert _chi2_pvalue(ours, theirs) > 1e-3
    wrong = dict(kwargs, temperature=kwargs["temperature"] * 1.25)
    assert _chi2_pvalue(_engine_counts(lm, prompt, wrong, vocab), theirs) < 1e-3
