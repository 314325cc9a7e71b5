"""Tests for llmaccel.drafting.index: hand cases plus randomised checks against brute force."""

from __future__ import annotations

import random
import time
from collections import Counter

import pytest

from llmaccel.drafting.index import (
    Draft,
    ReferenceIndex,
    ReferenceMatcher,
    StreamMatcher,
    SuffixAutomaton,
)

# --------------------------------------------------------------------------- brute force


def occurrences(docs: list[list[int]], s: list[int]) -> list[tuple[int, int, int]]:
    """All occurrences of ``s`` as ``(global end position, doc number, end offset)``."""
    out, base, k = [], 0, len(s)
    for d, doc in enumerate(docs):
        for end in range(k - 1, len(doc)):
            if doc[end - k + 1 : end + 1] == s:
                out.append((base + end, d, end))
        base += len(doc)
    return out


def brute_longest_match(docs: list[list[int]], stream: list[int]) -> int:
    """Longest suffix of ``stream`` that occurs inside a single document."""
    best = 0
    for k in range(1, len(stream) + 1):
        if occurrences(docs, stream[len(stream) - k :]):
            best = k
        else:
            break  # a suffix that is absent has no longer present extension
    return best


def brute_next_token(docs: list[list[int]], s: list[int]) -> int | None:
    """Most frequent token following ``s`` (ties: earliest end of ``s + token``)."""
    counts: Counter[int] = Counter()
    first: dict[int, int] = {}
    for pos, d, end in occurrences(docs, s):
        if end + 1 < len(docs[d]):
            token = docs[d][end + 1]
            counts[token] += 1
            first.setdefault(token, pos + 1)
    if not counts:
        return None
    return min(counts, key=lambda t: (-counts[t], first[t]))


def brute_reference_draft(
    docs: list[list[int]], stream: list[int], max_tokens: int, min_match: int
) -> tuple[list[int], int]:
    min_match = max(1, min_match)
    longest = brute_longest_match(docs, stream)
    if max_tokens <= 0 or longest < min_match:
        return [], 0
    for k in range(longest, min_match - 1, -1):  # shorten until something follows
        s = stream[len(stream) - k :]
        if brute_next_token(docs, s) is not None:
            break
    else:
        return [], 0
    out: list[int] = []
    while len(out) < max_tokens:
        token = brute_next_token(docs, s + out)
        if token is None:
            break
        out.append(token)
    return out, k


def brute_stream_draft(stream: list[int], max_tokens: int, min_match: int) -> tuple[list[int], int]:
    """Longest suffix that also ends earlier; copy after its earliest earlier occurrence."""
    n = len(stream)
    for k in range(n - 1, 0, -1):
        suffix = stream[n - k :]
        ends = [e for e in range(k - 1, n - 1) if stream[e - k + 1 : e + 1] == suffix]
        if ends:
            break
    else:
        return [], 0
    if max_tokens <= 0 or k < max(1, min_match):
        return [], 0
    ext = list(stream)
    for i in range(max_tokens):
        ext.append(ext[ends[0] + 1 + i])
    return ext[n:], k


def feed_in_chunks(matcher, stream: list[int], rng: random.Random) -> None:
    i = 0
    while i < len(stream):
        j = i + rng.randint(1, 4)
        matcher.feed(iter(stream[i:j]))  # any iterable
        i = j


# --------------------------------------------------------------------------- SuffixAutomaton


def test_add_document_returns_numbers_and_keeps_tokens():
    sam = SuffixAutomaton()
    assert sam.add_document([1, 2, 3]) == 0
    assert sam.add_document([]) == 1
    assert sam.add_document([4, 5]) == 2
    assert sam.num_documents == 3
    assert sam.tokens == [1, 2, 3, 4, 5]
    assert sam.document_of(3) == 2
    assert sam.continuation(0, 10) == [2, 3]  # stops at the document end
    assert sam.continuation(3, 10) == [5]


def test_no_match_across_documents():
    sam = SuffixAutomaton([[1, 2, 3], [4, 5, 6]])
    assert sam.walk([2, 3]) is not None
    assert sam.walk([3, 4]) is None
    assert sam.walk([4, 5, 6]) is not None


@pytest.mark.parametrize("seed", range(30))
def test_counts_and_first_end_match_brute_force(seed):
    rng = random.Random(seed)
    docs = [[rng.randrange(3) for _ in range(rng.randint(0, 12))] for _ in range(rng.randint(1, 4))]
    sam = SuffixAutomaton(docs)
    substrings = {tuple(d[i:j]) for d in docs for i in range(len(d)) for j in range(i + 1, len(d) + 1)}
    for s in substrings:
        state = sam.walk(s)
        assert state is not None
        occ = occurrences(docs, list(s))
        assert sam.count(state) == len(occ)
        assert sam.states[state].first_end == occ[0][0]
    # Every state is reachable only through substrings: the number of strings
    # the states represent equals the number of distinct substrings.
    represented = sum(st.length - sam.states[st.link].length for st in sam.states[1:])
    assert represented == len(substrings)


