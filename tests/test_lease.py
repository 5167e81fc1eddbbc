"""The object-store lock protocol (lease.py), run on a local pyarrow filesystem: it uses only
open/read/write/delete of whole objects, so it behaves the same on S3 (see test_s3 for the real store)."""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import subprocess
import sys
import time
import warnings

import pyarrow.fs as pafs
import pytest

from emodraw_batch.files import holder, lease


class Refused(Exception):
    pass


@pytest.fixture
def spot(tmp_path, monkeypatch):
    monkeypatch.setattr(lease, "SETTLE_S", 0.01)
    return pafs.LocalFileSystem(), str(tmp_path / ".emodraw.lock")


def refuse(holder):
    return Refused(f"held by pid {holder.get('pid')} on {holder.get('host')}")


def write_holder(fs, path, **fields):
    with fs.open_output_stream(path) as stream:
        stream.write(json.dumps(fields).encode())


def test_a_held_lease_refuses_a_second_run_and_is_removed_on_release(spot):
    fs, path = spot
    with lease.Lease(fs, path, refuse):
        holder = lease.read(fs, path)
        assert holder["host"] == socket.gethostname() and holder["token"]
        with pytest.raises(Refused, match=f"pid {holder['pid']}"):
            lease.Lease(fs, path, refuse).__enter__()
    assert lease.read(fs, path) is None


def test_of_two_runs_that_both_found_it_free_only_the_last_writer_holds_it(spot, monkeypatch):
    fs, path = spot
    other = lease.Lease(fs, path, refuse)
    # While this run settles, another run (which also saw no lease) writes its own.
    monkeypatch.setattr(lease.time, "sleep", lambda s: other._write())
    with pytest.raises(Refused):
        lease.Lease(fs, path, refuse).__enter__()
    assert lease.read(fs, path)["token"] == other.token


HOUR = 3600.0
NOW = dt.datetime.now(dt.timezone.utc).isoformat()  # by this machine's clock: what the holder wrote, not what counts


def age_record(path, seconds):
    """Set the record's modification time `seconds` into the past (what the store last saw written)."""
    stamp = time.time() - seconds
    os.utime(path, (stamp, stamp))


def another_machine(**fields):
    return {"host": "elsewhere", "boot": "another-boot", "pidns": "pid:[1]", "pid": 1, **fields}


def this_machine(**fields):
    return {**holder.me(), **fields}


@pytest.mark.parametrize(
    "record, written_s_ago, gone",
    [
        (another_machine(), HOUR, True),  # not renewed for an hour (by the store's clock): expired
        (another_machine(), 0, False),  # renewed just now on another machine
        (this_machine(pid=2**22 + 7), 0, True),  # a dead process of this machine
        (this_machine(pid_start="1"), 0, True),  # a live pid of this machine, but another process: pid reused
        (this_machine(boot="before-a-restart", pid=os.getpid()), HOUR, True),  # same host name, another boot
    ],
    ids=["stale-elsewhere", "fresh-elsewhere", "dead-here", "pid-reused", "other-boot"],
)
def test_a_lease_whose_holder_is_gone_is_taken_over_with_a_warning(spot, record, written_s_ago, gone):
    fs, path = spot
    write_holder(fs, path, since="earlier", renewed=NOW, token="theirs", **record)
    age_record(path, written_s_ago)
    assert lease.gone(lease.read(fs, path), holder.age_s(fs, path)) is gone
    if not gone:
        with pytest.raises(Refused):
            lease.Lease(fs, path, refuse).__enter__()
        return
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with lease.Lease(fs, path, refuse) as mine:
            assert lease.read(fs, path)["token"] == mine.token
    assert any("Taking over" in str(w.message) for w in caught)


@pytest.mark.parametrize("renewed", ["2020-01-01T00:00:00+00:00", "2099-01-01T00:00:00+00:00"], ids=["behind", "ahead"])
def test_a_live_lease_is_judged_by_the_stores_clock_not_by_the_holders(spot, renewed):
    """The holder's clock is years off; what counts is that the store saw its lease written just now."""
    fs, path = spot
    write_holder(fs, path, since=renewed, renewed=renewed, token="theirs", **another_machine())
    with pytest.raises(Refused):
        lease.Lease(fs, path, refuse).__enter__()
    assert lease.read(fs, path)["token"] == "theirs"


