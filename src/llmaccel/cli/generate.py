"""`llmaccel generate`, `llmaccel steps` and `llmaccel demo`."""

from __future__ import annotations

import json
import sys

from llmaccel.cli.options import (
    UserError, add_decoding_options, add_model, add_reference_options, add_sampling_options, device,
    lookahead_options, positive, read_text, reference_options, sampling,
)
from llmaccel.methods import DEFAULT_METHOD, METHODS

GENERATE_HELP = """\
The prompt is what the model reads. --reference files only feed drafts: text the output may copy,
never seen by the model, so they speed up an answer without changing it. --context files are
documents the model should read: they go into the prompt as numbered documents ([1] ..., [2] ...)
before the prompt, and are references too. For retrieval-augmented generation use --context."""


def _prompt(args) -> str:
    if args.prompt_file:
        return read_text(args.prompt_file, "prompt file")
    if args.prompt is not None:
        return args.prompt
    if not sys.stdin.isatty():
        try:
            return sys.stdin.read()
        except UnicodeDecodeError as exc:
            raise UserError(f"cannot read the prompt from standard input: not UTF-8 text (byte {exc.start})") from exc
    raise UserError("give a prompt as an argument, with --prompt-file, or on standard input")


def with_documents(prompt: str, documents: list[str]) -> str:
    """The prompt after numbered documents, as `llmaccel bench` lays out a RAG row."""
    if not documents:
        return prompt
    from llmaccel.bench.data import user_message

    return user_message(prompt, documents)


def cmd_generate(args) -> int:
    prompt = _prompt(args)
    if not prompt.strip():
        raise UserError("the prompt is empty")
    positive("--max-new-tokens", args.max_new_tokens)
    options, lookahead, chosen = reference_options(args), lookahead_options(args), sampling(args)
    if args.logprobs is not None and not args.json:
        raise UserError("--logprobs is printed with --json: add it")
    if args.logprobs is not None and not 0 <= args.logprobs <= 20:
        raise UserError(f"--logprobs must be 0..20, got {args.logprobs}")
    context = [read_text(f, "context file") for f in args.context]
    refs = context + [read_text(f, "reference file") for f in args.reference]
    dev = device(args)

    import llmaccel
    from llmaccel.engine import MAX_REFERENCE_CHARS

    if sum(len(r) for r in refs) > MAX_REFERENCE_CHARS:  # before loading the model
        raise UserError(f"the --reference/--context files hold {sum(len(r) for r in refs):,} characters; at most "
                        f"{MAX_REFERENCE_CHARS:,} are indexed for drafting")

    lm = llmaccel.load(args.model, device=dev)
    result = llmaccel.generate(
        lm, with_documents(prompt, context), references=refs, method=args.method,
        max_new_tokens=args.max_new_tokens, stop=args.stop, chat=args.chat, options=options, lookahead=lookahead,
        sparse_prefill=args.sparse_prefill, sampling=chosen, logprobs=args.logprobs,
    )
    if args.json:
        print(json.dumps({
            "model": args.model, "method": result.method, "token_ids": result.token_ids, "text": result.text,
            "prompt_tokens": result.prompt_tokens, "steps": result.steps, "stop_reason": result.stop_reason,
            "prefill_s": result.prefill_s, "decode_s": result.decode_s, "total_s": result.total_s,
            "decode_tokens_per_s": result.decode_tokens_per_s, "drafted": result.drafted,
            "accepted": result.accepted, "lookup_s": result.lookup_s, "prefill_density": result.prefill_density,
            "seed": result.seed,
            **({"logprobs": [{"token": e.token, "logprob": e.logprob, "top_logprobs": [list(t) for t in e.top]}
                             for e in result.logprobs]} if result.logprobs is not None else {}),
        }))
    else:
        print(result.text)
        seed = f", seed {result.seed}" if result.seed is not None else ""
        print(
            f"[{result.method}: {len(result.token_ids)} tokens in {result.steps} steps, "
            f"{result.decode_tokens_per_s:.1f} tok/s decode, prefill {result.prefill_s:.2f}s{seed}]",
            file=sys.stderr,
        )
    return 0


