"""The OpenAI-compatible request bodies, checked, and what a generation needs from them. Pure: no HTTP.

A body is parsed by pydantic models that mirror OpenAI's fields (unknown fields are refused, as OpenAI
refuses them), then turned into a `Job`: the prompt's token ids, the references with their source
labels, the method, the sampling and the limits. Every problem is an `ApiError` with the HTTP status,
OpenAI's error type and the parameter at fault; nothing a client sends may raise anything else.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr, ValidationError

from llmaccel.errors import GenerationError
from llmaccel.methods import METHODS

__all__ = ["ApiError", "ChatRequest", "CompletionRequest", "Job", "Limits", "parse_body"]

Number = Union[StrictInt, StrictFloat]


class ApiError(Exception):
    """An answer other than 200: status, OpenAI's error type, message, the parameter at fault."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


@dataclass(frozen=True)
class Limits:
    """What one request may ask for. Defaults sized for one CPU serving a small model."""

    max_body_bytes: int = 8_000_000  # the whole JSON body
    max_reference_bytes: int = 4_000_000  # references + prediction, UTF-8
    max_messages: int = 256
    max_tokens: int = 4096  # per answer (also bounded by the model's context)
    max_stop: int = 16
    time_limit_s: float = 600.0  # per generation; past it the answer ends with finish_reason "length"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TextPart(_Model):
    type: Literal["text"]
    text: StrictStr


Content = Union[StrictStr, list[TextPart]]


class Message(_Model):
    role: Literal["system", "developer", "user", "assistant"]
    content: Content | None = None
    name: StrictStr | None = None


class Prediction(_Model):
    type: Literal["content"]
    content: Content


class StreamOptions(_Model):
    include_usage: StrictBool = False


class _Common(_Model):
    """The fields chat and completions share (OpenAI's, then llmaccel's extensions)."""

    model: StrictStr | None = None
    max_tokens: StrictInt | None = Field(default=None, ge=1)
    stop: StrictStr | list[StrictStr] | None = None
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    seed: StrictInt | None = None
    temperature: Number | None = Field(default=None, ge=0, le=2)
    top_p: Number | None = Field(default=None, gt=0, le=1)
    presence_penalty: Number | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: Number | None = Field(default=None, ge=-2, le=2)
    logit_bias: dict[StrictStr, Number] | None = None
    n: StrictInt = Field(default=1, ge=1)
    user: StrictStr | None = None
    metadata: dict[StrictStr, StrictStr] | None = None
    store: StrictBool | None = None
    # extensions: vLLM's sampling fields, and the references and method
    top_k: StrictInt | None = None
    min_p: Number | None = Field(default=None, ge=0, le=1)
    repetition_penalty: Number | None = Field(default=None, gt=0)
    references: list[StrictStr] | None = None
    method: StrictStr | None = None
    cache_prompt: StrictBool = True  # llama.cpp's name: false prefills the whole prompt (the prompt cache unused)


class ChatRequest(_Common):
    messages: list[Message]
    max_completion_tokens: StrictInt | None = Field(default=None, ge=1)
    logprobs: StrictBool | None = None
    top_logprobs: StrictInt | None = Field(default=None, ge=0, le=20)
    prediction: Prediction | None = None
    response_format: dict[StrictStr, Any] | None = None
    # OpenAI fields this server does not implement: refused with a message saying so, not as unknown
    tools: Any = None
    tool_choice: Any = None
    functions: Any = None
    function_call: Any = None
    parallel_tool_calls: Any = None
    audio: Any = None
    modalities: Any = None
    reasoning_effort: Any = None
    service_tier: Any = None


class CompletionRequest(_Common):
    prompt: StrictStr | list[StrictInt] | list[StrictStr] | list[list[StrictInt]]
    logprobs: StrictInt | None = Field(default=None, ge=0, le=20)
    echo: StrictBool = False
    suffix: StrictStr | None = None
    best_of: StrictInt | None = None


UNSUPPORTED = ("tools", "tool_choice", "functions", "function_call", "parallel_tool_calls", "audio", "modalities",
               "reasoning_effort", "service_tier")


_TYPE_TAGS = {"str", "int", "float", "bool", "dict", "list", "none"}


def _validation_error(exc: ValidationError) -> ApiError:
    err = exc.errors()[0]
    # pydantic names the branch of a union it tried (`str`, `list[TextPart]`): not part of the parameter
    loc = [str(x) for x in err.get("loc", ()) if "[" not in str(x) and str(x) not in _TYPE_TAGS]
    param = ".".join(loc) or None
    msg = err.get("msg", "invalid value")
    if err.get("type") == "extra_forbidden":
        msg = "unrecognized request argument"
    elif err.get("type") == "missing":
        msg = "missing required parameter"
    return ApiError(400, f"{param}: {msg}" if param else msg, param=param)


