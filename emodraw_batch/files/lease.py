"""A lock for object stores, which have no OS locks: a lease object with verification and renewal.

`DIR/.emodraw.lock` holds JSON naming the holder (host, pid, start time), a random token and
when the lease was last renewed. To take it, a run checks that no live lease exists, writes its
own, waits SETTLE_S and reads it back: with the store's read-after-write consistency, of two runs
that both found the folder free, the one whose write came first reads the other's token and
refuses, as long as no process stalls between its check and its write for longer than SETTLE_S
(the check and the write are milliseconds apart). The holder renews the lease every RENEW_S; a
lease not renewed for LEASE_S (its holder died on another machine), or naming a dead process of
this machine, is taken over with a warning. "Not renewed" is judged without another machine's
clock (holder.py): by the store's own modification times, or, on a store that keeps none, by
watching the lease stay unchanged for LEASE_S on this machine's monotonic clock. Works on any
pyarrow filesystem.

A holder that stalled past LEASE_S (a GC pause, SIGSTOP, a network cut) may find its lease taken
over when it wakes up. It does not write over the other run's lease: each renewal reads the lease
first and stops for good (`lost`) when it names another token, it writes only if no more than
RENEW_S passed since it asked for that read (else it reads again), and the end of the block deletes
only a lease that still names this one. A store without conditional writes leaves one gap: a stall
that lands inside the renewal's own write (milliseconds every RENEW_S) lets that write land after
the takeover. Then both runs stop, and neither publishes anything more: its shards check run.json
and the token before they are published (files/guard.py). The token is the run's id (run.json, job/plan.py).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import threading
import time
import uuid
import warnings
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs

from emodraw_batch.atomic import write_json
from emodraw_batch.errors import OutputError
from emodraw_batch.files import holder as holders

SETTLE_S = 2.0
# 10 minutes without renewal: the holder is gone. EMODRAW_LEASE_EXPIRY_S shortens it for tests (a
# stalled holder, tests/test_s3.py); the one place this setting is read.
LEASE_S = float(os.environ.get("EMODRAW_LEASE_EXPIRY_S") or 600.0)
RENEW_S = min(60.0, LEASE_S / 10)  # renewed ten times per expiry period: a missed renewal or two is harmless


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class Unreadable(OutputError):
    """The lease could not be read: a store error is no proof that nobody holds it."""


def load(fs: pafs.FileSystem, path: str) -> dict[str, Any] | None:
    """The lease at `path` as stored, or None (no such object, or an empty one); store errors propagate as they are."""
    try:
        with fs.open_input_stream(path) as stream:
            return json.loads(stream.read() or b"null") or None
    except FileNotFoundError:
        return None


def read(fs: pafs.FileSystem, path: str) -> dict[str, Any] | None:
    """The lease in force at `path`, or None when there is none (no such object, or an empty one).

    Only a missing object means free. Any other error (a 503, a timeout, a 403, garbage) raises
    Unreadable: taking it for "no lease" would let a second run write beside a live holder.
    """
    try:
        return load(fs, path)
    except (OSError, ValueError, pa.ArrowException) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise Unreadable(
            f"The lock {path!r} could not be read ({type(exc).__name__}: {first}); a store error is no proof that "
            "no other run holds this output, so this run does not start. Check that the store is reachable and "
            "the credentials may read it, then run again; if the lock object is damaged and no run is writing "
            "this output, delete it."
        ) from None


def gone(holder: dict[str, Any], age_s: float | None) -> bool | None:
    """The holder is gone: a process of this machine that ended, or a record not written for LEASE_S.

    `age_s` is the record's age by the store's clock (holder.age_s); None where the store keeps no
    times: then, for a holder on another machine, the answer is None (not known without watching).
    """
    alive = holders.alive_here(holder)
    if alive is not None:
        return not alive
    return None if age_s is None else age_s > LEASE_S


def _unchanged_for_expiry(fs: pafs.FileSystem, path: str, holder: dict[str, Any]) -> bool:
    """Watch the lease for LEASE_S on this machine's monotonic clock: True if nobody renewed it."""
    warnings.warn(
        f"The lock {path!r} names a run on another machine and this store keeps no modification times: "
        f"watching it for {LEASE_S:.0f} s to see whether that run still renews it.",
        stacklevel=3,
    )
    until = time.monotonic() + LEASE_S
    while (left := until - time.monotonic()) > 0:
        time.sleep(min(RENEW_S / 4, left))
        now = read(fs, path)
        if now != holder:
            return now is None  # renewed (or taken) by another run: it lives; deleted: the folder is free
    return True


class Lease:
    """Hold the lease at `path` on `fs` while in a `with` block; `refuse(holder)` builds the error."""

    def __init__(self, fs: pafs.FileSystem, path: str, refuse: Any) -> None:
        self.fs, self.path, self.refuse = fs, path, refuse
        self.token = uuid.uuid4().hex
        self.since = _now().isoformat()
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None
        self.lost: dict[str, Any] | None = None  # the lease found in its place once another run took it

    def _write(self) -> None:
        record = holders.me() | {"since": self.since, "renewed": _now().isoformat(), "token": self.token}
        write_json(self.path, record, self.fs)  # appears whole: a reader never sees half a lease

    def __enter__(self) -> Lease:
        holder = read(self.fs, self.path)
        if holder is not None:
            if not self._gone(holder):
                raise self.refuse(holder)
            warnings.warn(
                f"Taking over the lock {self.path!r} from a run that is gone (pid {holder.get('pid')} on "
                f"{holder.get('host')} since {holder.get('since')}); its finished shards are kept and the rest redone.",
                stacklevel=2,
            )
        self._write()
        time.sleep(SETTLE_S)
        holder = read(self.fs, self.path)
        if holder is None or holder.get("token") != self.token:
            raise self.refuse(holder or {})
        self._renewer = threading.Thread(target=self._renew, name="emodraw-lease", daemon=True)
        self._renewer.start()
        return self

    def _gone(self, holder: dict[str, Any]) -> bool:
        found = gone(holder, holders.age_s(self.fs, self.path))
        return _unchanged_for_expiry(self.fs, self.path, holder) if found is None else found

    def _renew(self) -> None:
        while not self._stop.wait(RENEW_S):
            try:
                asked = time.monotonic()
                holder = read(self.fs, self.path)
                if holder is None or holder.get("token") != self.token:
                    # Taken over (this process stalled past LEASE_S) or removed: never write over
                    # another run's lease; this run's shards see it too and stop (files/guard.py).
                    self.lost = holder or {}
                    return
                if time.monotonic() - asked > RENEW_S:
                    # Stalled since the read was asked for (a stop, a pause, a slow store): another run
                    # may have taken the lease meanwhile. Read it again rather than write over it.
                    continue
                self._write()
            except Exception:  # noqa: BLE001 - a missed renewal is retried; the lease is long
                pass

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join()
        if self.lost is not None:
            return  # another run's lease (or none): not this run's to delete
        try:
            holder = read(self.fs, self.path)
        except Unreadable:
            return  # the store is not answering: the lease expires by itself (LEASE_S)
        if holder is not None and holder.get("token") == self.token:
            self.fs.delete_file(self.path)
