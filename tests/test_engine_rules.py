"""The engine's rules beside its exactness: stop reasons inside a drafted step, `auto` opening its window,
the step-token cap, the same steps every run for a given cost table, and bad input as clear errors."""

from __future__ import annotations

import random

import pytest

import llmaccel
from llmaccel import engine
from llmaccel.drafting.reference import DEFAULT_STEP_COST, step_cost_table
from llmaccel.errors import GenerationError, InputTypeError
from oracle import oracle_greedy

METHODS = ("greedy", "reference", "lookahead", "auto")
COPY_ALL = llmaccel.ReferenceOptions(copy_len=16, adaptive=False)  # the whole reference is drafted


def _events(lm, prompt, **kwargs):
    events = list(llmaccel.stream(lm, prompt, **kwargs))
    return events, [t for e in events for t in e.new_tokens]


@pytest.mark.parametrize("method", METHODS)
def test_stop_string_cuts_a_draft_mid_step(tiny, method):
    """A stop string met inside a step's accepted tokens ends the output there: the rest is dropped."""
    plain, lm = tiny
    prompt = [7, 8, 9]
    want = oracle_greedy(plain, prompt, 30)
    cut = 9  # index of the token whose text completes the stop string
    stop = f"t{want[cut - 1]} t{want[cut]} "
    first = next(i for i in range(30) if stop in lm.decode(want[: i + 1]))
    events, got = _events(lm, prompt, method=method, references=[want], max_new_tokens=30, stop=[stop],
                          options=COPY_ALL)
    assert got == want[: first + 1]
    last = events[-1]
    if method != "greedy":
        assert last.stat is not None and last.stat.accepted + 1 > len(last.new_tokens)  # cut inside the step
    result = llmaccel.generate(lm, prompt, method=method, references=[want], max_new_tokens=30, stop=stop,
                               options=COPY_ALL)  # one string is one stop string
    assert result.token_ids == got and result.stop_reason == "stop_string"


@pytest.mark.parametrize("method", METHODS)
def test_eos_and_length_stop_inside_a_step(tiny, method):
    plain, lm = tiny
    prompt = [2, 4, 6, 8]
    want = oracle_greedy(plain, prompt, 30)
    at = [i for i in range(30) if want[i] not in want[:i]][-1]  # a token's first occurrence, as late as any
    lm.eos_token_ids = (want[at],)
    try:
        result = llmaccel.generate(lm, prompt, method=method, references=[want], max_new_tokens=30, options=COPY_ALL)
    finally:
        lm.eos_token_ids = ()
    assert result.token_ids == want[: at + 1] and result.stop_reason == "eos"
    result = llmaccel.generate(lm, prompt, method=method, references=[want], max_new_tokens=11, options=COPY_ALL)
    assert result.token_ids == want[:11] and result.stop_reason == "length"
    if method != "greedy":
        assert result.steps < 11  # the drafts were used, and the limit cut one


def test_auto_opens_its_window_on_repetitive_text(tiny):
    plain, lm = tiny
    rng = random.Random(11)
    alphabet = rng.sample(range(lm.vocab_size), 4)
    prompt = [rng.choice(alphabet) for _ in range(50)]
    want = oracle_greedy(plain, prompt, 60)
    la = llmaccel.LookaheadOptions(window=2, ngram=3, pool_size=3, explore_every=2, max_explore_every=4)
    result = llmaccel.generate(lm, prompt, method="auto", max_new_tokens=60, lookahead=la,
                               options=llmaccel.ReferenceOptions(copy_len=4))  # 15+ steps: room to explore
    assert result.token_ids == want
    assert any(s.window for s in result.step_stats)
    assert not all(s.window for s in result.step_stats)  # the gate decides per step


def test_steps_never_exceed_the_cap(tiny):
    plain, lm = tiny
    prompt = [3, 4, 5] * 12
    want = oracle_greedy(plain, prompt, 50)
    la = llmaccel.LookaheadOptions(window=16, ngram=3, pool_size=8)  # 32 window tokens, the most allowed
    opts = llmaccel.ReferenceOptions(copy_len=200, adaptive=False, branches=4)
    for method in ("reference", "lookahead"):
        result = llmaccel.generate(lm, prompt, method=method, references=[want, want[::-1]], max_new_tokens=50,
                                   options=opts, lookahead=la)
        assert result.token_ids == want
        assert max(s.tokens_in for s in result.step_stats) <= engine.MAX_STEP_TOKENS
    with pytest.raises(GenerationError, match="at most 32"):
        llmaccel.LookaheadOptions(window=17, ngram=3)