def test_a_dead_lease_is_judged_by_the_stores_clock_not_by_the_holders(spot):
    """The holder's clock ran ahead: its last renewal claims the future, but the store last saw it an hour ago."""
    fs, path = spot
    write_holder(fs, path, since="earlier", renewed="2099-01-01T00:00:00+00:00", token="theirs", **another_machine())
    age_record(path, HOUR)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with lease.Lease(fs, path, refuse) as mine:
            assert lease.read(fs, path)["token"] == mine.token
    assert any("Taking over" in str(w.message) for w in caught)


def test_the_holder_renews_its_lease(spot, monkeypatch):
    fs, path = spot
    monkeypatch.setattr(lease, "RENEW_S", 0.05)
    with lease.Lease(fs, path, refuse):
        first = lease.read(fs, path)["renewed"]
        # Wait for the renewal, not for a fixed time: a busy machine may not run the renewer thread
        # within any given fraction of a second. The deadline only ends a test whose renewer is dead.
        deadline = time.monotonic() + 60
        while (lease.read(fs, path) or {}).get("renewed", "") <= first and time.monotonic() < deadline:
            time.sleep(0.01)
        assert lease.read(fs, path)["renewed"] > first


class FailingReads(pafs.FileSystemHandler):
    """A local filesystem whose reads of one path fail as a store error would (503, timeout, 403)."""

    def __init__(self, path: str, error: Exception) -> None:
        self.inner, self.path, self.error = pafs.LocalFileSystem(), path, error

    def open_input_stream(self, path):
        if path == self.path:
            raise self.error
        return self.inner.open_input_stream(path)

    def open_input_file(self, path):
        return self.inner.open_input_file(path)

    def open_output_stream(self, path, metadata):
        return self.inner.open_output_stream(path)

    def open_append_stream(self, path, metadata):
        return self.inner.open_append_stream(path)

    def get_type_name(self):
        return "failing-reads"

    def equals(self, other):
        return self is other

    def get_file_info(self, paths):
        return self.inner.get_file_info(paths)

    def get_file_info_selector(self, selector):
        return self.inner.get_file_info(selector)

    def create_dir(self, path, recursive):
        self.inner.create_dir(path, recursive=recursive)

    def delete_dir(self, path):
        self.inner.delete_dir(path)

    def delete_dir_contents(self, path, missing_dir_ok=False):
        self.inner.delete_dir_contents(path, missing_dir_ok=missing_dir_ok)

    def delete_root_dir_contents(self):
        raise NotImplementedError

    def delete_file(self, path):
        self.inner.delete_file(path)

    def move(self, src, dest):
        self.inner.move(src, dest)

    def copy_file(self, src, dest):
        self.inner.copy_file(src, dest)

    def normalize_path(self, path):
        return path


@pytest.mark.parametrize("error", [OSError("AWS Error SERVICE_UNAVAILABLE (HTTP status 503)"),
                                   TimeoutError("read timed out"), PermissionError("AWS Error ACCESS_DENIED (403)")],
                         ids=["503", "timeout", "403"])
def test_a_store_error_reading_the_lease_refuses_instead_of_taking_it(spot, error):
    _, path = spot
    fs = pafs.PyFileSystem(FailingReads(path, error))
    with pytest.raises(lease.Unreadable, match="could not be read") as caught:
        lease.Lease(fs, path, refuse).__enter__()
    assert str(error).split(" (")[0] in str(caught.value) and "does not start" in str(caught.value)
    with pytest.raises(lease.Unreadable):
        lease.read(fs, path)


def test_only_a_missing_lease_object_means_free(spot):
    fs, path = spot
    assert lease.read(fs, path) is None  # no object: free
    write_holder(fs, path)  # an empty object: free too (never written half: writes are atomic)
    with fs.open_output_stream(path) as stream:
        stream.write(b"")
    assert lease.read(fs, path) is None
    with fs.open_output_stream(path) as stream:
        stream.write(b"{not json")
    with pytest.raises(lease.Unreadable, match="damaged"):
        lease.read(fs, path)


class OneRound:
    """A renewer's stop event that lets it renew once, after `meanwhile()` ran (what happened while it slept)."""

    def __init__(self, meanwhile) -> None:
        self.meanwhile, self.rounds = meanwhile, 0

    def wait(self, timeout):
        self.rounds += 1
        if self.rounds == 1:
            self.meanwhile()
            return False
        return True

    def set(self):
        pass


