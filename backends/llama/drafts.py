"""Prompt-lookup drafts for speculative decoding: the tokens that followed the sequence's latest n-gram
the last time it appeared in its own prompt or output.

Much real traffic repeats its input (an answer quoting a passage, a code edit, a summary, JSON pulled
from a document, a chat re-quoting an earlier turn), and there the next tokens are often a copy of
tokens already seen. The scheduler sends a draft along with the sequence's next token in the same
decode step and keeps the drafted tokens the model itself picks (see
:meth:`backends.llama.scheduler.Scheduler._verify`), so the output is the model's own either way; a draft
only decides how many of its tokens one step yields.

Each n-gram of the history maps to where it last ended, updated as tokens come, so a draft costs a
dictionary lookup per n-gram size, whatever the length of the history. The draft's length follows how
much of the sequence's recent drafts the model kept: it grows while they are kept whole, shrinks to what
was kept when they are not, and drafting pauses for a while after drafts keep failing.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["NGRAMS", "PromptLookup"]

NGRAMS = (4, 3)
"""The n-gram sizes looked up, longest first: a longer match predicts better."""
_START = 3
"""The first draft's most tokens."""
_PAUSE = 8
"""Steps without a draft after one that kept nothing, doubled for each failure in a row (to 8x)."""


class PromptLookup:
    def __init__(self, tokens: Iterable[int], most: int) -> None:
        self.tokens: list[int] = []
        self._ends: dict[tuple[int, ...], int] = {}
        """Each n-gram seen → the index just after its latest occurrence that has a token after it."""
        self.most = most
        self.length = min(_START, most)
        self.drafted = 0
        self.kept = 0
        self._pause = 0
        self._failures = 0
        for token in tokens:
            self.push(token)

    def push(self, token: int) -> None:
        """The sequence's next token: the n-grams ending just before it now have a follower."""
        tokens = self.tokens
        end = len(tokens)
        for n in NGRAMS:
            if end >= n:
                self._ends[tuple(tokens[end - n:end])] = end
        tokens.append(token)

    def draft(self, most: int) -> list[int]:
        """Up to ``most`` tokens that may come next (none when the tail was not seen before, or while paused)."""
        if self._pause > 0:
            self._pause -= 1
            return []
        most = min(most, self.length)
        if most <= 0:
            return []
        tokens = self.tokens
        for n in NGRAMS:
            if len(tokens) < n:
                continue
            start = self._ends.get(tuple(tokens[-n:]))
            if start is not None:
                return tokens[start:start + most]
        return []

    def verified(self, drafted: int, kept: int) -> None:
        """How the model took a draft of ``drafted`` tokens: it kept the first ``kept``."""
        self.drafted += drafted
        self.kept += kept
        if kept == drafted:
            self.length = min(self.most, self.length + 2)
            self._failures = 0
        elif kept == 0:
            self.length = max(1, self.length // 2)
            self._failures += 1
            self._pause = _PAUSE << min(self._failures - 1, 3)
        else:
            self.length = max(1, kept + 1)
            self._failures = 0
