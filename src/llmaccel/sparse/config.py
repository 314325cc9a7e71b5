"""Per-layer, per-head sparse patterns for a model, as JSON (what `llmaccel search-patterns` writes).

Format (MInference's list per layer of {head: [type, v, s]}, plus what llmaccel needs to apply it):
    {"model": "smollm2-135m", "min_tokens": 4096, "budget": 1024,
     "layers": [{"0": ["vertical_slash", 1000, 200], "1": ["a_shape", 64, 960], ...}, ...],
     "search": {...how it was found: text, tokens, recall per layer...}}
`min_tokens` is the prompt length from which sparse prefill is used (below it, dense is faster: measured
by `llmaccel bench-prefill`). Configs for the default models ship in sparse/configs/.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from llmaccel.sparse.patterns import HeadPattern

CONFIG_DIR = Path(__file__).with_name("configs")
DEFAULT_MIN_TOKENS = 4096  # prompts shorter than this prefill dense unless a config says otherwise
# Pattern for models without a searched config: vertical-slash, MInference's most general pattern,
# at the budget the searched configs use (see configs/*.json "budget").
FALLBACK = HeadPattern("vertical_slash", 512, 384)


class SparseConfigError(ValueError):
    """A pattern config that cannot be read or does not fit the model."""


@dataclass(frozen=True)
class SparseConfig:
    layers: tuple[tuple[HeadPattern, ...], ...]  # [layer][query head]
    min_tokens: int = DEFAULT_MIN_TOKENS
    model: str = ""
    budget: int = 0  # keys per query each candidate was allowed in the search (0: not searched)
    search: dict = field(default_factory=dict, compare=False)

    def to_json(self) -> dict:
        return {
            "model": self.model,
            "min_tokens": self.min_tokens,
            "budget": self.budget,
            "layers": [{str(h): p.to_json() for h, p in enumerate(layer)} for layer in self.layers],
            "search": self.search,
        }

    @staticmethod
    def from_json(data: dict) -> SparseConfig:
        try:
            layers = tuple(
                tuple(HeadPattern.from_json(layer[str(h)]) for h in range(len(layer))) for layer in data["layers"]
            )
            return SparseConfig(
                layers=layers,
                min_tokens=int(data.get("min_tokens", DEFAULT_MIN_TOKENS)),
                model=str(data.get("model", "")),
                budget=int(data.get("budget", 0)),
                search=dict(data.get("search", {})),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise SparseConfigError(f"not a sparse pattern config: {e}") from None

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=1) + "\n")

    @staticmethod
    def load(path: str | Path) -> SparseConfig:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise SparseConfigError(f"cannot read sparse pattern config {path}: {e}") from None
        return SparseConfig.from_json(data)

    def check(self, n_layers: int, n_heads: int) -> None:
        if len(self.layers) != n_layers or any(len(layer) != n_heads for layer in self.layers):
            raise SparseConfigError(
                f"pattern config for {self.model or 'another model'} has {len(self.layers)} layers x "
                f"{len(self.layers[0]) if self.layers else 0} heads; this model has {n_layers} x {n_heads}"
            )


def uniform(n_layers: int, n_heads: int, pattern: HeadPattern = FALLBACK, min_tokens: int = DEFAULT_MIN_TOKENS):
    """One pattern for every head: the fallback for models without a searched config."""
    return SparseConfig(layers=tuple((pattern,) * n_heads for _ in range(n_layers)), min_tokens=min_tokens)


def shipped(model_name: str) -> SparseConfig | None:
    """The config shipped for a model alias (sparse/configs/<alias>.json), if any."""
    path = CONFIG_DIR / f"{model_name}.json"
    return SparseConfig.load(path) if path.is_file() else None
