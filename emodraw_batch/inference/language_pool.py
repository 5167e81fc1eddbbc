"""Language detection on several cores: fastText's calls in worker processes (language_worker.py).

fastText's predict holds the GIL (measured: a Python thread beside it got 24% of its rate alone,
what the GIL's switch interval leaves; the binding never releases it), so one process detects on
one core, ~30,000 tweets/s, below what a GPU's host must feed (bench/host.py). A `DetectorPool`
splits a window's texts into contiguous slices of about equal bytes, one per worker, sends them
all, then reads the answers in order: the results are those of one process, in the same order.

Workers are plain subprocesses (`python -m ...language_worker`), not multiprocessing: a Dask worker
process is daemonic and may not start multiprocessing children, and `spawn` would import the
caller's `__main__` again in each child (a user's script without a main guard would run twice).
They are started on first use, kept for the process (one pool per process, reused by every window
and shard), and closed at exit; they end by themselves when this process dies (their stdin closes).

Nothing here changes a result, only where it is computed: any failure (no interpreter to start,
a worker that dies, a text that does not encode) returns None, and the caller detects that
window in its own thread, as without a pool; a pool that failed once is not used again.
"""

from __future__ import annotations

import atexit
import os
import subprocess
import sys
import threading
import warnings
from typing import IO, NamedTuple

import numpy as np

from emodraw_batch.inference.language_worker import ANSWER, REQUEST

# Below this many texts a window is detected in the caller's thread: a worker's round trip and a
# slice's share of the work are not worth it (the one-row run starts no process at all).
MIN_TEXTS = 2_000
# Texts per worker at least: a window of 5,000 texts goes to 2 workers, not 8.
MIN_SLICE = 1_000
# Workers `auto` starts on a GPU: one per 4 cores (a worker detects ~30,000 tweets/s, and the GPU's
# host must feed >= 100,000 rows/s on 16 cores), leaving the other cores to tokenizing, Parquet and
# the model's loop; at most 8.
CORES_PER_WORKER = 4
MAX_AUTO_WORKERS = 8
# How a worker is started (the model's path is added): this interpreter, the worker module.
COMMAND = (sys.executable, "-m", "emodraw_batch.inference.language_worker")


class Found(NamedTuple):
    """Every text's best k guesses: probabilities (texts, k) float32, indices into `labels` (texts, k)."""

    probs: np.ndarray
    index: np.ndarray
    labels: list[str]


