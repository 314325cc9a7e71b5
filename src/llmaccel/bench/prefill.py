"""`llmaccel bench-prefill`: sparse prefill against dense, for time and for accuracy.

(a) kernel: one full-attention layer's real queries, keys and values (the model run on real long
    text), dense causal SDPA vs index estimation + the sparse kernel, with attention recall;
(b) prefill: the whole model's prefill of real long text, dense vs sparse;
(c) needle: passkey retrieval over context lengths x depths, dense vs sparse (heatmap PNG);
(d) perplexity of real long text, dense vs sparse prefill.
Sparse is forced on at every length measured here (a config's `min_tokens` is ignored) so that each
number measures the sparse path. Long text is real: CNN/DM articles and RAG documents of the LLMA
files, then Python's own documentation (bench.data.long_text).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import random
import re
import statistics
import time
from pathlib import Path

import torch

from llmaccel.bench.data import LLMA_DIR, DataError, long_text
from llmaccel.sparse.config import SparseConfig, shipped, uniform
from llmaccel.sparse.kernels import dense_attention, dense_lse, recall, sample_rows, sparse_attention
from llmaccel.sparse.patterns import HeadPattern, build_index
from llmaccel.sparse.prefill import SparsePrefill

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Plan:
    """What one run measures (the full run and --quick differ only here)."""

    kernel_tokens: tuple[int, ...]
    prefill_tokens: dict[str, tuple[int, ...]]  # model alias -> prompt lengths
    needle_tokens: tuple[int, ...]
    needle_depths: tuple[float, ...]
    perplexity_tokens: int
    repeats: int  # timed repeats per measurement (median)


FULL = Plan(
    kernel_tokens=(4096, 8192, 16384, 32768, 65536),
    prefill_tokens={"smollm2-135m": (2048, 4096, 8192), "gemma3-270m": (8192, 16384, 32768)},
    needle_tokens=(1024, 2048, 4096, 6144, 8000),
    needle_depths=(0.0, 0.25, 0.5, 0.75, 1.0),
    perplexity_tokens=8192,
    repeats=3,
)
QUICK = Plan(
    kernel_tokens=(4096, 8192, 16384),
    prefill_tokens={"smollm2-135m": (4096, 8192), "gemma3-270m": (8192,)},
    needle_tokens=(2048, 4096),
    needle_depths=(0.1, 0.5, 0.9),
    perplexity_tokens=4096,
    repeats=1,
)


class _Captured(Exception):
    """Raised by `_Capture` to stop the forward once the wanted layer's inputs are in hand."""


class _Capture:
    """Prefill hook: attention of earlier layers (dense up to the model's context, sparse past it),
    then the wanted layer's q, k, v are kept and the forward stops."""

    def __init__(self, layer: int, config: SparseConfig, dense: bool) -> None:
        self.layer = layer
        self.earlier = SparsePrefill(config, dense_full=dense)  # sliding windows exact either way
        self.qkv: tuple[torch.Tensor, ...] = ()
        self.scaling = 1.0

    def attend(self, layer, q, k, v, scaling, window):
        if layer == self.layer:
            self.qkv, self.scaling = (q[0].contiguous(), k[0].contiguous(), v[0].contiguous()), scaling
            raise _Captured
        return self.earlier.attend(layer, q, k, v, scaling, window)


