"""Overlap Parquet reading, tokenization and writing with the forward passes.

Two small tools, both order-preserving and both re-raising a worker's error in the
caller, so a fast path never changes what is written, only when:

- `prefetch(items, depth)` runs an iterator in a background thread, `depth` items ahead
  (read + clean + tokenize the next window while the model runs on this one);
- `SerialWorker` runs jobs one at a time in a background thread (write window k while
  the model runs on window k+1).

Threads, not processes: the Rust tokenizer, Parquet (de)compression and torch kernels
all release the GIL, and a thread shares the loaded model and tokenizer for free.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from emodraw_batch.memory import release_freed_memory

T = TypeVar("T")

_DONE = object()
# How often a blocked producer checks whether the consumer has gone away.
_POLL_S = 0.1


class _Failure:
    """Carries the producer's exception across the queue, to be re-raised in the consumer."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


def prefetch(items: Iterable[T], depth: int = 1) -> Iterator[T]:
    """Yield `items` in order, produced by a background thread up to `depth` items ahead.

    At most `depth` items exist beyond the one the caller holds, counting the one being
    produced: `depth=1` is double buffering (memory: two windows, not three).
    `depth=0` iterates in the caller's thread (no overlap). An exception in the producer
    is raised here, after the items produced before it. Closing the returned generator (or
    leaving a `for` loop early) stops the producer, so no thread outlives its consumer.
    """
    if depth <= 0:
        yield from items
        return
    ready: queue.SimpleQueue[Any] = queue.SimpleQueue()
    room = threading.Semaphore(depth)  # taken before producing an item, given back when it is consumed
    stop = threading.Event()

    def produce() -> None:
        source = iter(items)
        try:
            while True:
                while not room.acquire(timeout=_POLL_S):
                    if stop.is_set():  # the consumer has gone away
                        return
                if stop.is_set():
                    return
                try:
                    item = next(source)
                except StopIteration:
                    ready.put(_DONE)
                    return
                ready.put(item)
                release_freed_memory()
        except BaseException as exc:  # noqa: BLE001 - every error must reach the consumer
            ready.put(_Failure(exc))
        finally:
            close = getattr(source, "close", None)
            if close is not None:  # a generator source releases its open files now, not at GC
                close()

    worker = threading.Thread(target=produce, name="emodraw-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            item = ready.get()
            if item is _DONE:
                return
            if isinstance(item, _Failure):
                raise item.error
            room.release()
            yield item
    finally:
        stop.set()
        worker.join()


def _then_release(job: Callable[..., Any], *args: Any) -> Any:
    try:
        return job(*args)
    finally:
        release_freed_memory()  # in the worker's thread, whose heap the job filled


class SerialWorker:
    """Run jobs in submission order on one background thread, at most one job in flight.

    `submit` first waits for the previous job (re-raising its error), so memory holds at
    most one pending job and a failure surfaces at the next submit or at `close`.
    With `enabled=False` jobs run at once in the caller's thread.
    """

    def __init__(self, enabled: bool = True) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="emodraw-writer") if enabled else None
        self._pending: Future[Any] | None = None

    def submit(self, job: Callable[..., Any], *args: Any) -> None:
        self.wait()
        if self._pool is None:
            job(*args)
        else:
            self._pending = self._pool.submit(_then_release, job, *args)

    def wait(self) -> None:
        """Block until the job in flight (if any) is done; raise its error."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def close(self) -> None:
        try:
            self.wait()
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True)

    def __enter__(self) -> SerialWorker:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close()
            return
        # Already failing: let the job in flight finish (it may touch the writer being closed),
        # but keep the original error rather than a second one from that job.
        try:
            self.close()
        except Exception:  # noqa: BLE001
            pass
