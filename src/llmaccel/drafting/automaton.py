"""Suffix automata (SAMs) over token ids: the data structure behind the reference index (index.py).

A SAM over a text has one state per class of substrings that share the same set of end positions; it
is built online, O(1) amortised per appended token, and reading a stream through it gives the longest
suffix of the stream that occurs in the text ("matching statistics"). Each state also knows how often
its strings occur, so a draft can follow the most frequent continuation.

Positions are 0-based indices of tokens; an occurrence "ends at" the position of its last token.
Tokens are plain ``int``.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass, field
from typing import Iterable, Sequence

__all__ = ["NO_LINK", "ROOT", "State", "SuffixAutomaton"]

ROOT = 0  # index of the root state (the empty string) in every automaton
NO_LINK = -1  # suffix link of the root


@dataclass(slots=True)
class State:
    """One SAM state: a class of substrings that share the same set of end positions.

    Attributes:
        length: length of the longest string of the state.
        link: suffix link: the state of the longest suffix that has *more* end
            positions (``NO_LINK`` for the root).  The state's strings are
            exactly the lengths ``(states[link].length, length]``.
        next: transitions, token -> state index.
        first_end: smallest (global) end position of an occurrence.
        count: number of end positions (occurrences); only valid after
            :meth:`SuffixAutomaton.finalize`.
    """

    length: int
    link: int = NO_LINK
    next: dict[int, int] = field(default_factory=dict)
    first_end: int = -1
    count: int = 0


def _clone(states: list[State], q: int, length: int) -> int:
    """Append a copy of state ``q`` with a shorter ``length``; return its index.

    The clone takes over the shorter strings of ``q``.  Its end positions are
    those of ``q`` plus the position being added now (the largest so far), so
    it inherits ``first_end``; it owns no end position itself (count 0).
    """
    src = states[q]
    states.append(State(length, src.link, dict(src.next), src.first_end))
    return len(states) - 1


class SuffixAutomaton:
    """Generalised suffix automaton over several token documents.

    It accepts exactly the token strings that occur inside a single document:
    each document is inserted starting again from the root, so no match spans
    two documents.  Positions are global: documents are numbered in insertion
    order and their tokens get consecutive positions, so "smallest end
    position" prefers the first document.

    Occurrence counts are computed lazily: :meth:`finalize` (called
    automatically by the queries that need counts) accumulates them over the
    suffix-link tree, and adding a document afterwards invalidates them.
    """

    def __init__(self, documents: Iterable[Sequence[int]] = ()) -> None:
        self.states: list[State] = [State(0)]
        self.tokens: list[int] = []  # all documents, concatenated (global positions)
        self.doc_starts: list[int] = []  # global position of each document's first token
        self._own: list[int] = [0]  # end positions owned directly by each state
        self._best: list[tuple[int, int] | None] = []  # cached best transition per state
        self._finalized = False
        for doc in documents:
            self.add_document(doc)

    def __len__(self) -> int:
        """Number of states."""
        return len(self.states)

    @property
    def num_documents(self) -> int:
        return len(self.doc_starts)

    def add_document(self, tokens: Sequence[int]) -> int:
        """Insert a document and return its number (0-based)."""
        self.doc_starts.append(len(self.tokens))
        self._finalized = False
        last = ROOT
        for token in tokens:
            last = self._extend(last, token, len(self.tokens))
            self.tokens.append(token)
            self._own[last] += 1  # position belongs to the state of the whole prefix
        return len(self.doc_starts) - 1

    def _extend(self, last: int, token: int, pos: int) -> int:
        """Append ``token`` (at global position ``pos``) after state ``last``.

        Returns the state of the extended prefix.  Standard online SAM
        construction, with the generalised-SAM case where the extended prefix
        already exists (it occurred in an earlier document).
        """
        states, own = self.states, self._own
        q = states[last].next.get(token)
        if q is not None:
            # The prefix + token is already a known string (from an earlier
            # document): reuse its state, or split it if it also holds longer
            # strings, which do not end here.
            if states[q].length == states[last].length + 1:
                return q
            clone = _clone(states, q, states[last].length + 1)
            own.append(0)
            states[q].link = clone
            p = last
            while p != NO_LINK and states[p].next.get(token) == q:
                states[p].next[token] = clone
                p = states[p].link
            return clone

        # A new string: create its state and give the suffixes that lack a
        # transition on `token` one to it.
        cur = len(states)
        states.append(State(states[last].length + 1, first_end=pos))
        own.append(0)
        p = last
        while p != NO_LINK and token not in states[p].next:
            states[p].next[token] = cur
            p = states[p].link
        if p == NO_LINK:
            states[cur].link = ROOT
            return cur
        q = states[p].next[token]
        if states[q].length == states[p].length + 1:
            states[cur].link = q
            return cur
        # q also holds strings longer than suffix + token: split them off.
        clone = _clone(states, q, states[p].length + 1)
        own.append(0)
        while p != NO_LINK and states[p].next.get(token) == q:
            states[p].next[token] = clone
            p = states[p].link
        states[q].link = clone
        states[cur].link = clone
        return cur

    def finalize(self) -> None:
        """Compute occurrence counts and each state's best transition.

        Counts: a state's end positions are its own plus those of the states
        whose suffix link points to it, so sum over states by decreasing
        length (a counting sort gives the topological order).
        """
        if self._finalized:
            return
        states = self.states
        by_length: list[list[int]] = [[] for _ in range(max(s.length for s in states) + 1)]
        for i, s in enumerate(states):
            s.count = self._own[i]
            by_length[s.length].append(i)
        for bucket in reversed(by_length):
            for i in bucket:
                if states[i].link != NO_LINK:
                    states[states[i].link].count += states[i].count
        # The draft walk only depends on the state, so cache its choice:
        # most occurrences first, then the earliest occurrence.
        self._best = [
            min(s.next.items(), key=lambda kv: (-states[kv[1]].count, states[kv[1]].first_end))
            if s.next
            else None
            for s in states
        ]
        self._finalized = True

    def best_transition(self, state: int) -> tuple[int, int] | None:
        """``(token, target)`` of the most frequent continuation of ``state``.

        Ties go to the earliest occurrence (smallest ``first_end`` of the
        target).  ``None`` when the state has no outgoing transition.
        """
        self.finalize()
        return self._best[state]

    def count(self, state: int) -> int:
        """Number of occurrences of the strings of ``state``."""
        self.finalize()
        return self.states[state].count

    def walk(self, tokens: Iterable[int]) -> int | None:
        """State reached by reading ``tokens`` from the root (``None`` if absent)."""
        s = ROOT
        for token in tokens:
            nxt = self.states[s].next.get(token)
            if nxt is None:
                return None
            s = nxt
        return s

    def document_of(self, position: int) -> int:
        """Number of the document containing global ``position``."""
        return bisect_right(self.doc_starts, position) - 1

    def continuation(self, end: int, max_tokens: int) -> list[int]:
        """Up to ``max_tokens`` tokens following global position ``end``, within its document."""
        doc = self.document_of(end)
        doc_end = self.doc_starts[doc + 1] if doc + 1 < len(self.doc_starts) else len(self.tokens)
        return self.tokens[end + 1 : min(doc_end, end + 1 + max(0, max_tokens))]
