"""The OpenAI-compatible server on a tiny model, through the real `openai` client and raw HTTP on loopback:
answers equal llmaccel.generate's (greedy and seeded sampling, streamed or not, every method), draft
sources counted, hostile input answered with 4xx, keys, the queue, disconnects, concurrent clients."""

from __future__ import annotations

import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import torch

import llmaccel
from llmaccel.server import ServerConfig, create_app
from llmaccel.server.protocol import Limits
from llmaccel.server.text import TextStream

openai = pytest.importorskip("openai")
uvicorn = pytest.importorskip("uvicorn")

# user turns start with t1, assistant turns with t2, system with t3; the answer follows a t2
TEMPLATE = ("{% for m in messages %}{% if m['role'] == 'user' %}t1 {% elif m['role'] == 'assistant' %}t2 "
            "{% else %}t3 {% endif %}{{ m['content'] }} {% endfor %}{% if add_generation_prompt %}t2{% endif %}")
KEY = "test-key-123456"


@pytest.fixture(scope="module")
def chat_model(tmp_path_factory):
    """A tiny Llama model folder with a word-level tokenizer (token i is `t{i}`) and a chat template."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    d = tmp_path_factory.mktemp("tiny-chat")
    vocab = {f"t{i}": i for i in range(95)} | {"[UNK]": 95}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]")
    fast.chat_template = TEMPLATE
    fast.save_pretrained(d)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=512, initializer_range=0.3,
                      bos_token_id=None, eos_token_id=None, pad_token_id=None)
    LlamaForCausalLM(cfg).eval().save_pretrained(d)
    return llmaccel.load(str(d))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    def __init__(self, lm, config: ServerConfig) -> None:
        self.app = create_app(lm, config)
        self.port = _free_port()
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="error"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self):
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started:
            assert time.time() < deadline, "the server did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=30)


@pytest.fixture(scope="module")
def server(chat_model):
    with LiveServer(chat_model, ServerConfig(max_queue=64)) as s:
        yield s


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)


def words(ids) -> str:
    return " ".join(f"t{i}" for i in ids)


def expected(lm, messages, **kw):
    return llmaccel.generate(lm, lm.chat_prompt(messages), **kw)


CONVERSATION = [{"role": "system", "content": "t3 t4 t5"}, {"role": "user", "content": "t10 t11 t12 t13 t14"}]


@pytest.mark.parametrize("method", ["greedy", "reference", "lookahead", "auto"])
def test_chat_equals_generate_for_every_method(chat_model, client, method):
    ref = words(range(20, 60))
    want = expected(chat_model, CONVERSATION, max_new_tokens=24, references=[ref], method=method)
    got = client.chat.completions.create(model=chat_model.name, messages=CONVERSATION, max_tokens=24, temperature=0,
                                         extra_body={"references": [ref], "method": method})
    assert got.choices[0].message.content == want.text.strip() or got.choices[0].message.content == want.text
    assert got.usage.completion_tokens == len(want.token_ids)
    assert got.usage.prompt_tokens == want.prompt_tokens
    assert got.choices[0].finish_reason == "length"
    extra = got.model_extra["llmaccel"]
    assert extra["method"] == method and extra["steps"] >= 1


def test_stream_equals_non_stream(chat_model, client):
    kw = dict(model=chat_model.name, messages=CONVERSATION, max_tokens=30, temperature=0)
    whole = client.chat.completions.create(**kw).choices[0].message.content
    chunks = list(client.chat.completions.create(**kw, stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole
    assert chunks[-1].usage.completion_tokens == 30 and not chunks[-1].choices
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"


def test_seeded_sampling_equals_generate_and_repeats(chat_model, client):
    sp = llmaccel.Sampling(temperature=0.9, top_p=0.95, seed=7)
    want = expected(chat_model, CONVERSATION, max_new_tokens=20, sampling=sp, method="greedy")
    drafts = {"references": [want.text, words(range(60, 90))]}
    for method, extra in (("greedy", {}), ("auto", {}), ("reference", drafts), ("auto", drafts)):
        got = client.chat.completions.create(model=chat_model.name, messages=CONVERSATION, max_tokens=20,
                                             temperature=0.9, top_p=0.95, seed=7, extra_body={"method": method, **extra},
                                             prediction={"type": "content", "content": want.text} if extra else None)
        assert got.choices[0].message.content == want.text.strip()
        assert got.model_extra["llmaccel"]["seed"] == 7
    assert sum(got.model_extra["llmaccel"]["accepted"].values()) >= 10  # drafts were taken, the answer the same


def test_prediction_is_drafted_and_counted(chat_model, client):
    want = expected(chat_model, CONVERSATION, max_new_tokens=24, method="greedy")
    prediction = want.text.strip()
    got = client.chat.completions.create(model=chat_model.name, messages=CONVERSATION, max_tokens=24, temperature=0,
                                         prediction={"type": "content", "content": prediction},
                                         extra_body={"method": "reference"})
    assert got.choices[0].message.content == prediction  # the prediction changes the speed, not the answer
    details = got.usage.completion_tokens_details
    assert details.accepted_prediction_tokens >= 10
    extra = got.model_extra["llmaccel"]
    assert extra["accepted"]["prediction"] == details.accepted_prediction_tokens
    assert extra["steps"] < 24
    # a wrong prediction: rejected tokens counted, the answer the same
    wrong = client.chat.completions.create(
        model=chat_model.name, messages=CONVERSATION, max_tokens=24, temperature=0, extra_body={"method": "reference"},
        prediction={"type": "content", "content": [{"type": "text", "text": words(want.token_ids[:3]) + " t90 t91 t92 t93"}]})
    assert wrong.choices[0].message.content == prediction


def test_earlier_turns_become_references(chat_model, client):
    """The conversation's earlier turns are references (assistant answers first, newest first), after the
    prediction and the request's references; the answer is the same as without them."""
    from llmaccel.server.protocol import ChatRequest, chat_job

    first = expected(chat_model, CONVERSATION, max_new_tokens=24, method="greedy").text.strip()
    convo = [*CONVERSATION, {"role": "assistant", "content": first}, {"role": "user", "content": "t10 t11 t12"},
             {"role": "assistant", "content": "t40 t41"}, {"role": "user", "content": "t12 t13"}]
    job = chat_job(ChatRequest.model_validate({"messages": convo, "references": ["t60 t61"],
                                               "prediction": {"type": "content", "content": "t70"}}),
                   chat_model, Limits())
    assert job.reference_sources == ["prediction", "references"] + ["turns"] * 5
    assert [words(r) for r in job.references[2:4]] == ["t40 t41", first]  # assistant answers, newest first
    want = expected(chat_model, convo, max_new_tokens=24, method="greedy")
    got = client.chat.completions.create(model=chat_model.name, messages=convo, max_tokens=24, temperature=0,
                                         extra_body={"method": "reference"})
    assert got.choices[0].message.content == want.text.strip()