def parse_body(raw: bytes, model_type: type[_Common], limits: Limits) -> _Common:
    """The request body -> a checked request, or an ApiError (400 / 413)."""
    if len(raw) > limits.max_body_bytes:
        raise ApiError(413, f"the request body has {len(raw):,} bytes; at most {limits.max_body_bytes:,} are accepted")
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"the request body is not valid JSON: {exc}") from None
    except RecursionError:
        raise ApiError(400, "the request body nests too deeply") from None
    if not isinstance(data, dict):
        raise ApiError(400, f"the request body must be a JSON object, got {type(data).__name__}")
    try:
        req = model_type.model_validate(data)
    except ValidationError as exc:
        raise _validation_error(exc) from None
    except RecursionError:
        raise ApiError(400, "the request body nests too deeply") from None
    return req


def text_of(content: str | list[TextPart] | None) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(p.text for p in content)


@dataclass
class Job:
    """One generation, as the worker runs it."""

    prompt_ids: list[int]
    references: list[list[int]] = field(default_factory=list)
    reference_sources: list[str] = field(default_factory=list)
    method: str = "auto"
    max_tokens: int = 128
    stop: list[str] = field(default_factory=list)
    sampling: Any = None  # llmaccel.Sampling
    logprobs: int | None = None
    stream: bool = False
    include_usage: bool = False
    store: bool = True
    chat: bool = True
    cache_prompt: bool = True
    prompt_text: str = ""  # what the store keys the answer by (the last user message, or the prompt)


def _check_common(req: _Common, served: str, limits: Limits, prediction: str = "") -> dict:
    if req.model is not None and req.model not in (served, ""):
        raise ApiError(404, f"the model {req.model!r} does not exist; this server serves {served!r}",
                       param="model", code="model_not_found")
    if req.n != 1:
        raise ApiError(400, "n > 1 is not supported yet: send one request per sample", param="n")
    method = req.method if req.method is not None else "auto"
    if method not in METHODS:
        raise ApiError(400, f"unknown method {method!r}; choose one of {', '.join(METHODS)}", param="method")
    stop = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
    if len(stop) > limits.max_stop:
        raise ApiError(400, f"stop holds {len(stop)} strings; at most {limits.max_stop}", param="stop")
    stop = [s for s in stop if s]
    refs = list(req.references or [])
    if len(prediction.encode()) + sum(len(r.encode()) for r in refs) > limits.max_reference_bytes:
        raise ApiError(400, f"the references and prediction exceed {limits.max_reference_bytes:,} bytes",
                       param="references" if refs else "prediction")
    return {"method": method, "stop": stop, "references": refs}


def _check_length(ids: list[int], lm, param: str) -> list[int]:
    if len(ids) >= lm.max_context:
        raise ApiError(400, f"the prompt has {len(ids)} tokens but the model's context is {lm.max_context}; shorten it",
                       param=param, code="context_length_exceeded")
    return ids


def sampling_of(req: _Common, logit_bias_vocab: int):
    """The request's sampling as an llmaccel.Sampling (OpenAI's default temperature is 1)."""
    from llmaccel.sampling import Sampling

    bias = {}
    for k, v in (req.logit_bias or {}).items():
        try:
            tid = int(k)
        except ValueError:
            raise ApiError(400, f"logit_bias keys are token ids, got {k!r}", param="logit_bias") from None
        if not 0 <= tid < logit_bias_vocab:
            raise ApiError(400, f"logit_bias names token {tid}, outside the vocabulary (0..{logit_bias_vocab - 1})",
                           param="logit_bias")
        if not -100 <= v <= 100:
            raise ApiError(400, f"logit_bias values lie in -100..100, got {v}", param="logit_bias")
        bias[tid] = float(v)
    top_k = req.top_k if req.top_k is not None else 0
    if top_k < -1:
        raise ApiError(400, f"top_k must be -1, 0 (all tokens) or positive, got {top_k}", param="top_k")
    try:
        return Sampling(
            temperature=float(req.temperature if req.temperature is not None else 1.0),
            top_k=max(0, top_k),
            top_p=float(req.top_p if req.top_p is not None else 1.0),
            min_p=float(req.min_p or 0.0),
            repetition_penalty=float(req.repetition_penalty or 1.0),
            presence_penalty=float(req.presence_penalty or 0.0),
            frequency_penalty=float(req.frequency_penalty or 0.0),
            logit_bias=bias,
            seed=req.seed,
        )
    except GenerationError as exc:
        raise ApiError(400, str(exc)) from None


# Source labels of the references a server adds (engine.PROMPT_SOURCE etc. are the engine's own).
PREDICTION, REFERENCES, TURNS, STORE = "prediction", "references", "turns", "store"


def _references(lm, texts_by_source: list[tuple[str, list[str]]]) -> tuple[list[list[int]], list[str]]:
    refs, sources = [], []
    for source, texts in texts_by_source:
        for t in texts:
            if t.strip():
                refs.append(lm.tokenizer.encode(t, add_special_tokens=False))
                sources.append(source)
    return refs, sources


