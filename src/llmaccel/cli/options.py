"""What the subcommands share: user errors, reading files, the model/device/drafting options.

Options are checked here, before any model is loaded, so a bad value costs the user no wait.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from llmaccel.drafting.lookahead import LookaheadOptions
from llmaccel.drafting.reference import ReferenceOptions
from llmaccel.errors import GenerationError
from llmaccel.sampling import Sampling

EXIT_USER_ERROR = 2


class UserError(Exception):
    """A mistake in the command line or its files: printed as one line, exit code 2."""


def read_text(path: str, what: str) -> str:
    """The file's text (UTF-8), or a UserError naming `what` the file was meant to be."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"cannot read {what} {path!r}: not UTF-8 text (byte {exc.start})") from exc
    except OSError as exc:
        raise UserError(f"cannot read {what} {path!r}: {exc.strerror or exc}") from exc


def positive(name: str, value: int | None) -> None:
    if value is not None and value <= 0:
        raise UserError(f"{name} must be positive, got {value}")


def add_model(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="smollm2-135m", help="alias (smollm2-135m, gemma3-270m), model folder or .gguf")


def add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="cpu", help="where the model runs: cpu (default), cuda or cuda:N")


def device(args) -> str:
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


def add_reference_options(p: argparse.ArgumentParser, decoding: bool = True) -> None:
    """--match-len and --copy-len; for commands that decode also --branches and --no-guard."""
    p.add_argument("--match-len", type=int, default=None, help="shortest suffix match that triggers a draft")
    p.add_argument("--copy-len", type=int, default=None, help="most tokens copied per draft")
    if decoding:
        p.add_argument("--branches", type=int, default=None, help="other continuations verified beside each draft (tree)")
        p.add_argument("--no-guard", action="store_true", help="always draft in full (no cost/acceptance guard)")


def reference_options(args, adaptive: bool | None = None) -> ReferenceOptions:
    """ReferenceOptions from --match-len/--copy-len/--branches/--no-guard (the dataclass checks ranges)."""
    base = ReferenceOptions()
    given = {name: getattr(args, name, None) for name in ("match_len", "copy_len", "branches")}
    if adaptive is None:
        adaptive = not getattr(args, "no_guard", False)
    try:
        return ReferenceOptions(**{k: v if v is not None else getattr(base, k) for k, v in given.items()},
                                adaptive=adaptive)
    except ValueError as exc:
        raise UserError(_flag_names(str(exc))) from exc


def add_lookahead_options(p: argparse.ArgumentParser) -> None:
    d = LookaheadOptions()
    p.add_argument("--window", type=int, help=f"lookahead: Jacobi window columns W (default {d.window})")
    p.add_argument("--ngram", type=int, help=f"lookahead: n-gram size N, the window has N-1 rows (default {d.ngram})")
    p.add_argument("--pool-size", type=int, help=f"lookahead: candidates kept and verified per key G (default {d.pool_size})")


def lookahead_options(args) -> LookaheadOptions:
    base = LookaheadOptions()
    given = {name: getattr(args, name, None) for name in ("window", "ngram", "pool_size")}
    try:
        return LookaheadOptions(**{k: v if v is not None else getattr(base, k) for k, v in given.items()})
    except ValueError as exc:
        raise UserError(_flag_names(str(exc))) from exc


def add_decoding_options(p: argparse.ArgumentParser) -> None:
    """--model, --device and the drafting options: what a command that decodes takes."""
    add_model(p)
    add_device(p)
    add_reference_options(p)
    add_lookahead_options(p)


def add_sampling_options(p: argparse.ArgumentParser) -> None:
    """--temperature and the rest of `Sampling`'s fields (defaults: greedy, every cut and penalty off)."""
    g = p.add_argument_group("sampling (default greedy; with --seed, every method gives plain sampling's tokens)")
    g.add_argument("--temperature", type=float, help="0 = greedy (default); e.g. 0.7 or 1.0 to sample")
    g.add_argument("--top-p", type=float, help="keep the most likely tokens up to this probability mass (default 1)")
    g.add_argument("--top-k", type=int, help="keep the k most likely tokens (default 0: all)")
    g.add_argument("--min-p", type=float, help="drop tokens below this share of the most likely one's probability")
    g.add_argument("--repetition-penalty", type=float, help="> 1 discourages tokens of the prompt and output")
    g.add_argument("--presence-penalty", type=float, help="-2..2, per token that occurs in the output")
    g.add_argument("--frequency-penalty", type=float, help="-2..2, per occurrence in the output")
    g.add_argument("--seed", type=int, help="the sampling seed (default: a random one, printed)")


def sampling(args) -> Sampling:
    """The Sampling the options ask for (checked by the dataclass: one line naming the flag)."""
    given = {k: getattr(args, k) for k in ("temperature", "top_p", "top_k", "min_p", "repetition_penalty",
                                           "presence_penalty", "frequency_penalty", "seed")
             if getattr(args, k, None) is not None}
    try:
        return Sampling(**given)
    except GenerationError as exc:
        raise UserError(_flag_names(str(exc))) from exc


def _flag_names(message: str) -> str:
    """The options' own messages name fields (match_len); on the command line they are flags (--match-len)."""
    for field in ("match_len", "copy_len", "branches", "window", "ngram", "pool_size", "temperature", "top_p",
                  "top_k", "min_p", "repetition_penalty", "presence_penalty", "frequency_penalty", "seed"):
        message = message.replace(f"{field} ", f"--{field.replace('_', '-')} ")
    return message