def test_completions_text_ids_stop_and_logprobs(chat_model, client):
    want = llmaccel.generate(chat_model, "t5 t6 t7 t8", max_new_tokens=16, method="greedy")
    got = client.completions.create(model=chat_model.name, prompt="t5 t6 t7 t8", max_tokens=16, temperature=0)
    assert got.choices[0].text == want.text.strip()
    ids = chat_model.tokenizer.encode("t5 t6 t7 t8")
    assert client.completions.create(model=chat_model.name, prompt=ids, max_tokens=16,
                                     temperature=0).choices[0].text == want.text.strip()
    stop = f"t{want.token_ids[5]}"
    cut = client.completions.create(model=chat_model.name, prompt="t5 t6 t7 t8", max_tokens=16, temperature=0,
                                    stop=[stop])
    assert cut.choices[0].finish_reason == "stop"
    assert stop not in cut.choices[0].text.split() and want.text.startswith(cut.choices[0].text)
    lp = client.completions.create(model=chat_model.name, prompt="t5 t6 t7 t8", max_tokens=4, temperature=0, logprobs=3)
    assert len(lp.choices[0].logprobs.token_logprobs) == 4 and len(lp.choices[0].logprobs.top_logprobs[0]) == 3
    chat = client.chat.completions.create(model=chat_model.name, messages=CONVERSATION, max_tokens=3, temperature=0,
                                          logprobs=True, top_logprobs=2)
    content = chat.choices[0].logprobs.content
    assert len(content) == 3 and all(len(c.top_logprobs) == 2 and c.logprob <= 0 for c in content)


