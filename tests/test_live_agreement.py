"""The rules live transcription settles words and ends turns by, without a model."""

from __future__ import annotations

from backends.types import TranscriptWord
from gateway.serving.agreement import Agreement, sentence_case, words_after
from gateway.serving.turns import EndOfTurn, end_of_turn_confidence, ending


def _words(text: str, start: float = 0.0, step: float = 0.4) -> list[TranscriptWord]:
    return [TranscriptWord(word=f" {w}", start=start + i * step, end=start + i * step + step * 0.8, probability=0.9)
            for i, w in enumerate(text.split())]


def test_words_two_passes_agree_on_are_committed_and_the_rest_waits() -> None:
    agreement = Agreement()
    assert agreement.offer(_words("the morning was")) == []  # nothing to agree with yet
    settled = agreement.offer(_words("The morning, was cold"))
    assert [w.word for w in settled] == [" The", " morning,", " was"]  # case and punctuation don't count
    assert agreement.boundary == settled[-1].end
    # The next pass hears from before the boundary: what it says there is not new.
    assert [w.word for w in agreement.offer(_words("the morning was cold and"))] == [" cold"]
    # ... though it writes the committed words it heard again with words after them its own way.
    assert [w.word for w in agreement.committed] == [" the", " morning", " was", " cold"]


def test_a_revised_word_is_not_committed() -> None:
    agreement = Agreement()
    agreement.offer(_words("a small boat"))
    assert [w.word for w in agreement.offer(_words("a small goat moved"))] == [" a", " small"]
    assert [w.word for w in agreement.offer(_words("a small boat moved"))] == []  # disagrees with "goat"
    assert [w.word for w in agreement.offer(_words("a small boat moved across"))] == [" boat", " moved"]


def test_a_committed_word_heard_again_is_dropped_from_the_tail() -> None:
    committed = _words("birds were singing")
    boundary = committed[-1].end
    # The tail's first word is the last committed word again, its end having come out early.
    tail = [TranscriptWord(" singing", boundary - 0.05, boundary + 0.2, 0.9), *_words("in trees", boundary + 0.3)]
    assert [w.word for w in words_after(committed, boundary, tail)] == [" in", " trees"]
    # A word repeated later is a new one.
    repeated = _words("singing loudly", boundary + 0.3)
    assert [w.word for w in words_after(committed, boundary, repeated)] == [" singing", " loudly"]


def test_hypothesis_is_committed_words_then_the_passes_new_ones() -> None:
    agreement = Agreement()
    agreement.offer(_words("one two three"))
    agreement.offer(_words("one two three four"))
    assert [w.word.strip() for w in agreement.hypothesis(_words("one two three four five"))] == [
        "one", "two", "three", "four", "five"]
    agreement.reset(10.0)
    assert agreement.committed == [] and agreement.boundary == 10.0


def test_end_of_turn_comes_sooner_after_a_finished_sentence() -> None:
    assert ending(_words("what time is it?")) == "finished"
    assert ending(_words("I want a table for")) == "unfinished"
    assert ending(_words("well, um")) == "unfinished"
    assert ending(_words("I see")) == "open"
    assert ending([]) == "open"
    finished, open_, unfinished = (end_of_turn_confidence(250, _words(t)) for t in ("ok.", "ok", "and"))
    assert finished > open_ > unfinished > 0
    assert end_of_turn_confidence(10_000, _words("and")) == 1.0
    turn = EndOfTurn(threshold=0.7, eager_threshold=0.4, timeout_ms=3000)
    assert turn.reached(250, _words("What time is it?")) and not turn.reached(250, _words("I want a table for"))
    assert turn.eager(150, _words("ok.")) and not turn.reached(150, _words("ok."))
    assert turn.reached(3000, _words("and"))  # the timeout ends any turn
    assert EndOfTurn(threshold=0.7, timeout_ms=1000).ended_by(1000, _words("and")) == "timeout"
    assert turn.ended_by(250, _words("ok.")) == "words"
    assert turn.ended_by(100, _words("ok.")) is None
    off = EndOfTurn(threshold=1.0, timeout_ms=800)  # 1: the words never end the turn, only the timeout
    assert off.ended_by(700, _words("ok.")) is None and off.ended_by(800, _words("ok.")) == "timeout"
    assert not EndOfTurn().eager(10_000, _words("ok."))  # no eager threshold: never eager


def test_a_later_pass_rewrites_a_committed_words_case_and_punctuation_not_the_word() -> None:
    agreement = Agreement()
    agreement.offer(_words("we walked."))
    agreement.offer(_words("we walked."))  # both passes stopped after "walked": a full stop
    assert [w.word for w in agreement.committed] == [" we", " walked."]
    times = [(w.start, w.end) for w in agreement.committed]
    agreement.offer(_words("We walked down to"))  # heard with the words after it
    assert [w.word for w in agreement.committed[:2]] == [" We", " walked"]
    assert [(w.start, w.end) for w in agreement.committed[:2]] == times
    agreement.offer(_words("we walked down to the"))  # the last word of a pass says nothing of its writing
    assert agreement.committed[0].word == " we"
    before = list(agreement.committed)
    agreement.offer(_words("they walked down to the"))  # another word: not a rewrite
    assert [w.word for w in agreement.committed[:2]] == [w.word for w in before[:2]]


def test_sentence_case() -> None:
    words = [*_words("the boat moved. it was calm? yes"), TranscriptWord(" 2", 9.0, 9.2, 0.9)]
    assert [w.word for w in sentence_case(words)] == [" The", " boat", " moved.", " It", " was", " calm?", " Yes",
                                                      " 2"]
    assert sentence_case(()) == ()
