"""Background responses, cancellation, what a stopped server leaves, leases, and ``truncation: auto``.

The official ``openai`` SDK against a real gateway on a real socket: a background response returns at
once and is polled (or followed by id) to its end; a cancelled one stops and gives its model back; one a
stopped server left unfinished is never found still running after a restart; a streamed response whose
client leaves gives its slot back; ``truncation: "auto"`` drops the oldest turns of a chain that outgrew
the context, where the default refuses it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from conftest import Gateway, base_config, smollm_models
from hostile import active_counts, wait_idle
from openai import OpenAI

MODEL = "gpt-4o-mini"
N_CTX = 512
OPTIONS = f"{{n_ctx: {N_CTX}, n_threads: 1, parallel: 1}}"
"""One slot, so a second response waits for the first; one thread: on a loaded test machine, threads that
wait on each other make generation crawl."""
SHORT: dict[str, Any] = {"model": MODEL, "input": "Say hello.", "temperature": 0, "max_output_tokens": 16}
LONG: dict[str, Any] = {"model": MODEL, "temperature": 0, "max_output_tokens": 400,
                        "input": "Write a very long story about a dragon and a knight, with many chapters."}
"""At temperature 0 SmolLM2 tells this story past 400 tokens: seconds of generation, on any machine."""
UNFINISHED = ("queued", "in_progress")
ENDED = ("completed", "incomplete")


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """SmolLM2 alone, with a small context (for the truncation tests)."""
    running = Gateway(tmp_path_factory.mktemp("responses-bg"),
                      base_config(models=smollm_models(OPTIONS))).start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def sdk(gw: Gateway) -> OpenAI:
    return gw.openai()


def _settled(client: OpenAI, response_id: str, timeout: float = 180.0) -> Any:
    """The response once it is no longer queued or in progress (polled like a client would)."""
    deadline = time.monotonic() + timeout
    response = client.responses.retrieve(response_id)
    while response.status in UNFINISHED and time.monotonic() < deadline:
        time.sleep(0.1)
        response = client.responses.retrieve(response_id)
    return response


def _idle(gw: Gateway) -> int:
    """The model's ``active`` count, once it is 0 or 30 s have passed."""
    return wait_idle(gw.url, timeout=30)["smollm2"]


def _still_serves(client: OpenAI) -> None:
    r = client.responses.create(**SHORT)
    assert r.status in ENDED and r.output_text and r.usage is not None and r.usage.output_tokens > 0


# -- background responses ---------------------------------------------------------------------------------


def test_a_background_response_returns_at_once_and_is_polled_to_its_end(sdk: OpenAI) -> None:
    created = sdk.responses.create(**SHORT, background=True)
    assert created.status in UNFINISHED, created
    assert created.background is True
    assert created.output == [] and created.usage is None
    assert created.id.startswith("resp_")

    done = _settled(sdk, created.id)
    assert done.id == created.id
    assert done.status in ENDED, done
    assert done.background is True
    assert done.output_text.strip()
    assert done.usage is not None and done.usage.input_tokens > 0 and 0 < done.usage.output_tokens <= 16
    assert done.usage.total_tokens == done.usage.input_tokens + done.usage.output_tokens
    items = sdk.responses.input_items.list(created.id).data
    assert [i.type for i in items] == ["message"]

    follow_up = sdk.responses.create(**{**SHORT, "input": "Again."}, background=True, previous_response_id=done.id)
    assert follow_up.status in UNFINISHED and follow_up.previous_response_id == done.id
    continued = _settled(sdk, follow_up.id)
    assert continued.status in ENDED and continued.usage is not None
    assert continued.usage.input_tokens > done.usage.total_tokens  # the first turn is in its prompt