def usable_cores() -> int:
    """The cores this process may run on (its affinity, as a container or `taskset` sets it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def auto_workers(device: str, cores: int | None = None) -> int:
    """Workers for `language_workers = None` (auto): none on a CPU, whose model is far slower than one
    detecting thread (a process would only add start-up); on a GPU one per CORES_PER_WORKER cores."""
    if not device.startswith("cuda"):
        return 0
    cores = usable_cores() if cores is None else cores
    return min(max(cores // CORES_PER_WORKER, 1), MAX_AUTO_WORKERS) if cores > 1 else 0


class _Worker:
    def __init__(self, model_path: str) -> None:
        self.proc = subprocess.Popen(
            [*COMMAND, model_path],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0,
        )
        self.stdin: IO[bytes] = self.proc.stdin  # type: ignore[assignment]
        self.stdout: IO[bytes] = self.proc.stdout  # type: ignore[assignment]

    def send(self, k: int, data: bytes) -> None:
        view = memoryview(REQUEST.pack(k, len(data)) + data)
        while view:  # unbuffered: a write may take less than all (a signal mid-way)
            view = view[self.stdin.write(view) or 0:]

    def receive(self, texts: int, k: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
        n, size = ANSWER.unpack(self._read(ANSWER.size))
        if n != texts * k:
            raise OSError(f"a language worker answered {n} guesses for {texts} texts x {k}")
        probs = np.frombuffer(self._read(4 * n), dtype=np.float32).reshape(texts, k)
        index = np.frombuffer(self._read(2 * n), dtype=np.uint16).reshape(texts, k)
        return probs, index, self._read(size).decode().split("\n")

    def _read(self, size: int) -> bytes:
        chunks, left = [], size
        while left:
            chunk = self.stdout.read(left)  # unbuffered: may return less than asked
            if not chunk:
                raise OSError(f"a language worker ended (exit code {self.proc.poll()})")
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)

    def close(self, wait_s: float = 2.0) -> None:
        for stream in (self.stdin, self.stdout):
            try:
                stream.close()
            except OSError:
                pass
        try:
            self.proc.wait(wait_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class DetectorPool:
    """`workers` language-detection processes for one fastText model; one caller at a time."""

    def __init__(self, workers: int, model_path: str) -> None:
        self.size, self.model_path = workers, model_path
        self.pid = os.getpid()  # a forked child must not write to its parent's pipes
        self._workers: list[_Worker] = []
        self._lock = threading.Lock()
        self.broken = False
        self.texts = 0  # texts the workers detected (benchmarks, tests)

    def predict(self, lines: list[str], k: int) -> Found | None:
        """Every line's best k guesses, or None: the pool is busy (another thread detects), broken or
        forked, or a text does not encode (the caller's own call then meets that error as before).

        `lines` must hold no newline (fastText reads one line per text).
        """
        if not lines:
            return Found(np.zeros((0, k), np.float32), np.zeros((0, k), np.int64), [])
        if self.broken or os.getpid() != self.pid or not self._lock.acquire(blocking=False):
            return None
        try:
            bounds = slices([len(line) for line in lines], min(self.size, max(len(lines) // MIN_SLICE, 1)))
            try:
                payloads = ["\n".join(lines[a:b]).encode() for a, b in bounds]
            except UnicodeEncodeError:
                return None
            try:
                return self._predict(bounds, payloads, k)
            except (OSError, ValueError) as exc:  # a worker that did not start or died, a broken pipe, an odd answer
                self._fail(exc)
                return None
        finally:
            self._lock.release()

    def _predict(self, bounds: list[tuple[int, int]], payloads: list[bytes], k: int) -> Found:
        if not self._workers:
            self._workers = [_Worker(self.model_path) for _ in range(self.size)]
        for worker, data in zip(self._workers, payloads):  # all slices out first, then the answers in order
            worker.send(k, data)
        parts = [worker.receive(b - a, k) for worker, (a, b) in zip(self._workers, bounds)]
        self.texts += bounds[-1][1]
        # One label table for the window: each worker numbered the labels it met itself.
        labels: dict[str, int] = {}
        index = []
        for _, found, table in parts:
            renumber = np.asarray([labels.setdefault(label, len(labels)) for label in table], dtype=np.int64)
            index.append(renumber[found])
        return Found(np.concatenate([p for p, _, _ in parts]), np.concatenate(index), list(labels))

    def _fail(self, exc: BaseException) -> None:
        self.broken = True
        warnings.warn(f"language detection goes on in one thread: its worker processes failed ({exc})", RuntimeWarning,
                      stacklevel=3)
        self.close()

    def close(self) -> None:
        workers, self._workers = self._workers, []
        for worker in workers:
            worker.close()


def slices(sizes: list[int], parts: int) -> list[tuple[int, int]]:
    """(start, stop) of `parts` contiguous runs of `sizes` (at most one per item), each about an equal share
    of their sum, none empty."""
    n = len(sizes)
    parts = max(min(parts, n), 1)
    ends = np.cumsum(np.asarray(sizes, dtype=np.int64) + 1)  # +1: each text's newline (and no zero sizes)
    bounds = [0]
    for i in range(1, parts):
        share = int(np.searchsorted(ends, ends[-1] * i / parts)) + 1
        bounds.append(min(max(share, bounds[-1] + 1), n - (parts - i)))
    bounds.append(n)
    return list(zip(bounds[:-1], bounds[1:]))


_pools: dict[tuple[int, str], DetectorPool] = {}
_pools_lock = threading.Lock()


def pool(workers: int, model_path: str) -> DetectorPool:
    """This process's pool of `workers` workers for `model_path` (started on its first window)."""
    with _pools_lock:
        key = (workers, model_path)
        found = _pools.get(key)
        if found is None or found.pid != os.getpid():
            found = _pools[key] = DetectorPool(workers, model_path)
        return found


@atexit.register
def close_all() -> None:
    """Close every pool's workers (at exit; `emodraw_cli/process.py` calls it too)."""
    with _pools_lock:
        pools = [p for p in _pools.values() if p.pid == os.getpid()]
        _pools.clear()
    for p in pools:
        p.close()