def test_a_holder_whose_lease_was_taken_over_neither_renews_over_it_nor_deletes_it(spot):
    """A holder stalled past the expiry (SIGSTOP, GC pause) wakes up: another run holds the lease now."""
    fs, path = spot
    mine = lease.Lease(fs, path, refuse)
    mine._write()
    now = dt.datetime.now(dt.timezone.utc).isoformat()
    theirs = {"host": "elsewhere", "pid": 1, "since": now, "renewed": now, "token": "theirs"}
    mine._stop = OneRound(lambda: write_holder(fs, path, **theirs))
    mine._renew()  # the renewal that comes due when the stalled process runs again
    assert lease.read(fs, path)["token"] == "theirs"
    assert mine.lost["token"] == "theirs"
    mine.__exit__(None, None, None)
    assert lease.read(fs, path)["token"] == "theirs"  # its exit leaves the other run's lease in place


def test_a_holder_stalled_between_reading_and_renewing_its_lease_reads_again_instead_of_writing(spot, monkeypatch):
    """The stall lands after the renewal's read showed this run's lease, before its write; meanwhile another
    run took the lease over. The renewal must not write its stale lease over the other's."""
    fs, path = spot
    monkeypatch.setattr(lease, "RENEW_S", 0.05)
    mine = lease.Lease(fs, path, refuse)
    mine._write()
    now = dt.datetime.now(dt.timezone.utc).isoformat()
    theirs = {"host": "elsewhere", "pid": 1, "since": now, "renewed": now, "token": "theirs"}
    real_read, calls = lease.read, []

    def stalled_read(fs_, path_):
        found = real_read(fs_, path_)
        if not calls:  # the first read: the process stops here, and the other run takes over meanwhile
            time.sleep(2 * lease.RENEW_S)
            write_holder(fs, path, **theirs)
        calls.append(found)
        return found

    monkeypatch.setattr(lease, "read", stalled_read)
    rounds = iter([False, False, True])  # two renewals come due, then the block ends
    mine._stop = type("Stop", (), {"wait": lambda self, timeout: next(rounds), "set": lambda self: None})()
    mine._renew()
    assert calls[0]["token"] == mine.token  # the stale read named this run ...
    assert real_read(fs, path)["token"] == "theirs"  # ... but nothing was written over the other's lease
    assert mine.lost["token"] == "theirs"


def test_the_expiry_can_be_shortened_for_tests_by_one_environment_variable():
    code = "from emodraw_batch.files import lease; print(lease.LEASE_S, lease.RENEW_S)"
    env = {**os.environ, "EMODRAW_LEASE_EXPIRY_S": "3"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["3.0", "0.3"]


class NoTimes(FailingReads):
    """A store that keeps no modification times (some fsspec drivers report none)."""

    def __init__(self) -> None:
        super().__init__("", OSError())

    def get_file_info(self, paths):
        return [pafs.FileInfo(f.path, f.type, size=f.size) for f in self.inner.get_file_info(paths)]


def test_without_store_times_a_lease_left_unchanged_for_the_expiry_is_taken_over(spot, monkeypatch):
    _, path = spot
    fs = pafs.PyFileSystem(NoTimes())
    monkeypatch.setattr(lease, "LEASE_S", 0.2)  # watched on this machine's monotonic clock
    write_holder(fs, path, since="earlier", renewed="2099-01-01T00:00:00+00:00", token="theirs", **another_machine())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with lease.Lease(fs, path, refuse) as mine:
            assert lease.read(fs, path)["token"] == mine.token
    assert any("watching it" in str(w.message) for w in caught) and any("Taking over" in str(w.message) for w in caught)


def test_without_store_times_a_lease_renewed_while_watched_is_not_taken(spot, monkeypatch):
    _, path = spot
    fs = pafs.PyFileSystem(NoTimes())
    theirs = dict(since="earlier", token="theirs", **another_machine())
    write_holder(fs, path, renewed="2020-01-01T00:00:00+00:00", **theirs)  # its clock is years behind
    # While this run watches, the holder renews its lease (as it does every RENEW_S).
    monkeypatch.setattr(lease.time, "sleep", lambda s: write_holder(fs, path, renewed="2020-01-01T00:01:00+00:00", **theirs))
    with pytest.warns(UserWarning, match="watching it"), pytest.raises(Refused):
        lease.Lease(fs, path, refuse).__enter__()
    assert lease.read(fs, path)["token"] == "theirs"
