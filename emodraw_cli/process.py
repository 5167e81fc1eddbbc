"""The command's process: it stops when asked and exits when its work is done, always.

- SIGTERM is handled as SIGINT (Ctrl-C): a KeyboardInterrupt in the main thread, so Prefect marks
  the flow run as crashed, the Dask cluster is closed and the output folder's lock is released, as
  on Ctrl-C. systemd, Kubernetes and supervisors stop services with SIGTERM.
- Whatever is still running `STOP_SECONDS` after the first signal (a stuck shard thread, a Dask
  worker that does not close), the process kills its child processes and exits: a stop never
  takes longer than that. A second signal does the same at once.
- At the end of a command, the classifiers' threads and the language-detection processes are
  closed by their owners (the per-process caches) and the other non-daemon threads get `JOIN_SECONDS` in all; one still alive then is named
  on stderr and the process exits without it, instead of waiting for ever in Python's shutdown.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

STOP_SECONDS = 8.0  # from the first SIGTERM/SIGINT to the hard exit: under the 10 s supervisors allow
JOIN_SECONDS = 10.0
KEPT = ("the shards finished so far are kept, and the same command run again (or a served schedule's next run of "
        "that day) labels only the missing ones.")
_stopping = threading.Event()
_signal: list[int] = []  # the first stop signal received


def install() -> None:
    """SIGTERM and SIGINT start a bounded stop (main thread only)."""
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _on_signal)


def _on_signal(signum: int, frame: Any) -> None:
    if _stopping.is_set():  # asked twice: stop now
        hard_exit(signum)
    arm(signum)
    raise KeyboardInterrupt


def arm(signum: int) -> None:
    """Start the clock of a stop: in STOP_SECONDS the process kills its children and exits, done or not."""
    if _stopping.is_set():
        return
    _signal.append(signum)
    _stopping.set()
    timer = threading.Timer(STOP_SECONDS, hard_exit, args=(signum,))
    timer.daemon = True
    timer.start()


def stopped_by() -> int | None:
    """The signal that stopped this process, if one did."""
    return _signal[0] if _signal else None


def hard_exit(signum: int) -> None:
    """Kill every descendant process, then end this one with 128 + the signal's number."""
    kill_descendants()
    _say(f"stopped by {signal.Signals(signum).name} after {STOP_SECONDS:.0f} s (child processes killed): {KEPT}")
    os._exit(128 + signum)


def descendants(pid: int | None = None) -> list[int]:
    """This process's children, their children and so on (Linux: read from /proc; elsewhere none)."""
    root = pid or os.getpid()
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2:].split()  # the name may hold spaces and parentheses
        parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [root]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def kill_descendants() -> None:
    for pid in descendants():
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass  # already gone


def close_owned() -> None:
    """Close what this process owns and may have left running: the cached classifiers' thread pools."""
    classifier = sys.modules.get("emodraw_batch.inference.classifier")
    if classifier is not None:  # never imported for --help or `schedule --next`
        classifier.clear_cache()
    pools = sys.modules.get("emodraw_batch.inference.language_pool")
    if pools is not None:  # the language-detection processes (their stdin closes, they end)
        pools.close_all()


def join_threads(seconds: float = JOIN_SECONDS) -> list[str]:
    """Join the non-daemon threads within `seconds` in all; returns the names of those still alive."""
    deadline = time.monotonic() + seconds
    for thread in threading.enumerate():
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join(max(0.0, deadline - time.monotonic()))
    return [t.name for t in threading.enumerate() if t is not threading.current_thread() and not t.daemon and t.is_alive()]


def _say(message: str) -> None:
    try:
        sys.stderr.write(message + "\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
