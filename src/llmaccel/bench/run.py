"""`llmaccel bench`: every method on every sample, interleaved, with outputs checked against hf-greedy.

With sampling (a `Sampling` with temperature > 0) the engine methods sample with seed + row index, the
same for every method, and are checked against plain sampling (method `greedy`: no drafts) instead;
`hf-sample` (transformers' generate(do_sample=True) with the same parameters) is the speed baseline:
its tokens differ, as its random numbers do.

hf-greedy, hf-pld and hf-sample run through transformers' own `generate` on an unmodified copy of the model;
the engine methods (llmaccel.methods.METHODS) through llmaccel's engine; llamacpp-greedy and
llamacpp-pld through llama.cpp on the model's GGUF file (bench/llamacpp.py). A forward hook (a public
torch API) counts the forward passes of `generate` and marks when prefill ends, so all methods report
the same fields.
"""

from __future__ import annotations

import json
import logging
import statistics
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from llmaccel.bench import llamacpp
from llmaccel.bench.data import DataError, Sample
from llmaccel.drafting.lookahead import LookaheadOptions
from llmaccel.drafting.reference import ReferenceOptions
from llmaccel.engine import Decoder
from llmaccel.methods import METHODS as ENGINE_METHODS
from llmaccel.sampling import Sampling

log = logging.getLogger(__name__)

HF_METHODS = {"hf-greedy": {}, "hf-pld": {"prompt_lookup_num_tokens": 10}, "hf-sample": {"do_sample": True}}
PLAIN = "greedy"  # the engine method without drafts: plain decoding, greedy or sampled
ALL_METHODS = (*HF_METHODS, *ENGINE_METHODS, *llamacpp.METHODS)
# The methods whose tokens must equal hf-greedy's (`--check`): the engine's, which are exact by design.
# hf-pld is transformers' own; llama.cpp computes with quantised activations and may differ.
CHECKED_METHODS = ENGINE_METHODS


@dataclass
class Run:
    token_ids: list[int]
    steps: int
    prefill_s: float
    decode_s: float

    @property
    def total_s(self) -> float:
        return self.prefill_s + self.decode_s

    def as_json(self) -> dict:
        return {
            "token_ids": self.token_ids,
            "steps": self.steps,
            "prefill_s": self.prefill_s,
            "decode_s": self.decode_s,
            "total_s": self.total_s,
        }


class ForwardClock:
    """Counts forward calls of a model and records when the first one (prefill) returned."""

    def __init__(self, model) -> None:
        self.calls = 0
        self.first_end: float | None = None
        self._cuda = model.device.type == "cuda"
        self._handle = model.register_forward_hook(self._hook)

    def _hook(self, module, args, output) -> None:
        self.calls += 1
        if self.first_end is None:
            if self._cuda:
                torch.cuda.synchronize()  # the prefill's kernels are queued, not done, when forward returns
            self.first_end = time.perf_counter()

    def close(self) -> None:
        self._handle.remove()


def hf_sampling_kwargs(sampling: Sampling) -> dict:
    """transformers' generate arguments for `sampling` (it has no presence/frequency penalty or logit bias)."""
    if sampling.presence_penalty or sampling.frequency_penalty or sampling.logit_bias:
        raise ValueError("hf-sample cannot mirror presence/frequency penalties or a logit bias")
    return {"temperature": sampling.temperature, "top_p": sampling.top_p, "top_k": sampling.top_k,
            "min_p": sampling.min_p or None, "repetition_penalty": sampling.repetition_penalty}


@torch.inference_mode()
def run_hf(model, prompt_ids: list[int], max_new_tokens: int, method: str, eos_ids,
           sampling: Sampling | None = None, seed: int = 0) -> Run:
    ids = torch.tensor([prompt_ids], device=model.device)
    kwargs = {"do_sample": False, **HF_METHODS[method]}
    if kwargs["do_sample"]:
        kwargs.update(hf_sampling_kwargs(sampling or Sampling(temperature=1.0)))
        torch.manual_seed(seed)
    clock = ForwardClock(model)
    t0 = time.perf_counter()
    try:
        out = model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=max_new_tokens,
            eos_token_id=list(eos_ids) or None,
            pad_token_id=eos_ids[0] if eos_ids else 0,  # a single unpadded row: never used
            **kwargs,
        )
    finally:
        clock.close()
    out = out.cpu()  # waits for the GPU, if any
    t1 = time.perf_counter()
    first = clock.first_end or t1
    return Run(out[0, len(prompt_ids) :].tolist(), clock.calls, first - t0, t1 - first)


