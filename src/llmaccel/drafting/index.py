"""Longest-match indexes that draft tokens for lossless "inference with reference".

LLMA (Yang et al., 2023, "Inference with Reference") drafts tokens by finding a
span of the output that also occurs in a reference text and copying what follows
it there; a target-model forward pass then verifies the copied span.  The paper
re-matches n-grams of the output against the references at every step.  This
module instead keeps **suffix automata** (SAMs, automaton.py):

* A SAM over the references is built once, in time linear in their length.
* The matching state of the growing stream (prompt, then generated tokens) is
  advanced in O(1) amortised time per appended token (the classic "matching
  statistics" walk), so nothing is rescanned and no n-gram table is rebuilt per
  step, whatever the reference length.
* A SAM is also built incrementally over the stream itself (O(1) amortised per
  appended token), so the output can copy from the prompt and from itself.
* Every match is the *longest* one, not one of a fixed n-gram size, and each SAM
  state knows how often its strings occur, so a draft follows the most frequent
  continuation across all references.

Positions are 0-based indices of tokens; an occurrence "ends at" the position of
its last token.  Tokens are plain ``int``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

from llmaccel.drafting.automaton import ROOT, State, SuffixAutomaton

__all__ = [
    "State",
    "SuffixAutomaton",
    "ReferenceMatcher",
    "StreamMatcher",
    "Draft",
    "ReferenceIndex",
]


def _most_frequent_path(sam: SuffixAutomaton, state: int, max_tokens: int) -> list[int]:
    """Up to ``max_tokens`` tokens read off ``state`` by always taking the most frequent transition.

    Each transition extends the matched string by one token; the target state holds matched + token,
    so its count is that string's frequency.
    """
    out: list[int] = []
    while len(out) < max_tokens:
        best = sam.best_transition(state)
        if best is None:
            break
        token, state = best
        out.append(token)
    return out


class ReferenceMatcher:
    """Matches a growing token stream against static reference documents.

    After :meth:`feed`, :attr:`match_length` is the length of the longest suffix
    of the stream that occurs in some reference.
    """

    def __init__(self, references: Sequence[Sequence[int]]) -> None:
        self.automaton = SuffixAutomaton(references)
        self.reset()

    def reset(self) -> None:
        """Forget the stream (keeps the automaton)."""
        self.state = ROOT
        self.match_length = 0

    def feed(self, tokens: Iterable[int]) -> None:
        """Append tokens to the stream, updating the longest match (matching statistics)."""
        states = self.automaton.states
        s, length = self.state, self.match_length
        for token in tokens:
            # Drop the oldest tokens of the match until it can be extended.
            while s != ROOT and token not in states[s].next:
                s = states[s].link
                length = states[s].length
            nxt = states[s].next.get(token)
            if nxt is None:  # token absent from all references
                s, length = ROOT, 0
            else:
                s, length = nxt, length + 1
        self.state, self.match_length = s, length

    def draft(self, max_tokens: int, min_match: int) -> tuple[list[int], int]:
        """Draft the most frequent continuation of the current match.

        Returns ``(tokens, match length used)``, or ``([], 0)`` when the match is
        shorter than ``min_match`` (at least 1: an empty match never drafts) or
        nothing follows it.  If the longest match only occurs at document ends,
        it is shortened along suffix links (never below ``min_match``) to one
        that has a continuation.  The matching state is left unchanged.
        """
        min_match = max(1, min_match)
        if max_tokens <= 0 or self.match_length < min_match:
            return [], 0
        sam = self.automaton
        s, length = self.state, self.match_length
        while sam.best_transition(s) is None:
            s = sam.states[s].link
            length = sam.states[s].length
            if length < min_match:
                return [], 0
        return _most_frequent_path(sam, s, max_tokens), length

    def document_of_draft(self, tokens: Sequence[int]) -> int:
        """The number of the first reference document in which the current match continues with
        ``tokens`` (a draft of :meth:`draft`'s), or -1 if none does."""
        if not tokens:
            return -1
        states = self.automaton.states
        s = self.state
        while s != ROOT and tokens[0] not in states[s].next:
            s = states[s].link
        for token in tokens:
            s = states[s].next.get(token, -1)
            if s < 0:
                return -1
        return self.automaton.document_of(states[s].first_end)

    def alternatives(self, max_tokens: int, min_match: int, n: int) -> list[list[int]]:
        """Up to ``n`` continuations of the current match other than :meth:`draft`'s: each starts with
        a less frequent next token (by count) and then follows the most frequent path."""
        min_match = max(1, min_match)
        if n <= 0 or max_tokens <= 0 or self.match_length < min_match:
            return []
        sam = self.automaton
        s = self.state
        while sam.best_transition(s) is None:
            s = sam.states[s].link
            if sam.states[s].length < min_match:
                return []
        states = sam.states
        ranked = sorted(states[s].next.items(), key=lambda kv: (-states[kv[1]].count, states[kv[1]].first_end))
        return [[token] + _most_frequent_path(sam, t, max_tokens - 1) for token, t in ranked[1 : n + 1]]


class StreamMatcher:
    """Suffix automaton built online over the stream itself (prompt, then output).

    :meth:`draft` copies what followed an earlier occurrence of the longest
    repeated suffix of the stream.
    """

    def __init__(self) -> None:
        # A one-document generalised SAM is a plain online SAM; its `_extend`
        # is reused token by token (counts are never needed here).
        self._sam = SuffixAutomaton()
        self._sam.doc_starts.append(0)
        self._last = ROOT

    @property
    def tokens(self) -> list[int]:
        """The stream so far (do not modify)."""
        return self._sam.tokens

    def __len__(self) -> int:
        return len(self._sam.tokens)

    def feed(self, tokens: Iterable[int]) -> None:
        """Append tokens to the stream (O(1) amortised each)."""
        sam = self._sam
        for token in tokens:
            self._last = sam._extend(self._last, token, len(sam.tokens))
            sam.tokens.append(token)

    def match(self) -> tuple[int, int]:
        """``(length, end)`` of the longest suffix that also ends at an earlier position.

        ``end`` is the *first* (earliest) earlier end position.  The suffix
        link of the whole-stream state is the longest suffix with more than one
        end position, and ``first_end`` is fixed when a state is created.  The
        most recent occurrence would need updating every suffix-link ancestor
        of the new state on each token (O(stream) for e.g. a run of one token),
        so it is not O(1) amortised; the earliest one is.  ``(0, -1)`` if none.
        """
        states = self._sam.states
        link = states[self._last].link
        if link <= ROOT:  # empty stream, or only the empty suffix repeats
            return 0, -1
        return states[link].length, states[link].first_end

    def draft(self, max_tokens: int, min_match: int) -> tuple[list[int], int]:
        """Copy up to ``max_tokens`` tokens that followed the earlier occurrence.

        The copy may run past the end of the stream into the tokens it has just
        drafted (an LZ77-style overlapping copy), so a periodic stream keeps
        its period: ``[5, 6, 5, 6]`` drafts ``[5, 6, 5, 6, ...]``.  Returns
        ``([], 0)`` if the repeated suffix is shorter than ``min_match`` (at
        least 1).
        """
        length, end = self.match()
        if max_tokens <= 0 or length < max(1, min_match):
            return [], 0
        stream = self._sam.tokens
        n = len(stream)
        period = n - 1 - end  # >= 1: the occurrence ends before the stream does
        out: list[int] = []
        for i in range(max_tokens):
            j = end + 1 + i  # index into stream + out
            out.append(stream[j] if j < n else out[i - period])
        return out, length


@dataclass(frozen=True)
class Draft:
    """Tokens proposed for verification and where they came from.

    ``source`` is ``"reference"``, ``"stream"`` or ``"none"`` (no draft); ``document`` the number of the
    reference the tokens were copied from (the first that holds them), -1 if not a reference's.
    """

    tokens: tuple[int, ...]
    match_length: int
    source: str
    document: int = -1


class ReferenceIndex:
    """What the decoder uses: reference matching plus stream self-matching (the prompt and output)."""

    def __init__(self, references: Sequence[Sequence[int]]) -> None:
        self.reference_matcher = ReferenceMatcher(references)
        self.stream_matcher = StreamMatcher()
        self._stream_length = 0

    @property
    def stream_length(self) -> int:
        """Number of tokens fed so far."""
        return self._stream_length

    def feed(self, tokens: Iterable[int]) -> None:
        """Append tokens (prompt or accepted output) to the stream."""
        tokens = list(tokens)
        self.reference_matcher.feed(tokens)
        self.stream_matcher.feed(tokens)
        self._stream_length += len(tokens)

    def alternatives(self, max_tokens: int, min_match: int, n: int) -> list[list[int]]:
        """Other continuations than `draft`'s: the other source's draft, then less frequent reference
        continuations (for a draft tree)."""
        ref_tokens, ref_len = self.reference_matcher.draft(max_tokens, min_match)
        str_tokens, str_len = self.stream_matcher.draft(max_tokens, min_match)
        main = ref_tokens if ref_tokens and ref_len >= str_len else str_tokens
        out = [t for t in (ref_tokens, str_tokens) if t and t != main]
        out += self.reference_matcher.alternatives(max_tokens, min_match, n)
        return out[:n]

    def draft(self, max_tokens: int, min_match: int) -> Draft:
        """Draft from whichever source has the longer match (ties: reference)."""
        ref_tokens, ref_len = self.reference_matcher.draft(max_tokens, min_match)
        str_tokens, str_len = self.stream_matcher.draft(max_tokens, min_match)
        if ref_tokens and ref_len >= str_len:
            return Draft(tuple(ref_tokens), ref_len, "reference", self.reference_matcher.document_of_draft(ref_tokens))
        if str_tokens:
            return Draft(tuple(str_tokens), str_len, "stream")
        return Draft((), 0, "none")
