"""Who holds an output folder's lock, and how to tell that holder is gone without trusting its clock.

A lock record (lock.py, lease.py) names its holder by host, boot id, pid namespace, pid and the
pid's start time. Only a record of this very machine (same host, same boot id, same pid namespace)
can be judged by its pid: containers restart with the same hostname and pid 1, cloned VMs share
hostnames, and a pid is reused once its process ends (hence the start time). Any other record is
judged by its age: how long ago the store last saw it written, by the store's own clock (the
record's modification time against that of a probe written beside it), never by comparing the
holder's timestamps with this machine's clock.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
from typing import Any

import pyarrow.fs as pafs

from emodraw_batch.atomic import unique_name


def _proc(path: str) -> str:
    """A /proc entry (Linux), '' where there is none: then host and pid are all there is, as before."""
    try:
        if path.startswith("/proc/self/ns/"):
            return os.readlink(path)
        with open(path) as fh:
            return fh.read().strip()
    except OSError:
        return ""


def _started(pid: int) -> str:
    """When process `pid` started (clock ticks since boot, field 22 of /proc/PID/stat), '' if unknown."""
    fields = _proc(f"/proc/{pid}/stat").rpartition(")")[2].split()
    return fields[19] if len(fields) > 19 else ""


def me() -> dict[str, Any]:
    """This process as a lock record names it."""
    pid = os.getpid()
    return {"host": socket.gethostname(), "boot": _proc("/proc/sys/kernel/random/boot_id"),
            "pidns": _proc("/proc/self/ns/pid"), "pid": pid, "pid_start": _started(pid)}


def this_machine(record: dict[str, Any]) -> bool:
    """The record was written on this machine, in this boot and pid namespace: its pid means a process here."""
    here = me()
    return all(record.get(key, "") == here[key] for key in ("host", "boot", "pidns"))


def alive_here(record: dict[str, Any]) -> bool | None:
    """True/False for a holder on this machine (is its process still running?), None for any other."""
    if not this_machine(record):
        return None
    try:
        pid = int(record["pid"])
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, KeyError, ValueError, TypeError, OverflowError):
        return True  # exists but not ours, or a record we cannot read: no proof that it is gone
    started, recorded = _started(pid), record.get("pid_start", "")
    return not (started and recorded and started != recorded)  # another process that reuses the pid


def age_s(fs: pafs.FileSystem, path: str, probe: bool = True) -> float | None:
    """Seconds since the store last saw `path` written, by the store's own clock; None where it keeps no times.

    The store's "now" is the modification time of a hidden probe written (and deleted) beside `path`.
    `probe=False` (validation, which writes nothing) measures against this machine's clock instead.
    """
    written = fs.get_file_info(path).mtime
    if written is None:
        return None
    if not probe:
        return (dt.datetime.now(dt.timezone.utc) - written).total_seconds()
    folder, _, name = path.rpartition("/")
    spot = f"{folder}/{unique_name(name)}"
    with fs.open_output_stream(spot) as stream:
        stream.write(b"clock probe\n")
    try:
        now = fs.get_file_info(spot).mtime
    finally:
        fs.delete_file(spot)
    return None if now is None else (now - written).total_seconds()