def prompt_ids(lm, user_message: str, chat: bool = True) -> list[int]:
    """The chat template over one user message; plain text for a plain-completion sample or a model
    without a template."""
    if chat and getattr(lm.tokenizer, "chat_template", None):
        return lm.chat_prompt(user_message)
    return lm.tokenizer.encode(user_message, add_special_tokens=True)


def sample_prompt_ids(lm, sample: Sample) -> list[int]:
    """A sample's prompt as token ids: plain text, the chat template over its one user turn, or over its
    whole conversation (a chat row of several messages, which needs the model to have a template)."""
    if sample.one_user_turn:
        return prompt_ids(lm, sample.user_message, sample.chat)
    if not getattr(lm.tokenizer, "chat_template", None):
        raise DataError(f"{sample.where}: a chat row of {len(sample.messages)} messages needs a chat template, "
                        f"and {lm.name} has none")
    from jinja2 import TemplateError

    try:
        return lm.chat_prompt([{"role": role, "content": content} for role, content in sample.messages])
    except TemplateError as exc:  # e.g. a template that wants user and assistant turns to alternate
        raise DataError(f"{sample.where}: {lm.name}'s chat template rejects these messages: {exc}") from None


def run_engine(lm, prompt_ids, references, max_new_tokens: int, method: str, options: ReferenceOptions,
               lookahead: LookaheadOptions | None = None, sampling: Sampling | None = None) -> Run:
    r = Decoder(
        lm, prompt_ids, method=method, references=references, max_new_tokens=max_new_tokens, options=options,
        lookahead=lookahead, sampling=sampling,
    ).run()
    return Run(r.token_ids, r.steps, r.prefill_s, r.decode_s)


def run_llamacpp(llm, prompt_ids: list[int], max_new_tokens: int, eos_ids) -> Run:
    return Run(*llamacpp.generate(llm, prompt_ids, max_new_tokens, eos_ids))


def summarise(samples: list[dict], methods: list[str]) -> dict:
    summary = {}
    for m in methods:
        runs = [s["methods"][m] for s in samples]
        tokens = sum(len(r["token_ids"]) for r in runs)
        decode = sum(r["decode_s"] for r in runs)
        match = [r["token_ids"] == s["methods"]["hf-greedy"]["token_ids"] for s, r in zip(samples, runs)
                 if "hf-greedy" in s["methods"]]
        plain = [r["token_ids"] == s["methods"][PLAIN]["token_ids"] for s, r in zip(samples, runs)
                 if PLAIN in s["methods"]]
        summary[m] = {
            "decode_tokens_per_s": tokens / decode if decode > 0 else 0.0,
            "total_s": sum(r["total_s"] for r in runs),
            "steps": sum(r["steps"] for r in runs),
            "tokens": tokens,
            "match_rate_vs_hf_greedy": (sum(match) / len(match)) if match else None,  # None: hf-greedy not run
            "match_rate_vs_plain": (sum(plain) / len(plain)) if plain else None,  # None: greedy (plain) not run
            "median_decode_tokens_per_s": statistics.median(
                len(r["token_ids"]) / r["decode_s"] for r in runs if r["decode_s"] > 0
            ) if any(r["decode_s"] > 0 for r in runs) else 0.0,
        }
    return summary


