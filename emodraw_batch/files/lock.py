"""One writer per output folder: a run holds `DIR/.emodraw.lock` from planning to the manifest.

Local folders use an OS lock (`flock`) on that file, so a run that dies (even by SIGKILL)
releases it at once; the file also names the holder (host, pid, start time) for the
message a second run gets. Object stores have no OS locks: there the file is a lease
(lease.py). `check` only looks (validation); `held` takes the lock, and `token` is the id of
the lock this process holds (the lease's token on object stores), which planning makes the run's id.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from emodraw_batch.files import lease
from emodraw_batch.errors import OutputError
from emodraw_batch.files.layout import Layout


def _holder() -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid(), "since": dt.datetime.now(dt.timezone.utc).isoformat()}


def _read(path: str) -> dict[str, Any]:
    try:
        with open(path) as fh:
            return json.loads(fh.read() or "{}")
    except (OSError, ValueError):
        return {}


def _refuser(out: Layout) -> Any:
    def refuse(holder: dict[str, Any]) -> OutputError:
        who = f"pid {holder.get('pid', '?')} on {holder.get('host', '?')} since {holder.get('since', '?')}"
        return OutputError(
            f"Output folder {out.uri!r} is being written by another run ({who}); two runs on one output "
            "would label the same shards twice. Wait for that run to finish (then run again to resume), stop it, "
            "or pass another --output."
        )

    return refuse


def _try_lock(fd: int) -> bool:
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def check(out: Layout) -> None:
    """Raise if another run holds the folder's lock right now (writes nothing)."""
    if out.remote:
        holder = lease.read(out.fs, out.lock_file)
        if holder is not None and not lease.expired(holder):
            raise _refuser(out)(holder)
        return
    if not os.path.exists(out.lock_file):
        return
    try:
        # Read-write: where flock is emulated with byte-range locks (Linux NFS), an exclusive lock
        # needs a descriptor open for writing, and a read-only one fails with EBADF.
        fd = os.open(out.lock_file, os.O_RDWR)
    except PermissionError:  # a lock file this user may not write: look as well as a reader can
        fd = os.open(out.lock_file, os.O_RDONLY)
    try:
        if not _try_lock(fd):
            raise _refuser(out)(_read(out.lock_file))
    finally:
        os.close(fd)  # closing the descriptor releases a lock taken just to look


# Lock files this process holds: taking one again (the CLI takes it before Prefect starts, the flow
# it runs then takes it too) is a no-op, not a refusal of itself.
_HELD: dict[str, int] = {}
_TOKENS: dict[str, str] = {}


def token(out: Layout) -> str | None:
    """The id of the lock this process holds on `out` (the lease's token on object stores), or None."""
    return _TOKENS.get(out.lock_file)


@contextmanager
def held(out: Layout) -> Iterator[None]:
    """Hold the folder's lock while the block runs; refuse at once if another run holds it.

    Re-entrant within a process: a block nested in one that holds the same folder's lock runs as is.
    """
    key = out.lock_file
    if _HELD.get(key):
        _HELD[key] += 1
        try:
            yield
        finally:
            _HELD[key] -= 1
        return
    with _hold(out) as held_token:
        _HELD[key], _TOKENS[key] = 1, held_token
        try:
            yield
        finally:
            _HELD.pop(key, None)
            _TOKENS.pop(key, None)


@contextmanager
def _hold(out: Layout) -> Iterator[str]:
    """Take the lock; yields its token."""
    if out.remote:
        with lease.Lease(out.fs, out.lock_file, _refuser(out)) as taken:
            yield taken.token
        return
    out.fs.create_dir(out.root)
    fd = os.open(out.lock_file, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if not _try_lock(fd):
            raise _refuser(out)(_read(out.lock_file))
        previous = _read(out.lock_file)
        if previous and lease.expired(previous):  # a holder on this host whose pid is dead
            warnings.warn(
                f"Taking over the lock of {out.uri!r} from a run that is gone (pid {previous.get('pid')} since "
                f"{previous.get('since')}); its finished shards are kept and the rest are redone.",
                stacklevel=3,
            )
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(_holder()).encode(), 0)
        yield uuid.uuid4().hex
        os.ftruncate(fd, 0)  # released cleanly: the next run has nobody to warn about
    finally:
        os.close(fd)  # releases the lock (also when this process dies)
