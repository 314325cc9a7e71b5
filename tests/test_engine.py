"""Every method must give the naive oracle's tokens, on randomised cases across architectures."""

from __future__ import annotations

import random
import zlib

import pytest
import torch

import llmaccel
from llmaccel.engine import Decoder, GenerationError
from oracle import oracle_greedy, oracle_sample


def _oracle(plain, prompt, max_new_tokens, sampling=None, eos=()):
    if sampling is None:
        return oracle_greedy(plain, prompt, max_new_tokens, eos)
    return oracle_sample(plain, prompt, max_new_tokens, sampling, sampling.seed, eos)


def _case(rng: random.Random, plain, vocab: int, sampling=None):
    """A random prompt, and references that partly copy the true continuation (so drafts get accepted,
    rejected midway, and run into EOS and limits)."""
    alphabet = rng.sample(range(vocab), rng.randint(4, 24))
    prompt = [rng.choice(alphabet) for _ in range(rng.randint(1, 40))]
    truth = _oracle(plain, prompt, 48, sampling)
    refs = []
    for _ in range(rng.randint(0, 4)):
        a = rng.randint(0, len(truth) - 1)
        piece = truth[a : a + rng.randint(1, 30)]
        piece = [t if rng.random() > 0.1 else rng.randrange(vocab) for t in piece]  # some wrong tokens
        refs.append([rng.choice(alphabet) for _ in range(rng.randint(0, 8))] + piece)
    if rng.random() < 0.3:
        refs.append([rng.randrange(vocab) for _ in range(rng.randint(1, 50))])
    # EOS: sometimes a token the true output reaches midway, sometimes none
    eos = (truth[rng.randint(1, len(truth) - 1)],) if rng.random() < 0.4 else ()
    return prompt, refs, eos


def random_options(rng: random.Random) -> tuple[llmaccel.ReferenceOptions, llmaccel.LookaheadOptions]:
    """Random drafting options: guard on and off, chains and trees, windows of every shape."""
    opts = llmaccel.ReferenceOptions(match_len=rng.randint(1, 3), copy_len=rng.randint(1, 20),
                                     adaptive=rng.random() < 0.5, branches=rng.choice([0, 0, 1, 3]))
    la = llmaccel.LookaheadOptions(window=rng.randint(1, 6), ngram=rng.randint(2, 5), pool_size=rng.randint(1, 6),
                                   seed=rng.randrange(100))
    return opts, la


def check_random_cases(plain, lm, rng: random.Random, cases: int, sampling=None) -> None:
    """`cases` random prompts, references, EOS and limits; every method with random options must give the
    oracle's tokens (run on the plain model, on the same device). `sampling`: rng -> a Sampling drawn
    per case (random parameters and seed), or None for greedy decoding."""
    for _ in range(cases):
        sp = sampling(rng) if sampling else None
        prompt, refs, eos = _case(rng, plain, lm.vocab_size, sp)
        max_new = rng.randint(1, 40)
        lm.eos_token_ids = eos
        want = _oracle(plain, prompt, max_new, sp, eos)
        for method in ("greedy", "reference", "lookahead", "auto"):
            opts, la = random_options(rng)
            got = Decoder(lm, prompt, method=method, references=refs, max_new_tokens=max_new, options=opts,
                          lookahead=la, sampling=sp).run()
            assert got.token_ids == want, (method, sp, prompt, refs, eos, max_new, opts, la)
            assert got.steps <= len(want)
    lm.eos_token_ids = ()


@pytest.mark.parametrize("seed", range(6))
def test_methods_equal_oracle(tiny, seed):
    plain, lm = tiny
    check_random_cases(plain, lm, random.Random(seed * 7919 + zlib.crc32(lm.name.encode()) % 1000), 4)


def test_long_context_past_sliding_window(tiny):
    """Mistral and Gemma-3 (window 8) decode far past their window: the mask, not the cache, enforces it."""
    plain, lm = tiny
    rng = random.Random(1)
    prompt = [rng.randrange(lm.vocab_size) for _ in range(30)]
    want = oracle_greedy(plain, prompt, 40)
    got = Decoder(lm, prompt, method="reference", references=[want[5:30]], max_new_tokens=40).run()
    assert got.token_ids == want
    assert got.steps < len(want)  # the reference was used


def test_lookahead_trees_and_window_are_exercised(tiny):
    """On repetitive text the pool offers several continuations per key: real trees (not chains) are
    verified with the window alongside, partial paths are kept, and the output stays exact."""
    plain, lm = tiny
    rng = random.Random(3)
    alphabet = rng.sample(range(lm.vocab_size), 5)
    prompt = [rng.choice(alphabet) for _ in range(60)]
    want = oracle_greedy(plain, prompt, 60)
    la = llmaccel.LookaheadOptions(window=3, ngram=3, pool_size=4)
    dec = Decoder(lm, prompt, method="lookahead", max_new_tokens=60, lookahead=la)
    trees = []
    original = dec._plan

    def spy(pos):
        tree, labels, draft, use = original(pos)
        trees.append(tree)
        assert len(labels) == len(tree) and labels[0] == ""
        return tree, labels, draft, use

    dec._plan = spy
    got = dec.run()
    assert got.token_ids == want
    assert sum(s.window for s in got.step_stats) >= len(got.step_stats) - 1  # the last step has no room
    assert any(not t.is_chain() for t in trees)
    assert any(s.accepted for s in got.step_stats)