def test_text_stream_holds_back_stop_prefixes():
    ts = TextStream(lambda ids: "".join(chr(i) for i in ids), ["XYZ"])
    out = ts.push([ord(c) for c in "abcX"]) + ts.push([ord("Y")]) + ts.push([ord(c) for c in "Zdef"]) + ts.finish()
    assert out == "abc" and ts.text == "abc"
    ts = TextStream(lambda ids: "".join(chr(i) for i in ids), ["XYZ"])
    out = ts.push([ord(c) for c in "abcX"]) + ts.push([ord(c) for c in "Yq"]) + ts.finish()
    assert out == "abcXYq"


def test_models_health_metrics(chat_model, client, server):
    assert [m.id for m in client.models.list().data] == [chat_model.name]
    assert httpx.get(server.url + "/health").json()["status"] == "ok"
    client.chat.completions.create(model=chat_model.name, messages=CONVERSATION, max_tokens=4, temperature=0)
    text = httpx.get(server.url + "/metrics").text
    for name in ("llmaccel_requests_total", "llmaccel_completion_tokens_total", "llmaccel_time_to_first_token_seconds",
                 "llmaccel_queue_length", "llmaccel_steps_total"):
        assert name in text


CHAT = "/v1/chat/completions"
OK_CHAT = {"messages": [{"role": "user", "content": "t5 t6"}], "max_tokens": 2}

