"""The `llmaccel` command: generate, steps, demo (cli/generate.py); bench, cost, search-patterns,
bench-prefill (cli/bench.py); serve (cli/serve.py).

User errors print one line and exit 2; Ctrl-C exits 130; neither shows a traceback. Only light modules
are imported before `main` runs, so even an interrupt during the heavy imports is answered in one line.
"""

from __future__ import annotations

import argparse
import logging
import sys

from llmaccel.cli.options import EXIT_USER_ERROR, UserError

__all__ = ["EXIT_USER_ERROR", "UserError", "main", "parser"]
EXIT_INTERRUPTED = 130


def parser() -> argparse.ArgumentParser:
    from llmaccel.cli import bench, generate, serve

    ap = argparse.ArgumentParser(prog="llmaccel", description="Lossless LLM inference acceleration")
    ap.add_argument("-v", "--verbose", action="store_true", help="log what loading, building and drafting do")
    sub = ap.add_subparsers(dest="command", required=True)
    generate.add_parsers(sub)
    bench.add_parsers(sub)
    serve.add_parsers(sub)
    return ap


def _user_errors() -> tuple[type[BaseException], ...]:
    """The exceptions that mean the user's input was wrong (imported only once a command has run)."""
    from llmaccel.bench.data import DataError
    from llmaccel.errors import GenerationError
    from llmaccel.models import ModelLoadError
    from llmaccel.sparse.config import SparseConfigError

    return UserError, GenerationError, ModelLoadError, DataError, SparseConfigError


def main(argv: list[str] | None = None) -> int:
    try:
        args = parser().parse_args(argv)
        logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                            format="llmaccel: %(levelname)s %(message)s")
        try:
            return args.func(args)
        except Exception as exc:
            if isinstance(exc, _user_errors()):
                print(f"llmaccel: error: {exc}", file=sys.stderr)
                return EXIT_USER_ERROR
            raise
    except KeyboardInterrupt:
        print("llmaccel: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
