"""``MicroBatcher``: requests that arrive together share one forward pass, off the event loop.

Owns the bounded waiting line in front of the model and the one thread the model runs on.
A request joins the line (or is refused at once with ``QueueFullError`` when the line is full);
the first request of a batch waits at most ``window_s`` for others, up to ``max_batch``; the
batch then runs on a dedicated single thread, so torch never blocks the event loop and two
forward passes never compete for the same cores. Requests with different settings (beam size,
guidance) in one batch run as one pass per setting. A request that gave up (timed out, client gone) is dropped
before it costs model time. A failing pass fails only the requests in it; the loop never dies.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

logger = logging.getLogger("captioner.serving")

RunBatch = Callable[[Sequence[Image.Image], Any], Sequence[Any]]
"""(pictures, settings) -> one result per picture, in order; called on the model thread. The
settings are whatever the caller submitted with each picture (the app: beam size and guidance);
pictures are only batched with others of equal settings."""


class QueueFullError(Exception):
    """The waiting line is full; the caller should answer 503 and let the client retry."""


class BatcherClosedError(Exception):
    """The server is shutting down (or not started); no more requests are taken."""


@dataclass
class _Job:
    image: Image.Image
    settings: Hashable
    future: asyncio.Future
    enqueued: float


@dataclass
class BatcherStats:
    requests: int = 0
    rejected: int = 0
    dropped: int = 0
    """Requests abandoned by their client before the model reached them."""
    batches: int = 0
    batch_sizes: Counter = field(default_factory=Counter)
    failed_batches: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "rejected": self.rejected,
            "dropped": self.dropped,
            "batches": self.batches,
            "failed_batches": self.failed_batches,
            "largest_batch": max(self.batch_sizes, default=0),
            "mean_batch": (sum(k * v for k, v in self.batch_sizes.items()) / self.batches) if self.batches else 0.0,
        }


class MicroBatcher:
    def __init__(self, run_batch: RunBatch, max_batch: int = 16, window_s: float = 0.01, max_queue: int = 64) -> None:
        if max_batch < 1 or max_queue < 1 or window_s < 0:
            raise ValueError("max_batch and max_queue must be >= 1 and window_s >= 0")
        self._run_batch = run_batch
        self.max_batch = max_batch
        self.window_s = window_s
        self.max_queue = max_queue
        self.stats = BatcherStats()
        self._pending: deque[_Job] = deque()
        self._wakeup: asyncio.Event | None = None
        self._worker: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._closed = True

    @property
    def running(self) -> bool:
        return self._worker is not None and not self._worker.done()

    @property
    def queue_length(self) -> int:
        return sum(1 for job in self._pending if not job.future.done())

    async def start(self) -> None:
        """Start the batching loop on the running event loop (from the app's lifespan)."""
        if self.running:
            return
        self._wakeup = asyncio.Event()
        # One thread: the model is not safe to run twice at once, and a second pass would only
        # steal cores from the first.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="captioner-model")
        self._closed = False
        self._worker = asyncio.create_task(self._loop(), name="captioner-batcher")

    async def stop(self) -> None:
        """Refuse new requests, fail the waiting ones, let the running pass finish."""
        self._closed = True
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
            self._worker = None
        while self._pending:
            job = self._pending.popleft()
            if not job.future.done():
                job.future.set_exception(BatcherClosedError("the server is shutting down"))
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None

    async def submit(self, image: Image.Image, settings: Hashable) -> Any:
        """Caption one picture with the others that arrive now; raises ``QueueFullError`` at once
        when the line is full. Cancelling the awaiting task takes the request out of the line."""
        if self._closed or not self.running:
            raise BatcherClosedError("the captioning worker is not running")
        self._prune()
        if len(self._pending) >= self.max_queue:
            self.stats.rejected += 1
            raise QueueFullError(f"{len(self._pending)} requests are already waiting for the model")
        loop = asyncio.get_running_loop()
        job = _Job(image, settings, loop.create_future(), loop.time())
        self._pending.append(job)
        self.stats.requests += 1
        assert self._wakeup is not None
        self._wakeup.set()
        return await job.future

    def _prune(self) -> None:
        # Jobs whose callers gave up still sit in the line; they must not count against it.
        if any(job.future.done() for job in self._pending):
            kept = [job for job in self._pending if not job.future.done()]
            self.stats.dropped += len(self._pending) - len(kept)
            self._pending = deque(kept)

    async def _next_batch(self) -> list[_Job]:
        assert self._wakeup is not None
        loop = asyncio.get_running_loop()
        while True:
            self._prune()
            while not self._pending:
                self._wakeup.clear()
                await self._wakeup.wait()
                self._prune()
            # The window runs from the oldest request's arrival: under load, requests that came
            # in while the previous pass ran go at once, without a second wait.
            deadline = self._pending[0].enqueued + self.window_s
            while len(self._pending) < self.max_batch:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), remaining)
                except TimeoutError:
                    break
                self._prune()
            batch: list[_Job] = []
            while self._pending and len(batch) < self.max_batch:
                job = self._pending.popleft()
                if job.future.done():
                    self.stats.dropped += 1
                else:
                    batch.append(job)
            if batch:
                return batch

    async def _loop(self) -> None:
        while True:
            try:
                await self._run(await self._next_batch())
            except asyncio.CancelledError:
                raise
            except Exception:  # never reached by design; a dead loop would hang every request
                logger.exception("captioning loop error; carrying on")
                await asyncio.sleep(0.05)

    async def _run(self, batch: list[_Job]) -> None:
        loop = asyncio.get_running_loop()
        by_settings: dict[Hashable, list[_Job]] = {}
        for job in batch:
            by_settings.setdefault(job.settings, []).append(job)
        for settings, jobs in by_settings.items():
            jobs = [job for job in jobs if not job.future.done()]
            if not jobs:
                continue
            self.stats.batches += 1
            self.stats.batch_sizes[len(jobs)] += 1
            started = time.perf_counter()
            try:
                results = await loop.run_in_executor(
                    self._executor, self._run_batch, [job.image for job in jobs], settings
                )
                if len(results) != len(jobs):
                    raise RuntimeError(f"the model gave {len(results)} results for {len(jobs)} pictures")
            except asyncio.CancelledError:
                for job in jobs:
                    if not job.future.done():
                        job.future.set_exception(BatcherClosedError("the server is shutting down"))
                raise
            except Exception as error:  # a bad pass fails its own requests, never the loop
                self.stats.failed_batches += 1
                logger.exception("captioning a batch of %d failed", len(jobs))
                for job in jobs:
                    if not job.future.done():
                        job.future.set_exception(error)
                continue
            logger.debug("batch of %d (%s) in %.0f ms", len(jobs), settings,
                         (time.perf_counter() - started) * 1000)
            for job, result in zip(jobs, results):
                if not job.future.done():
                    job.future.set_result(result)
