"""llama.cpp as a peer in `llmaccel bench`: methods `llamacpp-greedy` and `llamacpp-pld`.

The peer a CPU user would pick: llama-cpp-python compiled for this CPU (`make peers`), running the
same GGUF file llmaccel's fp32 model is converted from, on the same prompt token ids (ids, not text),
greedy (temperature 0), with the model's EOS ids and the same new-token budget as the other methods.
llama.cpp multiplies the GGUF's quantised weights by quantised activations (Q8 dot products), so its
tokens may differ from fp32 greedy decoding: the bench reports its match rate with hf-greedy, and
`--check` does not count it.

- `llamacpp-greedy`: one token per forward pass.
- `llamacpp-pld`: llama-cpp-python's prompt lookup decoding (`LlamaPromptLookupDecoding`): up to
  PLD_TOKENS tokens that followed the last (up to PLD_NGRAM) tokens earlier in the prompt or output are
  drafted and checked in one forward pass, as `hf-pld` does in transformers.

Fields as the other methods: steps = forward passes (calls of `Llama.eval`: the prefill is one, then
one per decoding step, a drafted step included); prefill_s = until the first new token is sampled,
decode_s = the rest.
"""

from __future__ import annotations

import time
from pathlib import Path

from llmaccel.models import ALIASES, ModelLoadError

PLD_TOKENS = 10  # tokens drafted per step: hf-pld's prompt_lookup_num_tokens, so the two look-ups compare
PLD_NGRAM = 2  # longest n-gram matched: LlamaPromptLookupDecoding's default and transformers' max_matching_ngram_size
METHODS = {"llamacpp-greedy": None, "llamacpp-pld": PLD_TOKENS}  # name -> tokens drafted per step (None: no draft)
MAKE_PEERS = "run `make peers` (compiles llama-cpp-python for this CPU: about 20 minutes on 2 cores)"


def missing() -> str | None:
    """Why llama.cpp cannot run here (a sentence naming `make peers`), or None when it can."""
    try:
        import llama_cpp  # noqa: F401
        from llama_cpp.llama_speculative import LlamaPromptLookupDecoding  # noqa: F401
    except ImportError as exc:
        return f"methods llamacpp-* need llama-cpp-python ({exc}); {MAKE_PEERS}"
    except OSError as exc:  # the package is there but its compiled library does not load
        return f"llama-cpp-python is installed but its library does not load ({exc}); {MAKE_PEERS} again"
    return None


def gguf_file(name_or_path: str) -> Path:
    """The GGUF file a model name stands for: an alias's file inside its package, or a .gguf path.
    A model folder has none (llama.cpp reads GGUF only): ModelLoadError."""
    from llmaccel.models.sources import alias_gguf

    if name_or_path in ALIASES:
        return alias_gguf(name_or_path, ALIASES[name_or_path])
    path = Path(name_or_path).expanduser()
    if path.is_file() and path.suffix.lower() == ".gguf":
        return path
    raise ModelLoadError(
        f"llamacpp-* methods run a GGUF file and {name_or_path!r} is not one; pass --model as an alias "
        f"({', '.join(ALIASES)}) or a .gguf file, or drop the llamacpp-* methods"
    )


def load(gguf: Path, n_ctx: int, threads: int, draft_tokens: int | None):
    """A llama.cpp model for one method: quiet, CPU only, `threads` threads for prefill and decoding,
    `n_ctx` positions, llama.cpp's default batches, and a prompt-lookup draft of `draft_tokens` tokens
    when that is not None. Its `forwards` counts `eval` calls (a prefill longer than a batch is still one)."""
    import llama_cpp
    from llama_cpp.llama_speculative import LlamaPromptLookupDecoding

    class Counting(llama_cpp.Llama):
        forwards = 0

        def eval(self, tokens):
            self.forwards += 1
            super().eval(tokens)

    draft = None if draft_tokens is None else LlamaPromptLookupDecoding(PLD_NGRAM, draft_tokens)
    try:
        return Counting(
            model_path=str(gguf), n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads, n_gpu_layers=0,
            draft_model=draft, verbose=False,
            # a draft needs every position's logits; llama-cpp-python turns that on for a draft model
            # but sizes its logits buffer from this flag, which is then one batch (512) long
            logits_all=draft is not None,
        )
    except (ValueError, RuntimeError) as exc:
        raise ModelLoadError(f"llama.cpp cannot load {gguf}: {exc}") from exc


def context_for(prompt_tokens: int, max_new_tokens: int) -> int:
    """Positions a run needs: the prompt, the new tokens, and a draft checked past the last one."""
    need = prompt_tokens + max_new_tokens + PLD_TOKENS + 1
    return -(-need // 256) * 256  # whole 256-position blocks, as llama.cpp pads its context


def generate(llm, prompt_ids: list[int], max_new_tokens: int, eos_ids) -> tuple[list[int], int, float, float]:
    """Greedy decoding of `prompt_ids` on a model from `load`: (new token ids, forward passes,
    prefill seconds, decode seconds). Stops after an EOS id (kept, as transformers and the engine keep
    it) or `max_new_tokens` tokens."""
    eos = set(eos_ids)
    llm.reset()  # no reuse of the previous prompt's KV cache: every sample pays its whole prefill
    llm.forwards = 0
    out: list[int] = []
    t0 = time.perf_counter()
    first = None
    tokens = llm.generate(prompt_ids, temp=0.0, top_k=1, repeat_penalty=1.0, reset=True)
    try:
        for tok in tokens if max_new_tokens > 0 else ():
            if first is None:
                first = time.perf_counter()
            out.append(int(tok))
            if tok in eos or len(out) >= max_new_tokens:
                break
    finally:
        tokens.close()
    t1 = time.perf_counter()
    first = first or t1
    return out, llm.forwards, first - t0, t1 - first