def cmd_steps(args) -> int:
    """Forced-decoding step counts (the paper's Algorithm 2) for targets in a data file or given directly."""
    positive("--limit", args.limit)
    options = reference_options(args, adaptive=False)
    if args.data:
        if args.reference or args.target:
            raise UserError("--data takes its targets and references from the file: drop --target / --reference")
        from llmaccel.bench import steps as steps_mod

        grid = {}
        if args.match_len is not None:
            grid["match_lens"] = (options.match_len,)
        if args.copy_len is not None:
            grid["copy_lens"] = (options.copy_len,)
        print(steps_mod.step_table(args.model, [args.data], limit=args.limit, **grid))
        return 0
    if not args.target:
        raise UserError("give --data FILE.jsonl, or --target FILE with --reference FILE ...")
    target = read_text(args.target, "target file")
    refs = [read_text(f, "reference file") for f in args.reference]
    from llmaccel import count_steps, models

    tok = models.load_tokenizer(args.model)
    t = tok.encode(target, add_special_tokens=False)
    r = [tok.encode(x, add_special_tokens=False) for x in refs]
    n = count_steps(t, r, options=options)
    print(json.dumps({"target_tokens": len(t), "greedy_steps": len(t), "reference_steps": n,
                      "step_ratio": len(t) / n if n else None}))
    return 0


def cmd_demo(args) -> int:
    from llmaccel.bench import demo

    demo.main(args.model)
    return 0


def add_parsers(sub) -> None:
    g = sub.add_parser("generate", help="generate text (greedy or sampled, accelerated without changing the output)",
                       description=GENERATE_HELP)
    g.add_argument("prompt", nargs="?", help="the prompt (or --prompt-file, or standard input)")
    g.add_argument("--prompt-file")
    g.add_argument("--context", action="append", default=[], metavar="FILE",
                   help="a document the model reads: put into the prompt, numbered, and drafted from (repeatable)")
    g.add_argument("--reference", action="append", default=[], metavar="FILE",
                   help="a text the output may copy: drafted from, not read by the model (repeatable)")
    g.add_argument("--chat", action="store_true", help="apply the model's chat template")
    g.add_argument("--method", choices=METHODS, default=DEFAULT_METHOD)
    g.add_argument("--max-new-tokens", type=int, default=128)
    g.add_argument("--stop", action="append", default=[], help="a stop string (repeatable)")
    g.add_argument("--json", action="store_true", help="print token ids, text, steps and timings as JSON")
    g.add_argument("--logprobs", type=int, metavar="N",
                   help="with --json: each token's log-probability and its N (0..20) most likely alternatives")
    g.add_argument("--sparse-prefill", action="store_true",
                   help="prefill long prompts with sparse attention (faster, APPROXIMATE; decoding stays exact)")
    add_decoding_options(g)
    add_sampling_options(g)
    g.set_defaults(func=cmd_generate)

    s = sub.add_parser("steps", help="decoding steps `reference` needs for a target (forced decoding)")
    s.add_argument("--data", help="an LLMA .jsonl file: step table over its result.text targets "
                                  "(match_len 1-3 x copy_len 4-32 unless --match-len / --copy-len are given)")
    s.add_argument("--limit", type=int)
    s.add_argument("--target", help="a file with the target output")
    s.add_argument("--reference", action="append", default=[], metavar="FILE")
    add_model(s)
    add_reference_options(s, decoding=False)
    s.set_defaults(func=cmd_steps)

    d = sub.add_parser("demo", help="reference decoding vs greedy on a RAG example, with the speedup")
    add_model(d)
    d.set_defaults(func=cmd_demo)