def _full_layer(lm) -> int:
    """The middle full-attention layer (Gemma-3: a global one)."""
    cfg = lm.model.config.get_text_config()
    types = getattr(cfg, "layer_types", None) or ["full_attention"] * cfg.num_hidden_layers
    full = [i for i, t in enumerate(types) if t == "full_attention"]
    return full[len(full) // 2]


def _has_windows(lm) -> bool:
    return "sliding_attention" in (getattr(lm.model.config.get_text_config(), "layer_types", None) or [])


def _timed(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _ids(lm, n: int, text: str) -> list[int]:
    ids = lm.tokenizer.encode(text)  # with the model's start token where it has one (Gemma's <bos>)
    if len(ids) < n:
        raise DataError(f"only {len(ids)} tokens of long text, {n} wanted")
    return ids[:n]


def config_for(lm) -> SparseConfig:
    cfg = lm.model.config.get_text_config()
    return shipped(lm.name) or uniform(cfg.num_hidden_layers, cfg.num_attention_heads)


def kernel_rows(lm, config: SparseConfig, lengths, text: str, repeats: int) -> list[dict]:
    """(a): per length, dense SDPA vs sparse on one real layer, for the searched mix and each kind alone."""
    layer = _full_layer(lm)
    budget = 2048  # the uniform rows: each kind alone at one budget, for comparison with the searched mix
    kinds = {
        "searched": list(config.layers[layer]),
        "a_shape": HeadPattern("a_shape", 64, budget - 96),
        "vertical_slash": HeadPattern("vertical_slash", budget // 2, 400),
        "block_sparse": HeadPattern("block_sparse", budget // 64),
    }
    rows = []
    for n in lengths:
        cap = _Capture(layer, config, dense=n <= lm.max_context)
        try:
            lm.forward(torch.tensor([_ids(lm, n, text)]), 0, lm.new_cache(), keep=1, prefill=cap)
        except _Captured:
            pass
        q, k, v = cap.qkv
        H, D, s = q.shape[0], q.shape[2], cap.scaling
        dense_s = _timed(lambda: dense_attention(q, k, v, s), 1 if n > 16384 else repeats)
        sample = sample_rows(n)
        lse_dense = dense_lse(q, k, s, sample)
        for name, pats in kinds.items():
            pats = pats if isinstance(pats, list) else [pats] * H
            res = {}

            def run():
                res["out"] = sparse_attention(q, k, v, build_index(pats, q, k, s), s)

            sparse_s = _timed(run, repeats)
            _, lse, computed = res["out"]
            rows.append({
                "model": lm.name, "layer": layer, "tokens": n, "head_dim": D, "pattern": name,
                "dense_s": dense_s, "sparse_s": sparse_s, "speedup": dense_s / sparse_s,
                "recall": float(recall(lse[:, sample], lse_dense).mean()),
                "density": float(computed.sum()) / (H * n * (n + 1) / 2),
            })
            log.info("kernel %s", rows[-1])
    return rows


def prefill_rows(lm, config: SparseConfig, lengths, text: str, repeats: int) -> list[dict]:
    """(b): the model's whole prefill (logits of the last token), dense vs sparse."""
    rows = []
    for n in lengths:
        if n > lm.max_context:
            continue
        ids = torch.tensor([_ids(lm, n, text)])
        firsts = {}

        def run(mode: str):
            pf = None if mode == "dense" else SparsePrefill(config, dense_full=mode == "window")
            logits = lm.forward(ids, 0, lm.new_cache(), keep=1, prefill=pf)
            firsts[mode] = int(logits[0, -1].argmax())

        reps = repeats if n <= 8192 else 1  # a dense 32k prefill of Gemma-3 takes minutes
        dense_s = _timed(lambda: run("dense"), reps)
        sparse_s = _timed(lambda: run("sparse"), reps)
        rows.append({"model": lm.name, "tokens": n, "dense_s": dense_s, "sparse_s": sparse_s,
                     "speedup": dense_s / sparse_s, "same_first_token": firsts["dense"] == firsts["sparse"]})
        if _has_windows(lm):  # the exact sliding windows alone, full layers dense: their share of the gain
            rows[-1]["windows_only_s"] = _timed(lambda: run("window"), reps)
        log.info("prefill %s", rows[-1])
    return rows


# RULER's needle wording: both default models retrieve it densely at every length tried (a "pass key"
# sentence was missed by SmolLM2-135M even at 512 tokens: a test of the model, not of the prefill).
NEEDLE = "One of the special magic numbers for the archive is: {key}."
QUESTION = ("\n\nWhat is the special magic number for the archive mentioned in the text above? "
            "The special magic number for the archive is:")


def needle_prompt(lm, text: str, n: int, depth: float, key: int) -> list[int]:
    """n tokens: haystack (real text) with the needle sentence at `depth` (0 = start, 1 = end), then
    the question, plain completion."""
    tok = lm.tokenizer
    start = tok.encode("")  # the model's start token, if it has one
    needle = tok.encode(" " + NEEDLE.format(key=key) + " ", add_special_tokens=False)
    question = tok.encode(QUESTION, add_special_tokens=False)
    hay = tok.encode(text, add_special_tokens=False)[: max(n - len(start) - len(needle) - len(question), 0)]
    cut = int(len(hay) * depth)
    return start + hay[:cut] + needle + hay[cut:] + question


def _needles(lm, lengths, depths, text: str, rng: random.Random, grid: dict) -> None:
    import llmaccel

    for n in lengths:
        row = {"dense": [], "sparse": []}
        for depth in depths:
            key = rng.randint(10000, 99999)
            prompt = needle_prompt(lm, text, n, depth, key)
            for mode in ("dense", "sparse"):
                res = llmaccel.generate(lm, prompt, method="greedy", max_new_tokens=8, sparse_prefill=mode == "sparse")
                row[mode].append(int(str(key) in re.sub(r"\s", "", res.text)))
        for mode in grid:
            grid[mode].append(row[mode])
        log.info("needle %d tokens: dense %s sparse %s", n, row["dense"], row["sparse"])


def needle_grid(lm, config: SparseConfig, lengths, depths, text: str, seed: int = 0) -> dict:
    """(c): passkey found (greedy continuation contains the key) per length x depth, dense and sparse."""
    rng = random.Random(seed)
    grid = {"dense": [], "sparse": []}
    saved, lm.sparse_config = lm.sparse_config, dataclasses.replace(config, min_tokens=0)  # sparse at every length
    try:
        _needles(lm, lengths, depths, text, rng, grid)
    finally:
        lm.sparse_config = saved
    out = {"lengths": list(lengths), "depths": list(depths)}

    for mode, cells in grid.items():
        flat = [c for r in cells for c in r]
        out[mode] = {"accuracy": sum(flat) / len(flat), "grid": cells}
    out["cells_differing"] = sum(a != b for ra, rb in zip(grid["dense"], grid["sparse"]) for a, b in zip(ra, rb))
    return out


def perplexity(lm, config: SparseConfig, n: int, text: str) -> dict:
    """(d): perplexity of n tokens of real text, every position's logits from one dense or sparse prefill."""
    ids = torch.tensor([_ids(lm, n, text)])
    out = {"tokens": n}
    for mode in ("dense", "sparse"):
        pf = SparsePrefill(config) if mode == "sparse" else None
        logits = lm.forward(ids, 0, lm.new_cache(), keep=n, prefill=pf)[0]  # (n, V)
        nll = torch.nn.functional.cross_entropy(logits[:-1].float(), ids[0, 1:], reduction="mean")
        out[mode] = float(torch.exp(nll))
    out["ratio"] = out["sparse"] / out["dense"]
    return out


def heatmap(needle: dict, path: Path) -> Path:
    """Passkey found (green) or not (red) per context length x depth, dense beside sparse."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), sharey=True)
    for ax, mode in zip(axes, ("dense", "sparse")):
        grid = torch.tensor(needle[mode]["grid"], dtype=torch.float32).T  # (depths, lengths)
        ax.imshow(grid.numpy(), cmap="RdYlGn", vmin=0, vmax=1, aspect="auto", origin="upper")
        ax.set_xticks(range(len(needle["lengths"])), [f"{n / 1000:.0f}k" if n >= 1000 else str(n) for n in needle["lengths"]])
        ax.set_yticks(range(len(needle["depths"])), [f"{d:.0%}" for d in needle["depths"]])
        ax.set_xlabel("context length (tokens)")
        ax.set_title(f"{mode} prefill: {needle[mode]['accuracy']:.0%} found")
    axes[0].set_ylabel("needle depth")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def bench_prefill(models: list[str], quick: bool, llma_dir: Path = LLMA_DIR, plan: Plan | None = None) -> dict:
    import llmaccel
    from llmaccel.models import ModelLoadError

    plan = plan or (QUICK if quick else FULL)
    need = max([*plan.kernel_tokens, *[n for v in plan.prefill_tokens.values() for n in v], plan.perplexity_tokens])
    text = long_text(need * 6, llma_dir)  # ~4 characters per token in this text; 6 leaves room
    doc = {"plan": dataclasses.asdict(plan), "kernel": [], "prefill": [], "threads": torch.get_num_threads()}
    for i, name in enumerate(models):
        try:
            lm = llmaccel.load(name)
        except ModelLoadError as e:
            log.warning("skipping %s: %s", name, e)
            continue
        config = config_for(lm)
        doc.setdefault("configs", {})[name] = {"budget": config.budget, "searched": bool(config.budget)}
        doc["kernel"] += kernel_rows(lm, config, plan.kernel_tokens, text, plan.repeats)
        doc["prefill"] += prefill_rows(lm, config, plan.prefill_tokens.get(name, ()), text, plan.repeats)
        if i == 0:  # accuracy on the first (default) model
            doc["needle"] = needle_grid(lm, config, plan.needle_tokens, plan.needle_depths, text)
            doc["perplexity"] = perplexity(lm, config, plan.perplexity_tokens, text)
            doc["accuracy_model"] = name
        del lm
    return doc


def table(doc: dict) -> str:
    lines = ["kernel (one layer, all heads): dense SDPA vs sparse (index + kernel)",
             f"{'model':<14}{'tokens':>8}{'hd':>5}  {'pattern':<15}{'dense s':>9}{'sparse s':>9}{'speedup':>8}{'recall':>8}{'density':>8}"]
    for r in doc["kernel"]:
        lines.append(f"{r['model']:<14}{r['tokens']:>8}{r['head_dim']:>5}  {r['pattern']:<15}{r['dense_s']:>9.3f}"
                     f"{r['sparse_s']:>9.3f}{r['speedup']:>7.1f}x{r['recall']:>8.3f}{r['density']:>8.3f}")
    lines += ["", "prefill (whole model; windows only = exact sliding windows in the kernel, full layers dense)",
              f"{'model':<14}{'tokens':>8}{'dense s':>9}{'sparse s':>9}{'speedup':>8}{'windows only s':>16}  same 1st token"]
    for r in doc["prefill"]:
        w = f"{r['windows_only_s']:>16.2f}" if "windows_only_s" in r else f"{'-':>16}"
        lines.append(f"{r['model']:<14}{r['tokens']:>8}{r['dense_s']:>9.2f}{r['sparse_s']:>9.2f}{r['speedup']:>7.2f}x{w}  "
                     f"{r['same_first_token']}")
    if "needle" in doc:
        nd = doc["needle"]
        lines += ["", f"needle ({doc['accuracy_model']}, {len(nd['lengths'])} lengths x {len(nd['depths'])} depths): "
                  f"dense {nd['dense']['accuracy']:.0%}, sparse {nd['sparse']['accuracy']:.0%}, "
                  f"{nd['cells_differing']} cell(s) differ"]
        pp = doc["perplexity"]
        lines.append(f"perplexity ({pp['tokens']} tokens): dense {pp['dense']:.3f}, sparse {pp['sparse']:.3f} "
                     f"({pp['ratio'] - 1:+.2%})")
    return "\n".join(lines)


def write(doc: dict, out: Path) -> list[Path]:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1) + "\n")
    paths = [out]
    if "needle" in doc:
        paths.append(heatmap(doc["needle"], out.with_suffix(".needle.png")))
    return paths
