"""Dynamic batching: concurrent requests share forward passes, behind a bounded queue.

One worker thread owns the model. It takes the oldest waiting image, then waits up to
``max_wait_s`` for more, up to ``max_batch``; images of one size go through the model
together. When ``max_queue`` images are already waiting, ``submit`` refuses at once
(``QueueFull``, which the HTTP layer turns into 503 with Retry-After), so load never grows
the queue without bound.
"""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Callable

import torch


class QueueFull(Exception):
    """The batcher already holds ``max_queue`` waiting images."""


@dataclass
class _Job:
    image: torch.Tensor
    future: Future
    arrived: float


class DynamicBatcher:
    """``submit(image) -> Future`` of ``run_batch([images])[i]`` plus timings.

    ``run_batch`` takes equally sized uint8 ``(3, H, W)`` images and returns one result per
    image. Each future's value is ``(result, {"queue_ms", "inference_ms", "batch_size"})``.
    """

    def __init__(self, run_batch: Callable[[list[torch.Tensor]], list[Any]], max_batch: int = 8,
                 max_wait_s: float = 0.01, max_queue: int = 32) -> None:
        if max_batch < 1 or max_queue < 1 or max_wait_s < 0:
            raise ValueError("max_batch and max_queue must be at least 1 and max_wait_s at least 0")
        self.run_batch, self.max_batch, self.max_wait_s = run_batch, max_batch, max_wait_s
        self._queue: queue.Queue[_Job | None] = queue.Queue(maxsize=max_queue)
        self.batches_run = 0
        self._worker = threading.Thread(target=self._loop, name="segnet-batcher", daemon=True)
        self._worker.start()

    @property
    def waiting(self) -> int:
        return self._queue.qsize()

    def submit(self, image: torch.Tensor) -> Future:
        future: Future = Future()
        try:
            self._queue.put_nowait(_Job(image, future, time.perf_counter()))
        except queue.Full:
            raise QueueFull(f"{self._queue.maxsize} images are already waiting") from None
        return future

    def close(self, timeout: float = 5.0) -> None:
        """Stop the worker after the images already queued."""
        self._queue.put(None)
        self._worker.join(timeout)

    def _loop(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            jobs, deadline, stop = [job], time.perf_counter() + self.max_wait_s, False
            while len(jobs) < self.max_batch:
                try:
                    more = self._queue.get(timeout=max(deadline - time.perf_counter(), 0))
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                jobs.append(more)
            by_size: dict[tuple, list[_Job]] = {}
            for job in jobs:
                by_size.setdefault(tuple(job.image.shape), []).append(job)
            for group in by_size.values():
                self._run(group)
            if stop:
                return

    def _run(self, group: list[_Job]) -> None:
        start = time.perf_counter()
        try:
            results = self.run_batch([job.image for job in group])
        except Exception as error:  # the requests fail, the server goes on
            for job in group:
                job.future.set_exception(error)
            return
        seconds = time.perf_counter() - start
        self.batches_run += 1
        for job, result in zip(group, results):
            job.future.set_result((result, {"queue_ms": (start - job.arrived) * 1000, "inference_ms": seconds * 1000,
                                            "batch_size": len(group)}))
