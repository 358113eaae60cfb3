"""The streaming helpers engines share: stop strings cut exactly, and the outbox merging by its clock
(a clock the test steps by hand, so nothing here depends on how fast the machine is)."""

from __future__ import annotations

import asyncio
from typing import Any

from backends.streaming import Outbox, TextAssembler, merge_chunks
from backends.types import GenerationChunk, TokenLogprob


def test_stop_strings_are_held_back_until_known_and_never_sent() -> None:
    text = TextAssembler(("END", "\n\n"))
    assert text.push(b"Hello E") == ("Hello ", False)  # "E" might start "END"
    assert text.push(b"Nd") == ("ENd", False)
    assert text.push(b" ok\n") == (" ok", False)
    assert text.push(b"\nmore") == ("", True)


def test_split_utf8_and_a_false_start_come_out_at_the_end() -> None:
    text = TextAssembler(("STOP",))
    euro = "€".encode()
    assert text.push(euro[:2]) == ("", False)
    assert text.push(euro[2:] + b" ST") == ("€ ", False)
    assert text.flush() == "ST"
    assert TextAssembler(()).push(b"STOP") == ("STOP", False)


def _chunk(text: str, index: int = 0, finish: Any = None) -> GenerationChunk:
    logprob = TokenLogprob(token=text, bytes=text.encode(), logprob=-1.0)
    return GenerationChunk(text=text, finish_reason=finish, prompt_tokens=3, completion_tokens=1, index=index,
                           logprobs=(logprob,))


def test_merging_joins_each_choice_and_keeps_other_items_in_place() -> None:
    a: asyncio.Queue[Any] = asyncio.Queue()
    b: asyncio.Queue[Any] = asyncio.Queue()
    end = object()
    merged = merge_chunks([(a, _chunk("x")), (a, _chunk("p", 1)), (b, _chunk("y")), (a, _chunk("z")),
                           (a, end), (a, _chunk("w"))])
    assert [(q is a, getattr(item, "text", item)) for q, item in merged] == [
        (True, "xz"), (True, "p"), (False, "y"), (True, end), (True, "w")]
    assert [t.token for t in merged[0][1].logprobs] == ["x", "z"]


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_outbox_holds_text_for_its_interval_and_sends_it_merged() -> None:
    async def run() -> list[list[str]]:
        loop = asyncio.get_running_loop()
        out: asyncio.Queue[Any] = asyncio.Queue()
        clock = Clock()
        outbox = Outbox(0.150, clock=clock)
        seen: list[list[str]] = []

        async def received() -> None:
            await asyncio.sleep(0)
            got = []
            while not out.empty():
                got.append(out.get_nowait().text)
            seen.append(got)

        outbox.post(loop, out, _chunk("first"), urgent=True)  # a stream's first text is never held
        outbox.flush()
        await received()
        for piece in ("a", "b", "c"):
            clock.now += 0.040
            outbox.post(loop, out, _chunk(piece), urgent=False)
            outbox.flush()
            await received()
        clock.now += 0.040  # 160 ms after the last send
        outbox.post(loop, out, _chunk("d"), urgent=False)
        outbox.flush()
        await received()
        outbox.post(loop, out, _chunk("e", finish="stop"), urgent=True)  # the end is never held
        outbox.flush()
        await received()
        return seen

    assert asyncio.run(run()) == [["first"], [], [], [], ["abcd"], ["e"]]


def test_without_an_interval_every_item_goes_out_as_it_was_posted() -> None:
    async def run() -> list[str]:
        loop = asyncio.get_running_loop()
        out: asyncio.Queue[Any] = asyncio.Queue()
        outbox = Outbox(0, clock=lambda: 0.0)
        for piece in ("a", "b"):
            outbox.post(loop, out, _chunk(piece), urgent=False)
        outbox.flush()
        await asyncio.sleep(0)
        return [out.get_nowait().text for _ in range(out.qsize())]

    assert asyncio.run(run()) == ["a", "b"]
