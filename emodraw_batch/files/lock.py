"""One writer per output folder: a run holds `DIR/.emodraw.lock` from planning to the manifest.

Local folders use an OS lock (`flock`) on that file, so a run that dies (even by SIGKILL)
releases it at once; the file also names the holder (host, boot id, pid, start time, last
renewal: holder.py) for the message a second run gets. A thread renews that record every
lease.RENEW_S while the lock is held, because `flock` on a shared filesystem may work per machine
only: a run that gets the OS lock still refuses while the file holds a record of another machine
that was renewed within lease.LEASE_S (judged by the store's clock, holder.age_s). Object stores
have no OS locks: there the file is a lease (lease.py). `check` only looks (validation); `held`
takes the lock, and `token` is the id of the lock this process holds (the lease's token on object
stores), which planning makes the run's id.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import threading
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from emodraw_batch.files import holder as holders
from emodraw_batch.files import lease
from emodraw_batch.errors import OutputError
from emodraw_batch.files.layout import Layout


RECORD_BYTES = 1024  # the record is padded to this size: a renewal overwrites it in place, never empties it


def _put(fd: int, record: dict[str, Any]) -> int:
    data = json.dumps(record).encode().ljust(RECORD_BYTES)
    os.pwrite(fd, data, 0)
    return len(data)


def _read(path: str) -> dict[str, Any]:
    """The record in the lock file: {} when there is none (a clean release empties it)."""
    try:
        with open(path, "rb") as fh:
            data = fh.read().strip()
    except OSError:
        return {}
    try:
        return json.loads(data) if data else {}
    except ValueError:
        return {"host": "?"}  # torn or damaged: a holder of unknown place, judged by the file's age


def _refuser(out: Layout) -> Any:
    def refuse(holder: dict[str, Any]) -> OutputError:
        who = f"pid {holder.get('pid', '?')} on {holder.get('host', '?')} since {holder.get('since', '?')}"
        elsewhere = "" if not holder or holders.this_machine(holder) else (
            f" Its lock was renewed from another machine (or before this one restarted) less than "
            f"{lease.LEASE_S / 60:g} minutes ago; if that run is gone, the lock counts as free "
            f"{lease.LEASE_S / 60:g} minutes after its last renewal."
        )
        return OutputError(
            f"Output folder {out.uri!r} is being written by another run ({who}); two runs on one output "
            "would label the same shards twice. Wait for that run to finish (then run again to resume), stop it, "
            f"or pass another --output.{elsewhere}"
        )

    return refuse


def _try_lock(fd: int) -> bool:
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def _taken_elsewhere(out: Layout, record: dict[str, Any], probe: bool) -> bool:
    """The record names a run on another machine that renewed it within LEASE_S (flock may be per machine)."""
    if not record or holders.this_machine(record):
        return False  # nobody, or a run of this machine: there the OS lock alone decides
    return lease.gone(record, holders.age_s(out.fs, out.lock_file, probe)) is False


def check(out: Layout) -> None:
    """Raise if another run holds the folder's lock right now (writes nothing)."""
    if out.remote:
        holder = lease.read(out.fs, out.lock_file)
        if holder is not None and lease.gone(holder, holders.age_s(out.fs, out.lock_file, probe=False)) is False:
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
        locked = _try_lock(fd)
        record = _read(out.lock_file)
        if not locked or _taken_elsewhere(out, record, probe=False):
            raise _refuser(out)(record)
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
        locked = _try_lock(fd)
        previous = _read(out.lock_file)
        if not locked or _taken_elsewhere(out, previous, probe=True):
            raise _refuser(out)(previous)
        if previous:  # the OS lock was free, so its holder is gone (a crash; a dead machine's stale record)
            warnings.warn(
                f"Taking over the lock of {out.uri!r} from a run that is gone (pid {previous.get('pid')} on "
                f"{previous.get('host')} since {previous.get('since')}); its finished shards are kept and the rest "
                "are redone.",
                stacklevel=3,
            )
        with _renewing(fd):
            yield uuid.uuid4().hex
        os.ftruncate(fd, 0)  # released cleanly: the next run has nobody to warn about
    finally:
        os.close(fd)  # releases the lock (also when this process dies)


@contextmanager
def _renewing(fd: int) -> Iterator[None]:
    """Write this run's record into the held lock file, and renew it every lease.RENEW_S until the block ends."""
    since = dt.datetime.now(dt.timezone.utc).isoformat()
    record = holders.me() | {"since": since, "renewed": since}
    os.ftruncate(fd, _put(fd, record))  # an older, longer record leaves no tail
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(lease.RENEW_S):
            try:
                _put(fd, record | {"renewed": dt.datetime.now(dt.timezone.utc).isoformat()})
            except OSError:  # a missed renewal is retried; the expiry is ten renewals long
                pass

    renewer = threading.Thread(target=renew, name="emodraw-lock", daemon=True)
    renewer.start()
    try:
        yield
    finally:
        stop.set()
        renewer.join()
