"""`python -m llmaccel.kernels`: build llmaccel's CPU kernels now (once per machine, ~1 min), or find the
build that exists, and print where it is. Exits with status 1 and the reason if they cannot be built."""

from __future__ import annotations

import logging
import sys

from llmaccel.kernels import loader, skinny


def main() -> int:
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    try:
        path = loader.build()
    except RuntimeError as e:
        print(e, file=sys.stderr)
        return 1
    print(f"llmaccel CPU kernels: {path} (isa {loader.load().isa()}, AMX {'yes' if skinny.has_amx() else 'no'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
