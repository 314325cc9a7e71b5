"""The naive greedy oracle: recompute the whole sequence for every token, no cache, no tricks."""

from __future__ import annotations

import torch


@torch.inference_mode()
def oracle_greedy(model, prompt: list[int], max_new_tokens: int, eos_ids=()) -> list[int]:
    ids = list(prompt)
    out: list[int] = []
    for _ in range(max_new_tokens):
        logits = model(input_ids=torch.tensor([ids], device=model.device), use_cache=False).logits[0, -1]  # (V,)
        tok = int(logits.argmax())
        out.append(tok)
        ids.append(tok)
        if tok in eos_ids:
            break
    return out
