"""Offline pattern search (MInference's kernel-aware search): per layer and head, try each pattern at
an equal cost budget on real long text and keep the one that keeps the most attention mass.

Beyond MInference: budgets come in levels (512 ... 4096 keys per query) and each head takes the
cheapest level at which its best pattern reaches the target recall, so heads whose attention is easy
to cover spend little and hard heads (SmolLM2's first layers) get more; a head that reaches the
target at no level gets the best pattern of the largest level.

The model runs one dense prefill; at each full-attention layer `PatternSearch.attend` sees the
layer's real queries and keys, computes the dense output (so later layers see dense inputs), and
runs every candidate pattern through the sparse kernel to measure, per head, its recall (share of
dense attention mass kept: the lower of its mean over sampled query rows and over the prompt's last
64 rows) and its cost (keys scored per query, from the
kernel's own count). A candidate whose cost exceeds the budget is not eligible.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch

from llmaccel.sparse.config import DEFAULT_MIN_TOKENS, FALLBACK, SparseConfig
from llmaccel.sparse.kernels import dense_attention, dense_lse, recall, sample_rows, sparse_attention
from llmaccel.sparse.patterns import BLOCK, FORCED_LOCAL, FORCED_SINKS, LAST_Q, HeadPattern, build_index
from llmaccel.sparse.prefill import window_index

log = logging.getLogger(__name__)

BUDGETS = (512, 1024, 2048, 4096)  # keys per query; 4096 is 12% of a 64k prompt's causal average
# The recall a head's pattern should reach at the search length. Measured on SmolLM2 at 8k (BENCHMARKS.md,
# "Sparse prefill"): 0.95 gives +1.33% perplexity, 0.97 +0.93% (within the 1% target) at 1.59x prefill.
TARGET_RECALL = 0.97


def candidates(budget: int) -> list[HeadPattern]:
    """Patterns sized to about `budget` keys per query (vertical-slash at several splits between
    columns and diagonals, since how many keys a slash set covers depends on how its lines cluster)."""
    sinks = 64
    out = [HeadPattern("a_shape", sinks, max(budget - sinks - BLOCK // 2, BLOCK))]
    for v_share in (0.25, 0.5, 0.75):
        v = max(int(budget * v_share), FORCED_SINKS)
        for s in (FORCED_LOCAL, 4 * FORCED_LOCAL):
            if s < budget:
                out.append(HeadPattern("vertical_slash", v, s))
    out.append(HeadPattern("block_sparse", max(budget // BLOCK, 2)))
    return out


@dataclass
class PatternSearch:
    """A prefill attention hook (see sparse.prefill.SparsePrefill.attend) that searches as it goes."""

    budgets: tuple[int, ...] = BUDGETS
    target: float = TARGET_RECALL
    cands: list[HeadPattern] = field(default_factory=list)
    level: list[int] = field(default_factory=list)  # the budget each candidate was sized for
    rows: int = 256  # query rows sampled for recall
    recall: dict[int, torch.Tensor] = field(default_factory=dict)  # layer -> (candidates, H)
    cost: dict[int, torch.Tensor] = field(default_factory=dict)  # layer -> (candidates, H) keys per query

    def __post_init__(self) -> None:
        for b in sorted(self.budgets):
            for c in candidates(b):
                if c not in self.cands:
                    self.cands.append(c)
                    self.level.append(b)

    def attend(self, layer: int, q, k, v, scaling: float, window: int | None) -> torch.Tensor:
        q, k, v = q[0], k[0], v[0]  # (H, T, D), (Hkv, T, D), (Hkv, T, D)
        H, T, _ = q.shape
        if window is not None and window < T:  # sliding layers run their window exactly; nothing to search
            out, _, _ = sparse_attention(q, k, v, window_index(H, window), scaling, window)
            return out.transpose(0, 1).contiguous()[None]
        out = dense_attention(q, k, v, scaling)  # (H, T, D)
        # Recall over rows sampled across the prompt, and over its last LAST_Q rows on their own: the
        # last queries (a question, an instruction) produce the first token, and a pattern that keeps
        # the average but blurs what they attend to (a needle far back) fails retrieval. A head's
        # recall is the lower of the two.
        tail = torch.arange(max(T - LAST_Q, 0), T)
        rows = torch.cat([sample_rows(T, self.rows), tail])
        lse_dense = dense_lse(q, k, scaling, rows)  # (H, R + LAST_Q)
        spread = len(rows) - len(tail)
        rec, cost = [], []
        for cand in self.cands:
            _, lse, computed = sparse_attention(q, k, v, build_index([cand] * H, q, k, scaling), scaling)
            got = lse[:, rows]
            rec.append(torch.minimum(recall(got[:, :spread], lse_dense[:, :spread]),
                                     recall(got[:, spread:], lse_dense[:, spread:])))
            cost.append(computed.float() / T)
        self.recall[layer], self.cost[layer] = torch.stack(rec), torch.stack(cost)
        log.info("layer %d: best recall per head %s", layer, self.recall[layer].max(0).values.tolist())
        return out.transpose(0, 1).contiguous()[None]  # (1, T, H, D)

    def choose(self, n_layers: int, n_heads: int, fallback: HeadPattern) -> tuple[tuple[HeadPattern, ...], ...]:
        """Per layer and head, the cheapest budget level whose best eligible candidate reaches the
        target recall (else the best candidate of all); layers never searched (sliding ones, which
        run their exact window) keep `fallback`."""
        level = torch.tensor(self.level, dtype=torch.float32)[:, None]  # (C, 1)
        layers = []
        for i in range(n_layers):
            if i not in self.recall:
                layers.append((fallback,) * n_heads)
                continue
            rec = self.recall[i].masked_fill(self.cost[i] > level, -1.0)  # (C, H): over its budget = not eligible
            heads = []
            for h in range(n_heads):
                pick = int(rec[:, h].argmax())
                for b in sorted(self.budgets):
                    at = torch.where(level[:, 0] == b, rec[:, h], torch.tensor(-1.0))
                    if float(at.max()) >= self.target:
                        pick = int(at.argmax())
                        break
                heads.append(self.cands[pick])
            layers.append(tuple(heads))
        return tuple(layers)

    def summary(self, layers: tuple[tuple[HeadPattern, ...], ...]) -> dict:
        """Recall and cost of the chosen pattern per searched layer, and how often each kind won."""
        per_layer, kinds = {}, {}
        for i, heads in enumerate(layers):
            if i not in self.recall:
                continue
            idx = [self.cands.index(p) for p in heads]
            r = [round(float(self.recall[i][c, h]), 4) for h, c in enumerate(idx)]
            c = [round(float(self.cost[i][c, h]), 1) for h, c in enumerate(idx)]
            per_layer[str(i)] = {"recall": r, "keys_per_query": c}
            for p in heads:
                kinds[p.kind] = kinds.get(p.kind, 0) + 1
        means = [x for v in per_layer.values() for x in v["recall"]]
        return {"kinds": kinds, "mean_recall": round(sum(means) / max(len(means), 1), 4), "layers": per_layer}


FACTS = ("The access code for the {room} room is {code}.",
         "What is the access code for the {room} room? The access code for the {room} room is")
ROOMS = ("north", "copper", "garden", "archive", "signal", "harbour")


def retrieval_prompt(tokenizer, text: str, tokens: int, seed: int = 0) -> list[int]:
    """`tokens` tokens of real text with six facts spread through it and, at the end, a question about
    one of them (with the model's start token, if any).

    Why: on plain text the last queries attend mostly nearby, so a pattern can keep their attention
    mass while blurring what lies far back; block-sparse heads chosen that way lost needles that dense
    prefill retrieved (BENCHMARKS.md, "sparse prefill"). A question whose answer sits thousands of
    tokens back makes the last rows' recall (see PatternSearch.attend) measure retrieval. The wording
    differs from bench-prefill's needle test, which this search never sees.
    """
    import random

    rng = random.Random(seed)
    start = tokenizer.encode("")
    facts = [tokenizer.encode(" " + FACTS[0].format(room=r, code=rng.randint(1000, 9999)) + " ", add_special_tokens=False)
             for r in ROOMS]
    asked = rng.randrange(len(ROOMS))
    question = tokenizer.encode("\n\n" + FACTS[1].format(room=ROOMS[asked]), add_special_tokens=False)
    room = tokens - len(start) - sum(map(len, facts)) - len(question)
    hay = tokenizer.encode(text, add_special_tokens=False)[:room]
    out, at = list(start), 0
    for i, fact in enumerate(facts):  # at 10%, 25%, ... 85% of the text
        cut = int(len(hay) * (0.1 + 0.15 * i))
        out += hay[at:cut] + fact
        at = cut
    return out + hay[at:] + question


def search(lm, ids: list[int], budgets: tuple[int, ...] = BUDGETS, target: float = TARGET_RECALL,
           min_tokens: int | None = None) -> SparseConfig:
    """Search patterns for `lm` on the prompt `ids` (real long text); returns the config to save."""
    cfg = lm.model.config.get_text_config()
    hook = PatternSearch(tuple(budgets), target)
    with torch.inference_mode():
        lm.forward(torch.tensor([ids], device=lm.device), 0, lm.new_cache(), keep=1, prefill=hook)
    layers = hook.choose(cfg.num_hidden_layers, cfg.num_attention_heads, FALLBACK)
    summary = hook.summary(layers)
    summary.update({"tokens": len(ids), "target_recall": target, "budgets": list(budgets),
                    "candidates": [p.to_json() for p in hook.cands]})
    return SparseConfig(
        layers=layers,
        min_tokens=min_tokens or DEFAULT_MIN_TOKENS,
        model=lm.name,
        budget=max(budgets),
        search=summary,
    )