def test_reference_saves_steps_on_copied_text(tiny):
    plain, lm = tiny
    prompt = [3, 5, 7, 11]
    want = oracle_greedy(plain, prompt, 30)
    ref = want[:]  # the exact output as a reference
    got = Decoder(lm, prompt, method="reference", references=[ref], max_new_tokens=30,
                  options=llmaccel.ReferenceOptions(match_len=1, copy_len=16, adaptive=False)).run()
    assert got.token_ids == want
    assert got.steps <= 5


def test_stop_strings(tiny):
    plain, lm = tiny
    prompt = [1, 2, 3]
    want = oracle_greedy(plain, prompt, 20)
    stop = f"t{want[6]} "
    got = Decoder(lm, prompt, max_new_tokens=20, stop_strings=[stop]).run()
    first = next(i for i in range(20) if stop in lm.decode(want[: i + 1]))
    assert got.token_ids == want[: first + 1]
    assert got.stop_reason == "stop_string"


@pytest.mark.parametrize(
    "prompt,max_new,match",
    [([], 5, "empty"), ([1, 2], 0, "max_new_tokens"), ([1] * 600, 5, "context"), ([10**6], 4, "vocabulary")],
)
def test_bad_input_is_a_clear_error(tiny, prompt, max_new, match):
    _, lm = tiny
    with pytest.raises(GenerationError, match=match):
        Decoder(lm, prompt, max_new_tokens=max_new)


def test_unknown_method(tiny):
    _, lm = tiny
    with pytest.raises(GenerationError, match="unknown method"):
        Decoder(lm, [1, 2], method="magic")


@pytest.mark.parametrize("method", ["greedy", "reference", "lookahead", "auto"])
def test_context_end_stops_generation(tiny, method):
    """Up to the last position of the context and no further: drafts and the lookahead window
    (GPT-2's learned positions end there) must stay inside it."""
    plain, lm = tiny
    prompt = [4, 5] * ((lm.max_context - 6) // 2)
    room = lm.max_context - len(prompt)
    want = oracle_greedy(plain, prompt, room)
    got = Decoder(lm, prompt, method=method, references=[want], max_new_tokens=50,
                  lookahead=llmaccel.LookaheadOptions(window=4, ngram=3, pool_size=3)).run()
    assert len(got.token_ids) == room and got.stop_reason == "context"
    assert got.token_ids == want


def test_stream_yields_the_same_tokens(tiny):
    plain, lm = tiny
    prompt = [9, 8, 7, 6]
    want = oracle_greedy(plain, prompt, 25)
    chunks = [e.new_tokens for e in llmaccel.stream(lm, prompt, references=[want[3:]], max_new_tokens=25)]
    assert sum(chunks, []) == want
    assert torch.is_grad_enabled()  # inference_mode stays local to the forward


def test_forced_trace_replays_the_engine(tiny):
    """Forced decoding on the model's own output takes exactly the engine's steps (drafts and acceptances)."""
    from llmaccel.drafting.reference import DEFAULT_STEP_COST, forced_trace

    plain, lm = tiny
    rng = random.Random(5)
    for adaptive in (False, True):
        prompt = [rng.randrange(lm.vocab_size) for _ in range(12)]
        want = oracle_greedy(plain, prompt, 40)
        refs = [want[3:20], [rng.randrange(lm.vocab_size) for _ in range(30)] + want[18:]]
        opts = llmaccel.ReferenceOptions(match_len=1, copy_len=8, adaptive=adaptive)
        got = Decoder(lm, prompt, method="reference", references=refs, max_new_tokens=40, options=opts).run()
        assert [(s.tokens_in - 1, s.accepted) for s in got.step_stats] == forced_trace(want, refs, prompt, opts, DEFAULT_STEP_COST)


def test_gguf_like_models_stream_code_blocks():
    """The "-gguf" tiny models (weights quantised as GGUF holds them) take the code-block layout, so the
    oracle tests above run on it: the lean stack's linears and head, and Gemma-3's packed modules."""
    from conftest import build
    from llmaccel.kernels import skinny
    from llmaccel.linear import PackedLinear

    if not skinny.available():
        pytest.skip("skinny gemm kernel could not be built here")
    _, lm = build("llama-gguf")
    layer = lm.stack.layers[0]
    for fused in (layer.qkv, layer.o, layer.gate_up, layer.down, lm.stack.head):
        assert fused.packed.dtype == torch.uint8
    _, lm = build("gemma3-gguf")
    packed = [m.packed for m in lm.model.modules() if isinstance(m, PackedLinear)]
    assert packed and all(p.dtype == torch.uint8 for p in packed)
    _, lm = build("llama")  # random fp32 weights: fp32 panels
    assert lm.stack.layers[0].qkv.packed.dtype == torch.float32
