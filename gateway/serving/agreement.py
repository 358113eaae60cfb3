"""Local agreement: which words of a live transcription are settled while the speaker is still talking.

Whisper hears the open audio again on every pass and may still revise its last words. A word that two
consecutive passes agree on — the same text, in the same order, right after what is already settled —
is committed: it goes into the final result as it is, and its audio is not transcribed again. At the end
of speech only the audio after the last committed word (the *boundary*) is left to transcribe.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from backends.types import TranscriptWord

__all__ = ["Agreement", "normal", "sentence_case", "words_after"]

_NOT_WORD = re.compile(r"[^\w']+")
SAME_WORD_SECONDS = 0.25
"""Two passes place the same word this close to each other."""
REHEARD_SECONDS = 0.15
"""A first new word that repeats the last committed one and starts within this of the boundary is that
word heard again (its end came out early), not a new one."""


def normal(word: str) -> str:
    """A word as passes are compared: lower case, without punctuation or spaces."""
    return _NOT_WORD.sub("", word.lower())


def sentence_case(words: Sequence[TranscriptWord]) -> tuple[TranscriptWord, ...]:
    """The words with a capital at the start and after each sentence's end: passes that start or stop
    inside a sentence write its words in lower case, or end them with a full stop."""
    out: list[TranscriptWord] = []
    starts = True
    for w in words:
        text = w.word
        lead = len(text) - len(text.lstrip())
        if starts and text[lead:lead + 1].islower():
            text = text[:lead] + text[lead].upper() + text[lead + 1:]
            w = TranscriptWord(word=text, start=w.start, end=w.end, probability=w.probability)
        out.append(w)
        starts = text.rstrip().endswith((".", "?", "!"))
    return tuple(out)


def words_after(committed: Sequence[TranscriptWord], boundary: float,
                words: Sequence[TranscriptWord]) -> list[TranscriptWord]:
    """The words of a pass that lie after ``boundary``, the end of the ``committed`` ones (a pass hears
    some audio before it, and may hear the last committed word again)."""
    fresh = [w for w in words if (w.start + w.end) / 2 >= boundary and normal(w.word)]
    if (fresh and committed and normal(fresh[0].word) == normal(committed[-1].word)
            and fresh[0].start < boundary + REHEARD_SECONDS):
        fresh = fresh[1:]
    return fresh


class Agreement:
    """The committed words of one open window and the last pass's unsettled rest."""

    def __init__(self, boundary: float = 0.0) -> None:
        self.committed: list[TranscriptWord] = []
        self.boundary = boundary
        """Seconds into the stream: the audio before it is covered by the committed words."""
        self._previous: list[TranscriptWord] = []

    def reset(self, boundary: float) -> None:
        """A new window from ``boundary``: nothing committed."""
        self.committed = []
        self.boundary = boundary
        self._previous = []

    def offer(self, words: Sequence[TranscriptWord]) -> list[TranscriptWord]:
        """A pass's words; the ones it agrees on with the previous pass are committed and returned."""
        self._refine(words)
        fresh = words_after(self.committed, self.boundary, words)
        if not fresh:
            return []  # a pass that heard nothing new says nothing of the last one's words
        previous = [w for w in self._previous if (w.start + w.end) / 2 >= self.boundary]
        agreed = 0
        while (agreed < len(fresh) and agreed < len(previous)
               and normal(fresh[agreed].word) == normal(previous[agreed].word)):
            agreed += 1
        settled = fresh[:agreed]
        if settled:
            self.committed.extend(settled)
            self.boundary = settled[-1].end
        self._previous = fresh[agreed:]
        return settled

    def _refine(self, words: Sequence[TranscriptWord]) -> None:
        """Write committed words as a pass that heard them again, with words after them, writes them.

        A pass whose audio stops after a word often ends it with a full stop, or begins a sentence in lower
        case; one that hears more knows better. Only the writing changes (case, punctuation): a committed
        word stays the same word at the same time."""
        heard = words[:-1]
        for i, c in enumerate(self.committed):
            key = normal(c.word)
            again = next((w for w in heard if abs(w.start - c.start) < SAME_WORD_SECONDS and normal(w.word) == key),
                         None)
            if again is not None and again.word != c.word:
                self.committed[i] = TranscriptWord(word=again.word, start=c.start, end=c.end,
                                                   probability=c.probability)

    @property
    def said(self) -> list[TranscriptWord]:
        """The committed words and the last pass's others: the best guess at what the window holds."""
        return [*self.committed, *self._previous]

    def hypothesis(self, words: Sequence[TranscriptWord]) -> list[TranscriptWord]:
        """What the window says given a pass's words: the committed ones, then the pass's new ones."""
        return [*self.committed, *words_after(self.committed, self.boundary, words)]

    def ending(self, tail: Sequence[TranscriptWord]) -> list[TranscriptWord]:
        """What the window says when a tail pass (one that heard all its speech) ends it: the committed
        words and the tail's new ones; a tail that heard nothing new leaves the last pass's words standing."""
        return [*self.committed, *(words_after(self.committed, self.boundary, tail) or self._previous)]