def test_adding_a_document_after_finalize_recounts():
    sam = SuffixAutomaton([[1, 2]])
    assert sam.count(sam.walk([1, 2])) == 1
    sam.add_document([1, 2, 1, 2])
    assert sam.count(sam.walk([1, 2])) == 3
    assert sam.count(sam.walk([2, 1])) == 1


# --------------------------------------------------------------------------- ReferenceMatcher


def test_reference_exact_draft():
    m = ReferenceMatcher([[10, 11, 12, 13, 14, 15, 16, 17, 18, 19]])
    m.feed([7, 8, 12, 13])
    assert m.match_length == 2
    assert m.draft(3, 2) == ([14, 15, 16], 2)
    assert m.draft(100, 1) == ([14, 15, 16, 17, 18, 19], 2)  # stops at the document end
    assert m.draft(3, 3) == ([], 0)  # min_match respected
    assert m.draft(0, 1) == ([], 0)
    assert m.match_length == 2  # drafting does not move the matching state
    m.feed([99])
    assert m.match_length == 0
    assert m.draft(3, 1) == ([], 0)


def test_reference_matching_statistics_follows_suffix_links():
    m = ReferenceMatcher([[1, 2, 3, 4, 9, 3, 4, 5]])
    m.feed([1, 2, 3, 4])
    assert m.match_length == 4
    m.feed([5])  # "1 2 3 4 5" is absent, "3 4 5" is the longest matching suffix
    assert m.match_length == 3
    m.reset()
    assert m.match_length == 0


def test_reference_document_boundaries():
    m = ReferenceMatcher([[1, 2, 3], [4, 5, 6]])
    m.feed([2, 3])
    # "2 3" only occurs at the end of document 0; the draft must not run into document 1.
    assert m.draft(5, 1) == ([], 0)
    m.feed([4])
    assert m.match_length == 1  # "3 4" spans the two documents: not a match
    assert m.draft(5, 1) == ([5, 6], 1)


def test_reference_shortens_to_a_suffix_with_a_continuation():
    m = ReferenceMatcher([[7, 1, 2, 3], [1, 2, 3, 8, 9]])
    m.feed([7, 1, 2, 3])  # longest match ends document 0; "1 2 3" continues in document 1
    assert m.match_length == 4
    assert m.draft(5, 2) == ([8, 9], 3)
    assert m.draft(5, 4) == ([], 0)


def test_reference_tie_goes_to_first_document():
    m = ReferenceMatcher([[1, 2, 5, 6], [1, 2, 3, 4]])
    m.feed([0, 1, 2])
    assert m.draft(2, 2) == ([5, 6], 2)
    m = ReferenceMatcher([[1, 2, 3, 4], [1, 2, 5, 6]])
    m.feed([0, 1, 2])
    assert m.draft(2, 2) == ([3, 4], 2)


def test_reference_most_frequent_continuation():
    m = ReferenceMatcher([[1, 2, 3], [1, 2, 4], [1, 2, 4]])
    m.feed([9, 9, 1, 2])
    assert m.draft(4, 2) == ([4], 2)


@pytest.mark.parametrize("seed", range(200))
def test_reference_matcher_against_brute_force(seed):
    rng = random.Random(seed)
    alphabet = rng.randint(3, 6)
    docs = [[rng.randrange(alphabet) for _ in range(rng.randint(0, 25))] for _ in range(rng.randint(1, 4))]
    m = ReferenceMatcher(docs)
    stream: list[int] = []
    for _ in range(3):  # draft at several points of a growing stream
        chunk = [rng.randrange(alphabet) for _ in range(rng.randint(1, 10))]
        feed_in_chunks(m, chunk, rng)
        stream += chunk
        assert m.match_length == brute_longest_match(docs, stream)
        max_tokens, min_match = rng.randint(1, 8), rng.randint(1, 3)
        assert m.draft(max_tokens, min_match) == brute_reference_draft(docs, stream, max_tokens, min_match)


# --------------------------------------------------------------------------- StreamMatcher


def test_stream_periodic_copy():
    m = StreamMatcher()
    m.feed([5, 6, 5, 6])
    assert m.draft(3, 1) == ([5, 6, 5], 2)
    assert m.draft(6, 2) == ([5, 6, 5, 6, 5, 6], 2)
    assert m.draft(6, 3) == ([], 0)
    m.feed([5])
    assert m.draft(4, 1) == ([6, 5, 6, 5], 3)
    run = StreamMatcher()
    run.feed([7, 7, 7])
    assert run.draft(3, 1) == ([7, 7, 7], 2)


