"""MicroBatcher on its own: windows, batch limits, beam groups, give-ups and failures."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from PIL import Image

from captioner.serving.batcher import BatcherClosedError, MicroBatcher, QueueFullError


def picture(value: int) -> Image.Image:
    return Image.new("RGB", (4, 4), (value, 0, 0))


class Recorder:
    def __init__(self, delay_s: float = 0.0) -> None:
        self.calls: list[tuple[list[int], int, str]] = []
        self.delay_s = delay_s
        self.gate = threading.Event()
        self.gate.set()

    def __call__(self, images, beam_size):
        self.calls.append(([image.getpixel((0, 0))[0] for image in images], beam_size, threading.current_thread().name))
        self.gate.wait(10)
        time.sleep(self.delay_s)
        return [f"{image.getpixel((0, 0))[0]}@{beam_size}" for image in images]


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, 30))


def test_requests_in_one_window_share_a_pass_off_the_event_loop_in_order():
    model = Recorder()

    async def scenario():
        batcher = MicroBatcher(model, max_batch=8, window_s=0.2, max_queue=8)
        await batcher.start()
        results = await asyncio.gather(*(batcher.submit(picture(i), 3) for i in range(5)))
        await batcher.stop()
        return results

    assert run(scenario()) == [f"{i}@3" for i in range(5)]
    assert [call[0] for call in model.calls] == [[0, 1, 2, 3, 4]]
    assert model.calls[0][2].startswith("captioner-model")


def test_batches_hold_at_most_max_batch_and_beam_sizes_run_apart():
    model = Recorder()

    async def scenario():
        batcher = MicroBatcher(model, max_batch=3, window_s=0.2, max_queue=16)
        await batcher.start()
        jobs = [batcher.submit(picture(i), 1 if i % 2 else 3) for i in range(7)]
        results = await asyncio.gather(*jobs)
        await batcher.stop()
        return results

    results = run(scenario())
    assert results == [f"{i}@{1 if i % 2 else 3}" for i in range(7)]
    assert all(len(images) <= 3 for images, _, _ in model.calls)
    assert all({beam} == {1 if i % 2 else 3 for i in images} for images, beam, _ in model.calls)
    assert sorted(i for images, _, _ in model.calls for i in images) == list(range(7))


def test_a_full_line_refuses_at_once_and_given_up_requests_never_reach_the_model():
    model = Recorder()
    model.gate.clear()

    async def scenario():
        batcher = MicroBatcher(model, max_batch=1, window_s=0, max_queue=2)
        await batcher.start()
        first = asyncio.create_task(batcher.submit(picture(1), 3))
        while not model.calls:  # the first request is in the model
            await asyncio.sleep(0.01)
        second = asyncio.create_task(batcher.submit(picture(2), 3))
        third = asyncio.create_task(batcher.submit(picture(3), 3))
        await asyncio.sleep(0.05)
        with pytest.raises(QueueFullError):
            await batcher.submit(picture(4), 3)
        second.cancel()  # its client went away while it waited
        await asyncio.sleep(0.01)
        assert batcher.queue_length == 1
        fifth = asyncio.create_task(batcher.submit(picture(5), 3))  # the freed place is usable
        model.gate.set()
        results = await asyncio.gather(first, third, fifth)
        stats = batcher.stats.to_dict()
        await batcher.stop()
        return results, stats

    results, stats = run(scenario())
    assert results == ["1@3", "3@3", "5@3"]
    assert [call[0] for call in model.calls] == [[1], [3], [5]]
    assert stats["rejected"] == 1 and stats["dropped"] == 1


def test_a_failing_pass_fails_its_requests_and_the_loop_carries_on():
    calls = []

    def flaky(images, beam_size):
        calls.append(len(images))
        if len(calls) == 1:
            raise RuntimeError("boom")
        return ["ok"] * len(images)

    async def scenario():
        batcher = MicroBatcher(flaky, max_batch=4, window_s=0, max_queue=4)
        await batcher.start()
        with pytest.raises(RuntimeError, match="boom"):
            await batcher.submit(picture(1), 3)
        result = await batcher.submit(picture(2), 3)
        failed = batcher.stats.failed_batches
        await batcher.stop()
        return result, failed

    assert run(scenario()) == ("ok", 1)


def test_a_stopped_batcher_refuses_and_fails_waiting_requests():
    model = Recorder()
    model.gate.clear()

    async def scenario():
        batcher = MicroBatcher(model, max_batch=1, window_s=0, max_queue=4)
        with pytest.raises(BatcherClosedError):
            await batcher.submit(picture(0), 3)
        await batcher.start()
        first = asyncio.create_task(batcher.submit(picture(1), 3))
        while not model.calls:
            await asyncio.sleep(0.01)
        waiting = asyncio.create_task(batcher.submit(picture(2), 3))
        await asyncio.sleep(0.02)
        threading.Timer(0.1, model.gate.set).start()
        await batcher.stop()
        outcomes = await asyncio.gather(first, waiting, return_exceptions=True)
        return outcomes

    first, waiting = run(scenario())
    assert isinstance(first, BatcherClosedError) or first == "1@3"
    assert isinstance(waiting, BatcherClosedError)
