"""Token ids -> the text a client sees, step by step: stop strings cut out, no half characters."""

from __future__ import annotations

from collections.abc import Callable, Sequence


class TextStream:
    """The answer's text as tokens arrive. `push` returns the text that is now final; text that could
    still turn into a stop string, or that ends in an incomplete UTF-8 character (decoded as U+FFFD),
    is held back until `finish`. The answer ends before the first stop string, which is not part of it
    (OpenAI's rule)."""

    def __init__(self, decode: Callable[[list[int]], str], stop: Sequence[str]) -> None:
        self.decode = decode
        self.stop = [s for s in stop if s]
        self.hold = max((len(s) for s in self.stop), default=1) - 1
        self.ids: list[int] = []
        self.sent = 0  # characters of the text already returned
        self.stopped = False  # a stop string was found: nothing more is returned

    def _cut(self, text: str) -> str:
        at = min((i for i in (text.find(s) for s in self.stop) if i >= 0), default=-1)
        if at >= 0:
            self.stopped = True
            return text[:at]
        return text

    def push(self, tokens: Sequence[int]) -> str:
        if self.stopped:
            return ""
        self.ids += tokens
        text = self._cut(self.decode(self.ids))
        end = len(text) if self.stopped else len(text) - self.hold
        while end > self.sent and text[end - 1] == "\ufffd":
            end -= 1
        if end <= self.sent:
            return ""
        delta, self.sent = text[self.sent:end], end
        return delta

    def finish(self) -> str:
        """The rest of the text (the generation is over)."""
        text = self.text
        delta, self.sent = text[self.sent:], max(self.sent, len(text))
        return delta

    @property
    def text(self) -> str:
        """The whole answer so far, cut at the first stop string."""
        return self._cut(self.decode(self.ids))


def answer_text(decode: Callable[[list[int]], str], stop: Sequence[str], ids: Sequence[int]) -> str:
    """A finished answer's text: `ids` decoded, cut before the first stop string."""
    text = TextStream(decode, stop)
    text.ids = list(ids)
    return text.text