@pytest.mark.parametrize("method", ["reference", "lookahead", "auto"])
def test_same_table_same_steps(tiny, method):
    """Drafting reads no clock: with one cost table, ten runs take the same steps."""
    plain, lm = tiny
    rng = random.Random(4)
    prompt = [rng.randrange(lm.vocab_size) for _ in range(20)]
    want = oracle_greedy(plain, prompt, 40)
    refs = [want[2:25], [rng.randrange(lm.vocab_size) for _ in range(40)]]
    dear = step_cost_table({1: 1.0, 2: 1.3, 4: 1.9, 8: 3.0, 16: 5.0, 32: 9.0})
    traces = set()
    for _ in range(10):
        result = llmaccel.generate(lm, prompt, method=method, references=refs, max_new_tokens=40, step_cost=dear)
        assert result.token_ids == want
        traces.add(tuple((s.tokens_in, s.accepted, s.window) for s in result.step_stats))
    assert len(traces) == 1
    cheap = llmaccel.generate(lm, prompt, method=method, references=refs, max_new_tokens=40,
                              step_cost=DEFAULT_STEP_COST)
    assert cheap.token_ids == want
    if method == "reference":  # the table sizes the drafts (with a window, fewer steps carry fewer windows)
        assert cheap.drafted >= llmaccel.generate(lm, prompt, method=method, references=refs, max_new_tokens=40,
                                                  step_cost=dear).drafted


def test_the_models_table_is_used_unless_one_is_given(tiny):
    plain, lm = tiny
    prompt = [5, 6, 7, 5, 6]
    want = oracle_greedy(plain, prompt, 30)
    never = step_cost_table({1: 1.0, 2: 2.0, 4: 4.0})  # a drafted token costs a whole step: never draft
    lm.step_cost = never
    try:
        assert llmaccel.generate(lm, prompt, references=[want], max_new_tokens=30).drafted == 0
        assert llmaccel.generate(lm, prompt, references=[want], max_new_tokens=30,
                                 step_cost=DEFAULT_STEP_COST).drafted > 0
    finally:
        lm.step_cost = None


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"prompt": b"t1 t2"}, InputTypeError, "bytes"),
        ({"prompt": [1.7, 2.2]}, InputTypeError, "integer token ids"),
        ({"prompt": [True, 2]}, InputTypeError, "integer token ids"),
        ({"max_new_tokens": 2.5}, InputTypeError, "max_new_tokens must be an integer"),
        ({"max_new_tokens": "8"}, InputTypeError, "max_new_tokens must be an integer"),
        ({"max_new_tokens": 0}, GenerationError, "at least 1"),
        ({"references": [[10**7]]}, GenerationError, "outside the vocabulary"),
        ({"references": [[1, 2, 96]]}, GenerationError, "outside the vocabulary"),
        ({"references": [[-5]]}, GenerationError, "outside the vocabulary"),
        ({"references": [b"t1"]}, InputTypeError, "bytes"),
        ({"references": 5}, InputTypeError, "references must be a list"),
        ({"stop": [3]}, InputTypeError, "stop strings must be strings"),
        ({"options": {"copy_len": 4}}, InputTypeError, "ReferenceOptions"),
        ({"method": "magic"}, GenerationError, "unknown method"),
        ({"step_cost": [0.0, 1.0, -2.0]}, GenerationError, "step-cost table"),
    ],
)
def test_bad_api_input_is_a_documented_error(tiny, kwargs, error, match):
    _, lm = tiny
    args = {"prompt": [1, 2, 3], "max_new_tokens": 4, **kwargs}
    for method in METHODS if "method" not in kwargs else [kwargs["method"]]:
        args.setdefault("method", method)
        with pytest.raises(error, match=match):
            llmaccel.generate(lm, **args)
        with pytest.raises(error, match=match):  # at the call, before the first step
            llmaccel.stream(lm, **args)
        assert issubclass(error, ValueError)


@pytest.mark.parametrize("make,match", [
    (lambda: llmaccel.ReferenceOptions(match_len=0), "match_len must be at least 1"),
    (lambda: llmaccel.ReferenceOptions(copy_len=-1), "copy_len must be at least 0"),
    (lambda: llmaccel.ReferenceOptions(branches=1.5), "branches must be an integer"),
    (lambda: llmaccel.LookaheadOptions(window=0), "window must be at least 1"),
    (lambda: llmaccel.LookaheadOptions(ngram=1), "ngram must be at least 2"),
])
def test_options_check_their_values(make, match):
    with pytest.raises(GenerationError, match=match):
        make()


