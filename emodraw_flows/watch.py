"""No wait without a bound: the flow waits for its shards only while the run moves.

Two things end a run that would otherwise wait forever, each with one paragraph:
- `Stalled`: no window of rows was labelled anywhere, and no shard finished, for the stall limit
  (`stall_timeout` seconds per window of 25,000 rows, scaled by `window_rows`; by default a few
  minutes on a GPU, an hour on a CPU, where one window of ALBERT-base takes up to ~15 minutes on
  2 cores). Shards report each labelled window: in this process through the caller's callback, from
  Dask workers as scheduler events (`tasks.PROGRESS_TOPIC`) that this module subscribes to.
- `ClusterLost`: the Dask cluster has had no worker for `workerless_timeout` (60 s) while shards wait
  (its workers died, e.g. unable to import the task, or never joined). Dask itself would wait for
  new workers for ever (`distributed.scheduler.no-workers-timeout` is unset by default).
The finished shards stay in the output either way, and a rerun resumes.
"""

from __future__ import annotations

import math
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from emodraw_batch.errors import EmodrawError
from emodraw_batch.files.reader import Shard

from emodraw_flows.tasks import PROGRESS_TOPIC, OnRows

# Seconds one window of WINDOW_ROWS rows may take before the run counts as stalled, when the
# config sets no stall_timeout: ~1 s on an H200 and up to ~15 min on 2 CPU cores (ALBERT-base).
STALL_DEFAULTS = {"gpu": 300.0, "cpu": 3600.0}
WINDOW_ROWS = 25_000
POLL_SECONDS = 2.0


class Stalled(EmodrawError):
    """Nothing was labelled for the stall limit; the finished shards are kept and a rerun resumes."""


class ClusterLost(EmodrawError):
    """The Dask cluster has had no workers while shards waited; a rerun resumes."""


def stall_limit(stall_timeout: float | None, window_rows: int, gpu: bool) -> float:
    """Seconds without progress that end a run: the per-window limit, scaled by the window's rows."""
    per_window = stall_timeout if stall_timeout is not None else STALL_DEFAULTS["gpu" if gpu else "cpu"]
    return per_window * max(1.0, window_rows / WINDOW_ROWS)


class Watch:
    """When the run last moved, and whether it may still wait; `rows` is the shards' progress callback."""

    def __init__(self, limit: float, on_rows: OnRows | None = None, workers: Callable[[], int] | None = None,
                 workerless: float = 60.0, poll: float = POLL_SECONDS) -> None:
        self.limit = limit
        self.workerless = workerless
        self.poll = poll
        self._on_rows = on_rows
        self._workers = workers  # how many workers the Dask cluster has now (None: not on Dask)
        self._lock = threading.Lock()
        now = time.monotonic()
        self.last = now + limit  # the first window gets twice the limit: workers start, load (and export) the model
        self.seen_workers = now
        self.reported: dict[str, float] = {}  # shard -> when it last labelled a window

    def rows(self, rows: int, shard: str | None = None) -> None:
        """A window was labelled (here, or on a worker): the run moves."""
        self.moved()
        if shard:
            with self._lock:
                self.reported[shard] = time.monotonic()
        if self._on_rows is not None:
            self._on_rows(rows)

    def event(self, event: Any) -> None:
        """A Dask scheduler event of PROGRESS_TOPIC: (timestamp, {"shard", "rows"})."""
        _, message = event
        self.rows(int(message["rows"]), str(message.get("shard") or ""))

    def moved(self) -> None:
        with self._lock:
            self.last = max(self.last, time.monotonic())

    def check(self, waiting: Sequence[Shard]) -> None:
        """Raise Stalled or ClusterLost when the run may not wait any longer for `waiting`."""
        now = time.monotonic()
        if self._workers is not None:
            if self._count_workers() > 0:
                self.seen_workers = now
            elif now - self.seen_workers > self.workerless:
                raise ClusterLost(_workerless(waiting, self.workerless))
        if now - self.last > self.limit:
            raise Stalled(self._stalled(waiting, now))

    def _count_workers(self) -> int:
        try:
            return self._workers() if self._workers else 0
        except Exception:  # the scheduler itself is gone or unreachable: no workers either
            return 0

    def _stalled(self, waiting: Sequence[Shard], now: float) -> str:
        names = ", ".join(s.name for s in waiting[:5]) + (f" and {len(waiting) - 5} more" if len(waiting) > 5 else "")
        quiet = [f"{name} last labelled a window {now - at:.0f} s ago" for name, at in self.reported.items()
                 if name in {s.name for s in waiting}]
        return (
            f"The run made no progress for {math.ceil(self.limit)} s: no window of rows was labelled and no shard "
            f"finished. Still unfinished: {names}" + (f" ({'; '.join(quiet)})" if quiet else "") + ". A shard task "
            "is stuck (a hung device, a read that never returns) or the machine is far slower than the limit "
            "assumes. The finished shards are kept; run the same command again to label only the missing ones. "
            "If the windows are just slow, raise stall_timeout (seconds per window of 25,000 rows) in the config."
        )


def _workerless(waiting: Sequence[Shard], seconds: float) -> str:
    return (
        f"The Dask cluster has had no workers for {seconds:.0f} s while {len(waiting)} shard(s) waited, "
        f"so nothing could run them. Its workers died or never joined: the workers' logs say why (above, for a "
        f"local cluster). A worker that cannot import the shard task (emodraw-batch missing on it, or another "
        f"version: `ImportError` / `ModuleNotFoundError` in its log) exits as soon as it receives one; install the "
        f"same emodraw-batch on every worker machine. The finished shards are kept; run the same command again to "
        f"label only the missing ones."
    )


def completed(futures: Sequence[Any], watch: Watch, shard_of: Callable[[Any], Shard]) -> Iterator[Any]:
    """Yield the futures as they finish, checking the watch while none does.

    Prefect's `as_completed` runs in a helper thread and hands over each finished future, so that
    this thread wakes every `watch.poll` seconds to check; it ends once every future has finished
    (cancelled ones included).
    """
    from prefect.futures import as_completed

    finished: queue.Queue[Any] = queue.Queue()
    waiter = threading.Thread(target=lambda: [finished.put(f) for f in as_completed(list(futures))],
                              name="emodraw-shard-waiter", daemon=True)
    waiter.start()
    pending = list(futures)
    while pending:
        try:
            future = finished.get(timeout=watch.poll)
        except queue.Empty:
            watch.check([shard_of(f) for f in pending])
            continue
        pending.remove(future)
        watch.moved()
        yield future


def subscribe(client: Any, watch: Watch) -> Callable[[], None]:
    """Receive the workers' progress events; returns the call that stops it."""
    client.subscribe_topic(PROGRESS_TOPIC, watch.event)
    return lambda: client.unsubscribe_topic(PROGRESS_TOPIC)