def _max_tokens(req: _Common, limits: Limits) -> int:
    n = getattr(req, "max_completion_tokens", None) or req.max_tokens
    if n is None:
        return limits.max_tokens
    if n > limits.max_tokens:
        param = "max_completion_tokens" if getattr(req, "max_completion_tokens", None) else "max_tokens"
        raise ApiError(400, f"{param} is {n}; this server allows at most {limits.max_tokens}", param=param)
    return n


def chat_job(req: ChatRequest, lm, limits: Limits) -> Job:
    """A chat request -> its Job: the conversation through the model's chat template; the prediction,
    the request's references and the conversation's earlier turns (assistant answers first) as
    references, each under its own source label."""
    prediction = text_of(req.prediction.content) if req.prediction is not None else ""
    common = _check_common(req, lm.name, limits, prediction)
    for name in UNSUPPORTED:
        if getattr(req, name) is not None:
            raise ApiError(400, f"{name} is not supported by this server", param=name)
    if req.response_format is not None and req.response_format.get("type") != "text":
        raise ApiError(400, "response_format: only {\"type\": \"text\"} is supported", param="response_format")
    if not req.messages:
        raise ApiError(400, "messages must hold at least one message", param="messages")
    if len(req.messages) > limits.max_messages:
        raise ApiError(400, f"messages holds {len(req.messages)} messages; at most {limits.max_messages}",
                       param="messages")
    if req.messages[-1].role == "assistant":
        raise ApiError(400, "the last message must not be the assistant's: there is nothing to answer",
                       param="messages")
    if req.top_logprobs is not None and not req.logprobs:
        raise ApiError(400, "top_logprobs needs logprobs: true", param="top_logprobs")
    conversation = [{"role": "system" if m.role == "developer" else m.role, "content": text_of(m.content)}
                    for m in req.messages]
    if not any(m["content"].strip() for m in conversation):
        raise ApiError(400, "the messages are all empty", param="messages")
    earlier = conversation[:-1]
    turns = [m["content"] for m in reversed(earlier) if m["role"] == "assistant"]
    turns += [m["content"] for m in reversed(earlier) if m["role"] != "assistant"]
    try:
        prompt_ids = _check_length(lm.chat_prompt(conversation), lm, "messages")
    except GenerationError as exc:
        raise ApiError(400, str(exc)) from None
    except Exception as exc:  # a template that fails on this conversation (e.g. role order rules)
        raise ApiError(400, f"the model's chat template refused these messages: {exc}", param="messages") from None
    refs, sources = _references(lm, [(PREDICTION, [prediction]), (REFERENCES, common["references"]), (TURNS, turns)])
    last_user = next((m["content"] for m in reversed(conversation) if m["role"] == "user"), conversation[-1]["content"])
    return Job(prompt_ids=prompt_ids, references=refs, reference_sources=sources, method=common["method"],
               max_tokens=_max_tokens(req, limits), stop=common["stop"], sampling=sampling_of(req, lm.vocab_size),
               logprobs=(req.top_logprobs or 0) if req.logprobs else None, stream=req.stream,
               include_usage=bool(req.stream_options and req.stream_options.include_usage),
               store=req.store is not False, chat=True, cache_prompt=req.cache_prompt, prompt_text=last_user)


def completion_job(req: CompletionRequest, lm, limits: Limits) -> Job:
    """A completions request -> its Job (one prompt: text or token ids)."""
    common = _check_common(req, lm.name, limits)
    if req.echo:
        raise ApiError(400, "echo is not supported by this server", param="echo")
    if req.suffix:
        raise ApiError(400, "suffix is not supported by this server", param="suffix")
    if req.best_of not in (None, 1):
        raise ApiError(400, "best_of > 1 is not supported", param="best_of")
    prompt = req.prompt
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], (str, list)):
        if len(prompt) != 1:
            raise ApiError(400, "a list of several prompts is not supported yet: send one request per prompt",
                           param="prompt")
        prompt = prompt[0]
    if isinstance(prompt, str):
        if not prompt.strip():
            raise ApiError(400, "the prompt is empty", param="prompt")
        ids, text = lm.tokenizer.encode(prompt), prompt
    else:
        ids = list(prompt)
        if not ids:
            raise ApiError(400, "the prompt is empty", param="prompt")
        bad = [t for t in ids if not 0 <= t < lm.vocab_size]
        if bad:
            raise ApiError(400, f"the prompt holds token ids outside the vocabulary (0..{lm.vocab_size - 1}): {bad[:5]}",
                           param="prompt")
        text = lm.decode(ids)
    _check_length(ids, lm, "prompt")
    refs, sources = _references(lm, [(REFERENCES, common["references"])])
    return Job(prompt_ids=ids, references=refs, reference_sources=sources, method=common["method"],
               max_tokens=_max_tokens(req, limits), stop=common["stop"], sampling=sampling_of(req, lm.vocab_size),
               logprobs=req.logprobs, stream=req.stream,
               include_usage=bool(req.stream_options and req.stream_options.include_usage),
               store=req.store is not False, chat=False, cache_prompt=req.cache_prompt, prompt_text=text)