def bench(
    model_name: str,
    samples: list[Sample],
    methods: list[str],
    max_new_tokens: int,
    options: ReferenceOptions = ReferenceOptions(),
    lookahead: LookaheadOptions | None = None,
    progress: bool = True,
    device: str = "cpu",
    sampling: Sampling | None = None,
) -> dict:
    """Run `methods` on `samples`; returns the OUT.json document of the bench contract. With `sampling`,
    row k samples with seed sampling.seed + k (0 + k without one) in every method."""
    from tqdm import tqdm

    from llmaccel import models

    lm = models.load(model_name, device=device)
    hf_model = None
    if any(m in HF_METHODS for m in methods):
        hf_model, _ = models.load_reference_model(model_name, device)
    prompts = [sample_prompt_ids(lm, s) for s in samples]
    budgets = [max(0, min(max_new_tokens, lm.max_context - len(p))) for p in prompts]  # as the engine clamps
    peers = {}
    if any(m in llamacpp.METHODS for m in methods):
        gguf = llamacpp.gguf_file(model_name)
        n_ctx = llamacpp.context_for(max(map(len, prompts)), max_new_tokens)
        peers = {m: llamacpp.load(gguf, n_ctx, torch.get_num_threads(), llamacpp.METHODS[m])
                 for m in methods if m in llamacpp.METHODS}
    rows = []
    bar = tqdm(total=len(samples) * len(methods), disable=not progress, desc="bench", unit="run")
    for k, (sample, prompt, budget) in enumerate(zip(samples, prompts, budgets)):
        refs = [lm.tokenizer.encode(d, add_special_tokens=False) for d in sample.references]
        order = methods[k % len(methods) :] + methods[: k % len(methods)]  # rotate: drift hits all alike
        results = {}
        seed = ((sampling.seed or 0) if sampling else 0) + k
        row_sampling = replace(sampling, seed=seed) if sampling else None
        for m in order:
            if m in HF_METHODS:
                run = run_hf(hf_model, prompt, max_new_tokens, m, lm.eos_token_ids, sampling, seed)
            elif m in peers:
                run = run_llamacpp(peers[m], prompt, budget, lm.eos_token_ids)
            else:
                run = run_engine(lm, prompt, refs, max_new_tokens, m, options, lookahead, row_sampling)
            results[m] = run.as_json()
            bar.update(1)
        rows.append({"id": sample.id, "source": sample.where, "prompt_tokens": len(prompt),
                     "methods": {m: results[m] for m in methods}})
    bar.close()
    doc = {"model": model_name, "samples": rows, "summary": summarise(rows, methods)}
    if sampling is not None:
        doc["sampling"] = {k: v for k, v in asdict(sampling).items() if k != "logit_bias"}
    if device != "cpu":  # cli.options.device admits cpu and cuda[:N] only
        doc["device"] = torch.cuda.get_device_name(device)
    return doc


def check_base(doc: dict) -> str:
    """What `--check` compares the engine's methods with: hf-greedy, or plain sampling when sampled."""
    return PLAIN if doc.get("sampling", {}).get("temperature", 0) > 0 else "hf-greedy"


def differences(doc: dict, methods=CHECKED_METHODS) -> dict[str, list[str]]:
    """For each of `methods` that ran, the samples (their source, else id) whose tokens differ from
    the check's base (`check_base`); methods without a difference are left out. Empty when the base
    did not run."""
    base = check_base(doc)
    out: dict[str, list[str]] = {}
    for s in doc["samples"]:
        runs = s["methods"]
        if base not in runs:
            continue
        for m in methods:
            if m != base and m in runs and runs[m]["token_ids"] != runs[base]["token_ids"]:
                out.setdefault(m, []).append(s.get("source") or f"sample {s['id']}")
    return out


def _percent(x: float | None) -> str:
    return "-" if x is None else f"{x:.0%}"


def speed_base(doc: dict) -> str:
    """The method speeds are compared with: hf-sample when it ran, else hf-greedy."""
    return "hf-sample" if "hf-sample" in doc["summary"] else "hf-greedy"


def table(doc: dict) -> str:
    summary = doc["summary"]
    name = speed_base(doc)
    base = summary.get(name, {}).get("decode_tokens_per_s")
    sampled = check_base(doc) == PLAIN
    match, key = ("plain", "match_rate_vs_plain") if sampled else ("hf-greedy", "match_rate_vs_hf_greedy")
    lines = [f"| method | decode tok/s | vs {name} | steps | tokens | total s | match {match} |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for m, s in summary.items():
        ratio = f"{s['decode_tokens_per_s'] / base:.2f}x" if base else "-"
        lines.append(
            f"| {m} | {s['decode_tokens_per_s']:.1f} | {ratio} | {s['steps']} | {s['tokens']} | "
            f"{s['total_s']:.1f} | {_percent(s.get(key))} |"
        )
    return "\n".join(lines)


def plot_speedups(doc: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = doc["summary"]
    name = speed_base(doc)
    base = summary.get(name, {}).get("decode_tokens_per_s") or next(iter(summary.values()))["decode_tokens_per_s"]
    names = list(summary)
    ratios = [summary[m]["decode_tokens_per_s"] / base for m in names]
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(names)), 3.5))  # room for every method's name
    peer = [m in HF_METHODS or m in llamacpp.METHODS for m in names]  # the baselines we compare against, grey
    ax.bar(names, ratios, color=["#999999" if p else "#2a7ab0" for p in peer])
    ax.axhline(1.0, color="black", lw=0.8)
    for i, r in enumerate(ratios):
        ax.text(i, r, f"{r:.2f}x", ha="center", va="bottom")
    ax.set_ylabel(f"decode tokens/s vs {name}")
    where = f" on {doc['device']}" if "device" in doc else ""
    ax.set_title(f"{doc['model']}{where}, {len(doc['samples'])} samples")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write(doc: dict, out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc))
    png = out.with_suffix(".png")
    plot_speedups(doc, png)
    return png