# (path, body (dict -> JSON, bytes -> raw), expected status, a word the message must hold)
MALFORMED = [
    (CHAT, b"{not json", 400, "JSON"),
    (CHAT, b"", 400, "JSON"),
    (CHAT, b"[1, 2]", 400, "object"),
    (CHAT, b"\xff\xfe\x00", 400, "JSON"),
    (CHAT, b"[" * 100000 + b"]" * 100000, 400, ""),
    (CHAT, {}, 400, "messages"),
    (CHAT, {"messages": []}, 400, "messages"),
    (CHAT, {"messages": "t5"}, 400, "messages"),
    (CHAT, {"messages": [{"role": "wizard", "content": "t5"}]}, 400, "role"),
    (CHAT, {"messages": [{"role": "user", "content": 5}]}, 400, "content"),
    (CHAT, {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": "x"}]}]}, 400, "content"),
    (CHAT, {"messages": [{"role": "assistant", "content": "t5"}]}, 400, "assistant"),
    (CHAT, {"messages": [{"role": "user", "content": "   "}]}, 400, "empty"),
    (CHAT, {**OK_CHAT, "max_tokens": 0}, 400, "max_tokens"),
    (CHAT, {**OK_CHAT, "max_tokens": -5}, 400, "max_tokens"),
    (CHAT, {**OK_CHAT, "max_tokens": "many"}, 400, "max_tokens"),
    (CHAT, {**OK_CHAT, "max_tokens": 2.5}, 400, "max_tokens"),
    (CHAT, {**OK_CHAT, "max_tokens": 10**9}, 400, "max_tokens"),
    (CHAT, {**OK_CHAT, "temperature": -1}, 400, "temperature"),
    (CHAT, {**OK_CHAT, "temperature": 3}, 400, "temperature"),
    (CHAT, {**OK_CHAT, "temperature": "hot"}, 400, "temperature"),
    (CHAT, {**OK_CHAT, "top_p": 0}, 400, "top_p"),
    (CHAT, {**OK_CHAT, "top_k": -7}, 400, "top_k"),
    (CHAT, {**OK_CHAT, "presence_penalty": 9}, 400, "presence_penalty"),
    (CHAT, {**OK_CHAT, "logit_bias": {"abc": 1}}, 400, "logit_bias"),
    (CHAT, {**OK_CHAT, "logit_bias": {"99999": 1}}, 400, "vocabulary"),
    (CHAT, {**OK_CHAT, "logit_bias": {"5": 500}}, 400, "logit_bias"),
    (CHAT, {**OK_CHAT, "seed": "x"}, 400, "seed"),
    (CHAT, {**OK_CHAT, "stream": "yes"}, 400, "stream"),
    (CHAT, {**OK_CHAT, "stop": 5}, 400, "stop"),
    (CHAT, {**OK_CHAT, "stop": ["t1"] * 100}, 400, "stop"),
    (CHAT, {**OK_CHAT, "n": 3}, 400, "n"),
    (CHAT, {**OK_CHAT, "model": "gpt-9"}, 404, "gpt-9"),
    (CHAT, {**OK_CHAT, "method": "magic"}, 400, "method"),
    (CHAT, {**OK_CHAT, "references": "t5 t6"}, 400, "references"),
    (CHAT, {**OK_CHAT, "references": [5]}, 400, "references"),
    (CHAT, {**OK_CHAT, "references": ["t5 " * 1_500_000]}, 400, "references"),
    (CHAT, {**OK_CHAT, "prediction": {"type": "image", "content": "x"}}, 400, "prediction"),
    (CHAT, {**OK_CHAT, "prediction": "t5 t6"}, 400, "prediction"),
    (CHAT, {**OK_CHAT, "tools": [{"type": "function"}]}, 400, "tools"),
    (CHAT, {**OK_CHAT, "response_format": {"type": "json_object"}}, 400, "response_format"),
    (CHAT, {**OK_CHAT, "top_logprobs": 3}, 400, "logprobs"),
    (CHAT, {**OK_CHAT, "top_logprobs": 50, "logprobs": True}, 400, "top_logprobs"),
    (CHAT, {**OK_CHAT, "frobnicate": 1}, 400, "frobnicate"),
    (CHAT, {"messages": [{"role": "user", "content": "t5 " * 600}], "max_tokens": 2}, 400, "context"),
    (CHAT, {"messages": [{"role": "user", "content": "t5"}] * 300}, 400, "messages"),
    ("/v1/completions", {"prompt": ""}, 400, "prompt"),
    ("/v1/completions", {"prompt": [1, 2, 999]}, 400, "vocabulary"),
    ("/v1/completions", {"prompt": ["t5", "t6"]}, 400, "prompt"),
    ("/v1/completions", {"prompt": "t5", "echo": True}, 400, "echo"),
    ("/v1/completions", {"prompt": "t5", "logprobs": 99}, 400, "logprobs"),
    ("/v1/nowhere", {}, 404, "endpoint"),
]


@pytest.mark.parametrize("path,body,status,word", MALFORMED, ids=[f"{i}" for i in range(len(MALFORMED))])
def test_malformed_requests_get_4xx(server, path, body, status, word):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    r = httpx.post(server.url + path, content=raw, headers={"content-type": "application/json"}, timeout=60)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert word.lower() in err["message"].lower() and "Traceback" not in r.text
    assert httpx.post(server.url + CHAT, json=OK_CHAT, timeout=60).status_code == 200  # still answering


def test_wrong_method_and_oversized_body(chat_model):
    with LiveServer(chat_model, ServerConfig(limits=Limits(max_body_bytes=1000))) as s:
        assert httpx.get(s.url + CHAT).status_code == 405
        r = httpx.post(s.url + CHAT, content=b"{" + b" " * 5000 + b"}", headers={"content-type": "application/json"})
        assert r.status_code == 413 and "bytes" in r.json()["error"]["message"]


def test_api_keys(chat_model):
    with LiveServer(chat_model, ServerConfig(api_keys=[KEY, "other-key-99999"])) as s:
        assert httpx.post(s.url + CHAT, json=OK_CHAT).status_code == 401
        assert httpx.post(s.url + CHAT, json=OK_CHAT, headers={"Authorization": "Bearer wrong-key-123"}).status_code == 401
        assert httpx.get(s.url + "/v1/models").status_code == 401
        assert httpx.get(s.url + "/health").status_code == 200
        good = openai.OpenAI(base_url=s.url + "/v1", api_key=KEY, max_retries=0)
        assert good.chat.completions.create(model=chat_model.name, **OK_CHAT).choices[0].message.content
        bad = openai.OpenAI(base_url=s.url + "/v1", api_key="nope-nope-nope", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            bad.models.list()


def test_full_queue_answers_429(chat_model):
    body = {"messages": [{"role": "user", "content": "t5 t6"}], "max_tokens": 400, "temperature": 0}
    with LiveServer(chat_model, ServerConfig(max_queue=1)) as s:
        with ThreadPoolExecutor(6) as pool:
            codes = list(pool.map(lambda _: httpx.post(s.url + CHAT, json=body, timeout=120), range(6)))
        statuses = sorted(r.status_code for r in codes)
        assert 429 in statuses and 200 in statuses, statuses
        busy = next(r for r in codes if r.status_code == 429)
        assert int(busy.headers["retry-after"]) >= 1 and busy.json()["error"]["type"] == "rate_limit_error"


def test_disconnect_stops_the_generation(chat_model, server):
    body = {"messages": [{"role": "user", "content": "t5 t6"}], "max_tokens": 450, "temperature": 0, "stream": True}
    with httpx.stream("POST", server.url + CHAT, json=body, timeout=60) as r:
        for i, _ in enumerate(r.iter_lines()):
            if i >= 3:
                break
    deadline = time.time() + 10
    while httpx.get(server.url + "/health").json()["running"]:
        assert time.time() < deadline, "the generation went on after its client left"
        time.sleep(0.05)
    assert httpx.post(server.url + CHAT, json=OK_CHAT, timeout=60).status_code == 200


def test_concurrent_clients_get_their_own_answers(chat_model, server):
    prompts = [f"t{5 + i} t{40 + j}" for i in range(8) for j in range(10)]
    want = {p: llmaccel.generate(chat_model, chat_model.chat_prompt(p), max_new_tokens=8, method="greedy").text.strip()
            for p in prompts}
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)

    def ask(p):
        r = client.chat.completions.create(model=chat_model.name, messages=[{"role": "user", "content": p}],
                                           max_tokens=8, temperature=0, stream=p.endswith("0"))
        if p.endswith("0"):
            return p, "".join(c.choices[0].delta.content or "" for c in r if c.choices)
        return p, r.choices[0].message.content

    with ThreadPoolExecutor(8) as pool:
        got = dict(pool.map(ask, prompts))
    assert got == want


def test_store_drafts_within_a_tenant_only(chat_model, tmp_path):
    """Key A's stored answers are a draft source for A's later requests, never for B's; "store": false
    keeps an answer out; answers never change."""
    from llmaccel.server.store import Store

    store = Store(tmp_path / "answers.sqlite3")
    with LiveServer(chat_model, ServerConfig(api_keys=[KEY, "other-key-99999"], store=store)) as s:
        a = openai.OpenAI(base_url=s.url + "/v1", api_key=KEY, max_retries=0)
        b = openai.OpenAI(base_url=s.url + "/v1", api_key="other-key-99999", max_retries=0)
        msg = [{"role": "user", "content": "t30 t31 t32 t33"}]
        kw = dict(model=chat_model.name, messages=msg, max_tokens=24, temperature=0, extra_body={"method": "reference"})
        first = a.chat.completions.create(**kw)
        assert first.model_extra["llmaccel"]["store_hits"] == 0
        other = b.chat.completions.create(**kw)
        assert other.model_extra["llmaccel"]["store_hits"] == 0 and "store" not in other.model_extra["llmaccel"]["drafted"]
        again = a.chat.completions.create(**kw)
        extra = again.model_extra["llmaccel"]
        assert extra["store_hits"] >= 1 and extra["accepted"].get("store", 0) >= 15
        assert again.choices[0].message.content == first.choices[0].message.content == other.choices[0].message.content
        private = [{"role": "user", "content": "t50 t51 t52"}]
        a.chat.completions.create(**{**kw, "messages": private}, store=False)
        assert a.chat.completions.create(**{**kw, "messages": private}).model_extra["llmaccel"]["store_hits"] == 0
    assert Store(tmp_path / "answers.sqlite3").stats()["entries"] == 3  # A's (once: the same answer), B's, the private prompt's 2nd ask


def test_prompt_cache_serves_the_follow_up_turn(chat_model):
    """The second turn of a conversation prefills only what is new; its answer is a cold prefill's."""
    with LiveServer(chat_model, ServerConfig(prompt_cache=llmaccel.PromptCache())) as s:
        c = openai.OpenAI(base_url=s.url + "/v1", api_key="unused", max_retries=0)
        convo = [{"role": "system", "content": words(range(20, 50))}, {"role": "user", "content": "t10 t11 t12"}]
        first = c.chat.completions.create(model=chat_model.name, messages=convo, max_tokens=20, temperature=0)
        assert first.usage.prompt_tokens_details.cached_tokens == 0
        convo += [{"role": "assistant", "content": first.choices[0].message.content},
                  {"role": "user", "content": "t13 t14"}]
        second = c.chat.completions.create(model=chat_model.name, messages=convo, max_tokens=20, temperature=0)
        cached = second.usage.prompt_tokens_details.cached_tokens
        assert cached >= first.usage.prompt_tokens + 15
        assert second.model_extra["llmaccel"]["cached_prompt_tokens"] == cached
        assert second.choices[0].message.content == expected(chat_model, convo, max_new_tokens=20).text.strip()
        metrics = httpx.get(s.url + "/metrics").text
        assert f"llmaccel_prompt_cache_tokens_total {float(cached)}" in metrics
        assert "llmaccel_prompt_cache_hits 1.0" in metrics


def test_bench_serve_scenarios(chat_model, tmp_path, monkeypatch):
    """bench-serve's scenarios run end to end on a tiny model: every request answered, auto's answers
    equal greedy's, the prompt cache serves the second turn, the summary holds each scenario's figures."""
    from llmaccel.bench import serve as bench

    rows = [{"query": f"t{40 + i} t41 t42", "docs": [words(range(10 + i, 40))], "result": {"text": ""}} for i in range(2)]
    (tmp_path / "rag.dev.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    monkeypatch.setattr(bench, "LLMA_DIR", tmp_path)
    summary, calls = bench.run(chat_model, ["rag", "predict", "cache", "multiturn", "overhead"], 2, 12)
    assert set(summary) == {"rag", "predict", "cache", "multiturn", "multiturn-cold", "overhead"}
    for scenario in ("rag", "predict", "cache", "multiturn"):
        assert summary[scenario]["auto"]["match_rate_vs_greedy"] == 1.0 and summary[scenario]["greedy"]["requests"] == 2
    assert summary["overhead"]["http"]["match_rate_vs_greedy"] == 1.0 and "overhead_vs_direct" in summary["overhead"]["http"]
    warm = [c for c in calls if c.scenario == "multiturn"]
    assert all(c.stats["cached_prompt_tokens"] > 0 for c in warm)
    assert all(c.stats["cached_prompt_tokens"] == 0 for c in calls if c.scenario == "multiturn-cold")
    assert all(c.stats["store_hits"] >= 1 for c in calls if c.scenario == "cache" and c.label == "auto")
    assert "| rag | auto |" in bench.report(summary)


def test_playground_streams_and_colours_tokens_in_a_browser(chat_model, server, tmp_path):
    """The page at / in headless Chromium (Debian's package; skipped where absent), driven over the
    DevTools protocol: it sends the question from its URL, streams the answer, and marks the tokens
    accepted from the reference; the answer is generate's."""
    import urllib.parse

    from browser import Browser, chromium

    page = httpx.get(server.url + "/")
    assert page.status_code == 200 and "llmaccel playground" in page.text
    assert "http://" not in page.text and "https://" not in page.text  # nothing from elsewhere: works offline
    if chromium() is None:
        pytest.skip("no Chromium on this machine (apt install chromium)")
    pytest.importorskip("websockets")
    want = expected(chat_model, [{"role": "user", "content": "t5 t6"}], max_new_tokens=12, method="greedy").text
    url = server.url + "/?" + urllib.parse.urlencode({"q": "t5 t6", "ref": want, "max": 12})
    with Browser() as b:
        b.open(url)
        spans = b.evaluate("[...document.querySelectorAll('.assistant .body span')].map(s => [s.textContent, s.className])")
        stats = b.evaluate("document.getElementById('stats').textContent")
        b.screenshot(tmp_path / "page.png")
    assert "".join(t for t, _ in spans) == want
    assert any(c == "src-references" for _, c in spans) and any(c == "" for _, c in spans)
    assert "tokens 12" in stats and (tmp_path / "page.png").stat().st_size > 10_000


def _serve(model_dir: str, port: int, *args: str):
    import subprocess
    import sys

    cli = "import sys; from llmaccel.cli import main; sys.exit(main(sys.argv[1:]))"
    proc = subprocess.Popen([sys.executable, "-c", cli, "serve", "--model", model_dir, "--port", str(port), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    while True:
        assert proc.poll() is None, proc.stdout.read()
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        assert time.time() < deadline, "the server did not start"
        time.sleep(0.2)


def test_sigterm_mid_stream_and_sigkill_keep_the_store(chat_model, tmp_path):
    """`llmaccel serve` as its own process: SIGTERM during a stream lets it end properly and the process
    exit 0; SIGKILLed between stored answers, the restarted server's store holds every acknowledged one."""
    import signal

    store = str(tmp_path / "answers.sqlite3")
    port = _free_port()
    proc = _serve(chat_model.name, port, "--store", store)
    url = f"http://127.0.0.1:{port}"
    try:
        acked = []
        for i in range(5):
            body = {"messages": [{"role": "user", "content": f"t{20 + i} t21"}], "max_tokens": 8, "temperature": 0}
            assert httpx.post(url + CHAT, json=body, timeout=60).status_code == 200
            acked.append(f"t{20 + i} t21")
        body = {"messages": [{"role": "user", "content": "t5 t6"}], "max_tokens": 400, "temperature": 0, "stream": True}
        lines = []
        with httpx.stream("POST", url + CHAT, json=body, timeout=60) as r:
            for line in r.iter_lines():
                lines.append(line)
                if len(lines) == 6:
                    proc.send_signal(signal.SIGTERM)
        assert [l for l in lines if l][-1] == "data: [DONE]"  # the running stream was finished, not cut
        assert any("finish_reason\":\"length" in l for l in lines)
        assert proc.wait(timeout=60) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once it has shut down
        wal = tmp_path / "answers.sqlite3-wal"
        assert not wal.exists() or wal.stat().st_size == 0  # the store was closed: its log checkpointed
        proc = _serve(chat_model.name, port, "--store", store)
        for i in range(3):
            body = {"messages": [{"role": "user", "content": f"t{40 + i} t41"}], "max_tokens": 8, "temperature": 0}
            assert httpx.post(url + CHAT, json=body, timeout=60).status_code == 200
            acked.append(f"t{40 + i} t41")
        proc.kill()  # SIGKILL: no shutdown at all
        proc.wait(timeout=30)
        from llmaccel.server.store import Store

        kept = {row["prompt"] for row in Store(store).export()}
        assert set(acked) <= kept and "t5 t6" in kept
    finally:
        if proc.poll() is None:
            proc.kill()


def test_completions_stream_equals_non_stream(chat_model, client):
    kw = dict(model=chat_model.name, prompt="t5 t6 t7", max_tokens=12, temperature=0, stop=["t999"])
    whole = client.completions.create(**kw)
    chunks = list(client.completions.create(**kw, stream=True, stream_options={"include_usage": True}))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == whole.choices[0].text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].usage.completion_tokens == 12
