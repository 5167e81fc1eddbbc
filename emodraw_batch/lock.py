"""One writer per output folder: a run holds `DIR/.emodraw.lock` from planning to the manifest.

Local folders use an OS lock (`flock`) on that file, so a run that dies (even by SIGKILL)
releases it at once; the file also names the holder (host, pid, start time) for the
message a second run gets. `check` only looks (validation); `held` takes the lock.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .errors import OutputError
from .layout import Layout


def _holder() -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid(), "since": dt.datetime.now(dt.timezone.utc).isoformat()}


def _read(path: Any) -> dict[str, Any]:
    try:
        return json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return {}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def _refuse(out: Layout, holder: dict[str, Any]) -> OutputError:
    who = f"pid {holder.get('pid', '?')} on {holder.get('host', '?')} since {holder.get('since', '?')}"
    return OutputError(
        f"Output folder {str(out.root)!r} is being written by another run ({who}); two runs on one output "
        "would label the same shards twice. Wait for that run to finish (then run again to resume), stop it, "
        "or pass another --output."
    )


def _try_lock(fd: int) -> bool:
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def check(out: Layout) -> None:
    """Raise if another run holds the folder's lock right now (writes nothing)."""
    if not out.lock_file.exists():
        return
    fd = os.open(out.lock_file, os.O_RDONLY)
    try:
        if not _try_lock(fd):
            raise _refuse(out, _read(out.lock_file))
    finally:
        os.close(fd)  # closing the descriptor releases a lock taken just to look


@contextmanager
def held(out: Layout) -> Iterator[None]:
    """Hold the folder's lock while the block runs; refuse at once if another run holds it."""
    out.root.mkdir(parents=True, exist_ok=True)
    fd = os.open(out.lock_file, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if not _try_lock(fd):
            raise _refuse(out, _read(out.lock_file))
        previous = _read(out.lock_file)
        if previous.get("host") == socket.gethostname() and previous.get("pid") and not _alive(previous["pid"]):
            warnings.warn(
                f"Taking over the lock of {str(out.root)!r} from a run that is gone (pid {previous['pid']} since "
                f"{previous.get('since')}); its finished shards are kept and the rest are redone.",
                stacklevel=3,
            )
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(_holder()).encode(), 0)
        yield
        os.ftruncate(fd, 0)  # released cleanly: the next run has nobody to warn about
    finally:
        os.close(fd)  # releases the lock (also when this process dies)