def test_a_background_stream_then_a_replay_after_a_sequence_number(sdk: OpenAI) -> None:
    with sdk.responses.create(**SHORT, background=True, stream=True) as stream:
        events = list(stream)
    kinds = [e.type for e in events]
    assert kinds[0] == "response.created" and kinds[-1] in ("response.completed", "response.incomplete"), kinds
    assert "response.output_text.delta" in kinds
    numbers = [e.sequence_number for e in events]
    assert numbers == list(range(len(events)))
    response_id = events[0].response.id
    assert events[0].response.background is True
    final = events[-1].response
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == final.output_text and deltas.strip()

    after = numbers[len(numbers) // 2]
    with sdk.responses.retrieve(response_id, stream=True, starting_after=after) as replay:
        replayed = list(replay)
    assert [e.sequence_number for e in replayed] == [n for n in numbers if n > after]
    assert [e.type for e in replayed] == kinds[after + 1:]
    with sdk.responses.retrieve(response_id, stream=True) as replay:
        assert [e.type for e in replay] == kinds  # the whole run, from its first event
    assert sdk.responses.retrieve(response_id).status == final.status


def test_a_follower_that_leaves_does_not_stop_the_background_response(sdk: OpenAI, gw: Gateway) -> None:
    created = sdk.responses.create(**{**LONG, "max_output_tokens": 120}, background=True)
    with sdk.responses.retrieve(created.id, stream=True) as follow:
        seen = 0
        for event in follow:
            seen += event.type == "response.output_text.delta"
            if seen == 3:
                break
    assert seen == 3
    done = _settled(sdk, created.id)
    assert done.status in ENDED, done  # not cancelled: the follower was only watching
    assert done.usage is not None and done.usage.output_tokens > 3
    assert _idle(gw) == 0


def test_cancel_stops_a_running_background_response_and_gives_its_model_back(sdk: OpenAI, gw: Gateway) -> None:
    created = sdk.responses.create(**LONG, background=True)
    assert created.status in UNFINISHED
    assert active_counts(gw.url)["smollm2"] == 1  # the run holds the model
    with pytest.raises(openai.BadRequestError) as unfinished:  # nothing continues a response still running
        sdk.responses.create(**SHORT, previous_response_id=created.id)
    assert unfinished.value.param == "previous_response_id"
    cancelled = sdk.responses.cancel(created.id)
    assert cancelled.id == created.id
    assert cancelled.status == "cancelled", cancelled
    assert sdk.responses.retrieve(created.id).status == "cancelled"
    assert _idle(gw) == 0
    with sdk.responses.retrieve(created.id, stream=True) as replay:
        events = list(replay)
    kinds = [e.type for e in events]
    assert kinds[0] == "response.created" and "response.completed" not in kinds, kinds
    last = events[-1]  # the terminal event clients wait for, saying it was cancelled
    assert last.type == "response.incomplete" and last.response.status == "cancelled", last
    assert kinds.count("response.incomplete") == 1
    assert sdk.responses.cancel(created.id).status == "cancelled"  # cancelling again changes nothing
    _still_serves(sdk)


def test_a_background_response_is_queued_at_once_while_the_model_is_busy(sdk: OpenAI, gw: Gateway) -> None:
    running = sdk.responses.create(**LONG, background=True)  # the model's one slot
    try:
        waiting = sdk.with_options(timeout=8).responses.create(**SHORT, background=True)
        assert sdk.responses.retrieve(running.id).status in UNFINISHED, "the first ended first: no proof"
        assert waiting.status == "queued"
        assert active_counts(gw.url)["smollm2"] == 1
        assert sdk.responses.cancel(waiting.id).status == "cancelled"  # cancelled while it waits
        assert sdk.responses.retrieve(running.id).status in UNFINISHED  # the other one runs on
    finally:
        sdk.responses.cancel(running.id)
        assert _idle(gw) == 0  # whatever waited got its turn and gave it back
    with sdk.responses.retrieve(waiting.id, stream=True) as replay:
        kinds: list[str] = [e.type for e in replay]
    assert "response.output_text.delta" not in kinds and kinds[-1] == "response.incomplete", kinds
    _still_serves(sdk)


def test_deleting_a_running_background_response_stops_it(sdk: OpenAI, gw: Gateway) -> None:
    created = sdk.responses.create(**LONG, background=True)
    sdk.responses.delete(created.id)
    assert _idle(gw) == 0
    with pytest.raises(openai.NotFoundError):
        sdk.responses.retrieve(created.id)
    _still_serves(sdk)


def test_cancel_refuses_what_is_not_a_background_response(sdk: OpenAI) -> None:
    stored = sdk.responses.create(**SHORT)
    with pytest.raises(openai.BadRequestError) as refused:
        sdk.responses.cancel(stored.id)
    assert refused.value.status_code == 400
    assert sdk.responses.retrieve(stored.id).status == stored.status  # untouched

    unknown = "resp_" + "0" * 48
    for call in (sdk.responses.cancel, sdk.responses.retrieve, sdk.responses.delete):
        with pytest.raises(openai.NotFoundError) as missing:
            call(unknown)
        assert missing.value.status_code == 404
    unstored = sdk.responses.create(**SHORT, store=False)
    with pytest.raises(openai.NotFoundError):
        sdk.responses.retrieve(unstored.id)
    with pytest.raises(openai.NotFoundError):
        sdk.responses.cancel(unstored.id)
    with pytest.raises(openai.BadRequestError):  # only background responses can be followed by id
        list(sdk.responses.retrieve(stored.id, stream=True))
    with pytest.raises(openai.BadRequestError):  # background responses are stored ones
        sdk.responses.create(**SHORT, background=True, store=False)


# -- a stopped server ----------------------------------------------------------------------------------------


def test_a_background_response_left_unfinished_by_a_stopped_server_is_not_running_after_a_restart(
        tmp_path: Path) -> None:
    gw = Gateway(tmp_path, base_config(models=smollm_models(OPTIONS))).start()
    try:
        client = gw.openai()
        finished = client.responses.create(**SHORT)
        stopped = client.responses.create(**LONG, background=True)
        assert stopped.status in UNFINISHED
        gw.stop()  # SIGTERM: the server shuts down and settles what it ran
        assert gw.process is not None and gw.process.returncode is not None
        gw.start()
        after_stop = client.responses.retrieve(stopped.id)
        assert after_stop.status in ("cancelled", "failed"), after_stop
        with pytest.raises(openai.BadRequestError):  # its events went with the old process
            list(client.responses.retrieve(stopped.id, stream=True))

        killed = client.responses.create(**LONG, background=True)
        assert killed.status in UNFINISHED
        assert gw.process is not None
        gw.process.kill()  # SIGKILL: nothing settles it; the next start must
        gw.process.wait(timeout=30)
        gw.start()
        after_kill = client.responses.retrieve(killed.id)
        assert after_kill.status == "failed", after_kill
        assert after_kill.error is not None and after_kill.error.message
        assert client.responses.retrieve(stopped.id).status == after_stop.status
        kept = client.responses.retrieve(finished.id)  # what had finished is kept as it was
        assert kept.status == finished.status and kept.output_text == finished.output_text
        continued = client.responses.create(**SHORT, previous_response_id=finished.id)
        assert continued.usage is not None and finished.usage is not None
        assert continued.usage.input_tokens > finished.usage.total_tokens
        _still_serves(client)
    finally:
        gw.stop()


# -- leases -----------------------------------------------------------------------------------------------------


def test_a_streamed_response_whose_client_leaves_gives_its_slot_back(sdk: OpenAI, gw: Gateway) -> None:
    for _ in range(3):  # more times than the model has slots: a leak per leave would block the next
        with sdk.responses.create(**LONG, stream=True) as stream:
            deltas = 0
            for event in stream:
                deltas += event.type == "response.output_text.delta"
                if deltas == 3:
                    break
        assert deltas == 3
        assert _idle(gw) == 0
    _still_serves(sdk)


# -- truncation -------------------------------------------------------------------------------------------------


def _notes(topic: str) -> str:
    """About 200 tokens: two turns of these (and their answers) fit the 512-token context, three do not."""
    notes = " ".join(f"Note {i}: the {topic} was seen on day {i} near the river." for i in range(1, 12))
    return f"Here are my notes about {topic}. {notes} Summarize them in one line."


def test_truncation_auto_drops_the_oldest_turns_where_the_default_refuses(sdk: OpenAI) -> None:
    asked: dict[str, Any] = {"model": MODEL, "temperature": 0, "max_output_tokens": 16}
    previous: dict[str, Any] = {}
    for turn, topic in enumerate(["apples", "boats", "clouds", "dogs"]):
        chained = {**asked, "input": _notes(topic), **previous}
        if turn < 2:  # the whole conversation fits: truncation or not, the same answer
            plain = sdk.responses.create(**chained)
            assert plain.usage is not None and plain.usage.input_tokens + 16 <= N_CTX
        else:  # it does not: refused, unless truncation is "auto"
            with pytest.raises(openai.BadRequestError) as refused:
                sdk.responses.create(**chained)
            assert refused.value.status_code == 400 and refused.value.code == "context_length_exceeded"
            assert refused.value.param == "input"
        truncated = sdk.responses.create(**chained, truncation="auto")
        assert truncated.status in ENDED, truncated
        assert truncated.truncation == "auto"
        assert truncated.usage is not None and truncated.usage.input_tokens + 16 <= N_CTX, truncated.usage
        assert truncated.output_text.strip()
        if turn < 2:
            assert plain.usage is not None and truncated.usage.input_tokens == plain.usage.input_tokens
        else:  # only the oldest turns went: the one before this is still in its prompt
            assert truncated.usage.input_tokens > N_CTX // 2, truncated.usage
        previous = {"previous_response_id": truncated.id}
    with sdk.responses.create(**chained, truncation="auto", stream=True) as stream:  # streamed: the same
        last = list(stream)[-1]
    assert last.type in ("response.completed", "response.incomplete"), last
    assert last.response.usage is not None and last.response.usage.input_tokens + 16 <= N_CTX
    # What is left after truncation is the newest turn at least: an input too long by itself is still a 400.
    with pytest.raises(openai.BadRequestError) as too_long:
        sdk.responses.create(**asked, input=" ".join(_notes(t) for t in ("eggs", "figs", "goats")),
                             truncation="auto")
    assert too_long.value.code == "context_length_exceeded"