def test_one_string_is_one_reference_not_its_characters(tiny):
    plain, lm = tiny
    prompt = [1, 2, 3]
    want = oracle_greedy(plain, prompt, 12)
    text = " ".join(f"t{t}" for t in want)
    one = llmaccel.generate(lm, prompt, references=text, max_new_tokens=12, options=COPY_ALL)
    listed = llmaccel.generate(lm, prompt, references=[text], max_new_tokens=12, options=COPY_ALL)
    assert one.token_ids == listed.token_ids == want
    assert [s.tokens_in for s in one.step_stats] == [s.tokens_in for s in listed.step_stats]


def test_too_large_references_are_refused_before_any_work(tiny, monkeypatch):
    _, lm = tiny
    monkeypatch.setattr(engine, "MAX_REFERENCE_TOKENS", 100)
    with pytest.raises(GenerationError, match="references hold 120 tokens"):
        llmaccel.generate(lm, [1, 2], references=[[3] * 60, [4] * 60], max_new_tokens=4)
    assert llmaccel.generate(lm, [1, 2], references=[[3] * 50, [4] * 50], max_new_tokens=4).token_ids
    monkeypatch.setattr(engine, "MAX_REFERENCE_CHARS", 1000)
    with pytest.raises(GenerationError, match="1,200 characters"):  # text: refused before it is tokenized
        llmaccel.generate(lm, [1, 2], references=["t1 " * 400], max_new_tokens=4)


def test_draft_sources_are_counted_per_reference(tiny):
    """Drafted and accepted tokens are counted under the label of the reference they were copied from."""
    import llmaccel

    _, lm = tiny
    prompt = [5, 6, 7, 8, 9]
    target = llmaccel.generate(lm, prompt, max_new_tokens=30, method="greedy").token_ids
    unrelated = [(3 * i + 1) % 90 for i in range(40)]
    r = llmaccel.generate(lm, prompt, max_new_tokens=30, method="reference", references=[unrelated, [9, *target]],
                          reference_sources=["other", "answer"])
    assert r.token_ids == target
    assert r.accepted_by_source().get("answer", 0) >= 15 and "other" not in r.accepted_by_source()
    assert r.drafted_by_source()["answer"] >= r.accepted_by_source()["answer"]
    assert sum(r.accepted_by_source().values()) == r.accepted
    events = list(llmaccel.stream(lm, prompt, max_new_tokens=30, method="reference", references=[[9, *target]]))
    sources = [s for e in events for s in e.sources]
    assert len(sources) == 30 and sources.count("references") == r.accepted_by_source()["answer"]


def test_prompt_cache_gives_the_tokens_of_a_cold_prefill(tiny):
    """A follow-up prompt (the earlier prompt + its answer + more) takes the cached entries and
    prefills only the rest; a shorter prompt takes all but its last token; tokens equal a cold
    prefill's, greedy and sampled, for every method."""
    import llmaccel

    _, lm = tiny
    rng = random.Random(11)
    pc = llmaccel.PromptCache()
    first = [rng.randrange(lm.vocab_size) for _ in range(40)]
    a = llmaccel.generate(lm, first, max_new_tokens=20, prompt_cache=pc)
    assert a.cached_prompt_tokens == 0 and len(pc) == 1
    follow = [*first, *a.token_ids, *(rng.randrange(lm.vocab_size) for _ in range(7))]
    shorter = first[:30]
    for prompt, reused in ((follow, len(first) + 19), (shorter, 29)):
        for method, sampling in (("greedy", None), ("auto", None), ("reference", llmaccel.Sampling(temperature=0.8, seed=3))):
            cold = llmaccel.generate(lm, prompt, max_new_tokens=16, method=method, sampling=sampling)
            warm = llmaccel.generate(lm, prompt, max_new_tokens=16, method=method, sampling=sampling, prompt_cache=pc)
            assert warm.token_ids == cold.token_ids, (method, len(prompt))
            assert warm.cached_prompt_tokens >= reused
    assert pc.hits >= 6 and pc.nbytes <= pc.max_bytes
    small = llmaccel.PromptCache(max_bytes=1)  # nothing fits: every lookup misses, output unchanged
    assert llmaccel.generate(lm, follow, max_new_tokens=8, prompt_cache=small).token_ids == \
        llmaccel.generate(lm, follow, max_new_tokens=8).token_ids and len(small) == 0
