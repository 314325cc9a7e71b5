"""The decoding methods, by name. Every method returns exactly the tokens of plain decoding: greedy by
default, or plain sampling with the same seed (sampling.py).

- `greedy`: one token per step, no draft (the baseline; with sampling, plain sampling).
- `reference`: drafts copied from the references, the prompt and the output so far (drafting/reference.py).
- `lookahead`: the reference draft and the n-gram pool's candidates as one tree, plus the Jacobi window
  (drafting/lookahead.py).
- `auto`: `reference` or `lookahead`, chosen per step by expected tokens per unit of step cost.

Kept apart from engine.py so that the command line can name the methods without importing torch.
"""

METHODS = ("greedy", "reference", "lookahead", "auto")
DEFAULT_METHOD = "reference"