def test_stream_copies_from_the_prompt():
    m = StreamMatcher()
    m.feed([1, 2, 3, 4, 5, 6, 0, 2, 3])
    assert m.match() == (2, 2)
    assert m.draft(3, 2) == ([4, 5, 6], 2)
    assert m.draft(3, 1) == ([4, 5, 6], 2)
    assert len(m) == 9


def test_stream_empty_and_no_repeat():
    m = StreamMatcher()
    assert m.draft(4, 1) == ([], 0)
    m.feed([1, 2, 3])
    assert m.draft(4, 1) == ([], 0)
    m.feed([1])
    assert m.draft(4, 1) == ([2, 3, 1, 2], 1)
    assert m.draft(0, 1) == ([], 0)


@pytest.mark.parametrize("seed", range(200))
def test_stream_matcher_against_brute_force(seed):
    rng = random.Random(1000 + seed)
    alphabet = rng.randint(2, 5)
    m = StreamMatcher()
    stream: list[int] = []
    for _ in range(3):
        chunk = [rng.randrange(alphabet) for _ in range(rng.randint(1, 12))]
        feed_in_chunks(m, chunk, rng)
        stream += chunk
        max_tokens, min_match = rng.randint(1, 8), rng.randint(1, 3)
        expected = brute_stream_draft(stream, max_tokens, min_match)
        assert m.draft(max_tokens, min_match) == expected
        assert m.match()[0] == brute_stream_draft(stream, 1, 1)[1]


# --------------------------------------------------------------------------- ReferenceIndex


def test_index_picks_longer_match_and_ties_go_to_reference():
    idx = ReferenceIndex([[1, 2, 3, 4, 5]])
    idx.feed([9, 8, 7, 9, 8])
    assert idx.draft(2, 1) == Draft((7, 9), 2, "stream")  # reference has no match
    idx.feed([1, 2])
    assert idx.draft(2, 1) == Draft((3, 4), 2, "reference", 0)
    idx.feed([3, 9, 8, 7])  # stream "9 8 7" (3) beats the reference (no match)
    assert idx.draft(2, 1) == Draft((9, 8), 3, "stream")
    assert idx.stream_length == 11

    tie = ReferenceIndex([[1, 2, 3]])
    tie.feed([1, 2, 5, 1, 2])  # both sources match "1 2"
    assert tie.draft(3, 1) == Draft((3,), 2, "reference", 0)
    two = ReferenceIndex([[1, 2, 3], [4, 1, 2, 6]])
    two.feed([4, 1, 2])  # only the second document holds "4 1 2", and it goes on with 6
    assert two.draft(3, 1) == Draft((6,), 3, "reference", 1)
    assert two.reference_matcher.document_of_draft([3]) == 0  # "1 2 3": the first document
    assert two.reference_matcher.document_of_draft([7]) == -1


def test_index_with_no_match_and_none():
    idx = ReferenceIndex([[1, 2, 3]])
    idx.feed([4, 5, 6, 7])  # no token repeats and none is in the reference
    assert idx.draft(3, 1) == Draft((), 0, "none")
    assert idx.stream_length == 4
    idx.feed([1])
    assert idx.draft(3, 1) == Draft((2, 3), 1, "reference", 0)
    empty = ReferenceIndex([])
    empty.feed([1, 2, 1])
    assert empty.draft(3, 1) == Draft((2, 1, 2), 1, "stream")
    with pytest.raises(AttributeError):
        empty.draft(1, 1).source = "x"  # frozen


def test_build_10_docs_of_1000_tokens():
    rng = random.Random(0)
    docs = [[rng.randrange(50) for _ in range(1000)] for _ in range(10)]
    start = time.perf_counter()
    idx = ReferenceIndex(docs)
    build_s = time.perf_counter() - start
    stream = docs[3][100:140]
    idx.feed(stream)
    d = idx.draft(16, 2)
    assert d.source == "reference" and d.match_length == 40
    assert list(d.tokens) == docs[3][140:156]  # a 40-token match is unique in random text
    print(f"built 10x1000 tokens in {build_s * 1000:.1f} ms")


def test_alternatives_rank_the_other_continuations_by_frequency():
    # after 7: 8 follows three times, 9 twice, 5 once; each alternative then follows its best path
    refs = [[7, 8, 1], [7, 8, 1], [7, 8, 2], [7, 9, 3, 4], [7, 9, 3, 4], [7, 5, 6]]
    m = ReferenceMatcher(refs)
    m.feed([7])
    main, _ = m.draft(3, 1)
    assert main == [8, 1]
    assert m.alternatives(3, 1, 5) == [[9, 3, 4], [5, 6]]
    assert m.alternatives(2, 1, 1) == [[9, 3]]
    assert m.alternatives(3, 2, 5) == []  # the match is shorter than min_match
    index = ReferenceIndex(refs)
    index.feed([7])
    assert index.alternatives(3, 1, 1) == [[9, 3, 4]]
