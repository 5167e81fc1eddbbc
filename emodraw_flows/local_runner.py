"""The local engine's task runner: Prefect's thread runner whose one shard thread never holds a process.

Prefect's `ThreadPoolTaskRunner` runs tasks on a `ThreadPoolExecutor`, whose threads Python joins
at exit, and which it shuts down with `wait=True` when the flow leaves it. A shard thread still
labelling when the run is stopped (SIGTERM, Ctrl-C, a cancellation, `watch.Stalled`) would then
hold the flow, or the process at exit, until its shard ended: minutes on a CPU, for ever if stuck,
past the grace period a supervisor or Prefect's runner gives. Here the shards run one after
another on one daemon thread; a normal end joins it, a stop does not wait for it, and it ends with
the process. A shard cut off that way was never published (atomic writes): a rerun labels it.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any

from prefect.task_runners import ThreadPoolTaskRunner


class DaemonExecutor(Executor):
    """Runs submitted calls in order on one daemon thread."""

    def __init__(self, initializer: Callable[[], None] | None = None) -> None:
        self._queue: queue.SimpleQueue[tuple[Future[Any], Callable[..., Any], tuple, dict] | None] = queue.SimpleQueue()
        self._initializer = initializer
        self._closed = False
        self._thread = threading.Thread(target=self._work, name="emodraw-shard", daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        if self._closed:
            raise RuntimeError("cannot schedule new futures after shutdown")
        future: Future[Any] = Future()
        self._queue.put((future, fn, args, kwargs))
        return future

    def _work(self) -> None:
        if self._initializer is not None:
            self._initializer()
        while (item := self._queue.get()) is not None:
            future, fn, args, kwargs = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn(*args, **kwargs))
            except BaseException as exc:  # handed to the waiting flow, as ThreadPoolExecutor does
                future.set_exception(exc)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._closed = True
        if cancel_futures:
            while True:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is not None:
                    item[0].cancel()
        self._queue.put(None)
        if wait and self._thread is not threading.current_thread():
            self._thread.join()


class LocalTaskRunner(ThreadPoolTaskRunner):
    """One shard at a time next to the flow, on a daemon thread that a stop leaves behind."""

    def __init__(self) -> None:
        super().__init__(max_workers=1)

    def duplicate(self) -> LocalTaskRunner:
        return type(self)()

    def __enter__(self) -> LocalTaskRunner:
        super().__enter__()
        if self._executor is not None:  # Prefect's pool has no thread yet: swap it for the daemon one
            self._executor.shutdown(wait=False)
        self._executor = DaemonExecutor(initializer=self._register_worker_thread)  # type: ignore[assignment]
        return self

    def __exit__(self, exc_type: Any, exc_value: Any, traceback: Any) -> None:
        if exc_type is not None and self._executor is not None:  # a stop or an error: do not wait for the shard
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
        super().__exit__(exc_type, exc_value, traceback)
