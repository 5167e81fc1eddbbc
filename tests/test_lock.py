"""One writer per output folder: a second run is refused at once, a dead holder's lock is taken over."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

from conftest import make_texts, write_corpus
from emodraw_batch.config import load_config
from emodraw_batch.errors import OutputError
from emodraw_batch.files import lock
from emodraw_batch.files.layout import layout
from emodraw_batch.job.runner import run

HOLD = """
import sys, time
from emodraw_batch.files.layout import layout
from emodraw_batch.files.lock import held
with held(layout(sys.argv[1])):
    print("held", flush=True)
    time.sleep(120)
"""


@pytest.fixture
def holder(tmp_path):
    """Another process that holds the lock of tmp_path/out until killed."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path / "out")], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    yield proc
    proc.kill()
    proc.wait()


@pytest.fixture
def job(tiny_model, tmp_path):
    corpus = write_corpus(tmp_path / "in.parquet", make_texts(40, seed=9), row_group_size=10)
    return [str(corpus)], tmp_path / "out", load_config(model=tiny_model, device="cpu", max_length=32)


def test_a_second_run_is_refused_at_once_naming_the_holder(job, holder):
    started = time.perf_counter()
    with pytest.raises(OutputError, match=rf"pid {holder.pid} on .* since 20"):
        run(*job)
    assert time.perf_counter() - started < 30  # refused, not waiting (a loose bound: no timing claim)
    assert not (job[1] / "labels").exists() and not (job[1] / "run.json").exists()


def test_the_cli_refuses_before_starting_anything(job, holder):
    env_cmd = [sys.executable, "-m", "emodraw_cli.app", "run", job[0][0], "--output", str(job[1]),
               "--model", job[2].model, "--device", "cpu", "--no-progress"]
    result = subprocess.run(env_cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1 and "being written by another run" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_dead_holders_lock_is_taken_over_with_a_warning(job, holder):
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        summary = run(*job)
    assert summary.rows == 40
    assert any(f"pid {holder.pid}" in str(w.message) and "gone" in str(w.message) for w in caught)


def test_a_cleanly_finished_run_leaves_nothing_to_warn_about(job):
    run(*job)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any takeover warning would fail here
        assert run(*job).resumed == 1
    assert Path(job[1] / ".emodraw.lock").read_text() == ""


def test_the_check_works_where_an_exclusive_lock_needs_a_writable_descriptor(tmp_path, monkeypatch):
    """Linux NFS emulates flock with byte-range locks: LOCK_EX on a read-only descriptor fails with EBADF."""
    import errno
    import fcntl

    real = fcntl.flock

    def nfs_flock(fd, operation):
        if operation & fcntl.LOCK_EX and fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_RDONLY:
            raise OSError(errno.EBADF, "Bad file descriptor")
        return real(fd, operation)

    out = layout(tmp_path / "out")
    with lock.held(out):
        pass  # leaves the lock file behind, as every finished run does
    monkeypatch.setattr(fcntl, "flock", nfs_flock)
    lock.check(out)  # free: no EBADF


HOLD_ON_ANOTHER_MACHINE = "import socket\nsocket.gethostname = lambda: 'node-b'\n" + HOLD


def per_machine_flock(monkeypatch):
    """A shared filesystem whose flock works per machine only: this machine never sees node-b's lock."""
    import fcntl

    monkeypatch.setattr(fcntl, "flock", lambda fd, operation: None)


def test_a_live_run_on_another_machine_is_refused_where_flock_works_per_machine_only(tmp_path, monkeypatch):
    proc = subprocess.Popen([sys.executable, "-c", HOLD_ON_ANOTHER_MACHINE, str(tmp_path / "out")],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        per_machine_flock(monkeypatch)
        out = layout(tmp_path / "out")
        for attempt in (lambda: lock.check(out), lambda: lock.held(out).__enter__()):
            with pytest.raises(OutputError, match=rf"pid {proc.pid} on node-b since 20.* another machine"):
                attempt()
        assert f'"pid": {proc.pid}' in (tmp_path / "out" / ".emodraw.lock").read_text()  # its record untouched
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("renewed", ["2020-01-01T00:00:00+00:00", "2099-01-01T00:00:00+00:00"], ids=["behind", "ahead"])
def test_another_machines_record_counts_by_when_the_filesystem_saw_it_written_not_by_its_clock(tmp_path, monkeypatch, renewed):
    per_machine_flock(monkeypatch)
    out = layout(tmp_path / "out")
    (tmp_path / "out").mkdir()
    lock_file = tmp_path / "out" / ".emodraw.lock"
    lock_file.write_text(json.dumps({"host": "node-b", "boot": "b", "pid": 1, "since": renewed, "renewed": renewed}))
    with pytest.raises(OutputError, match="pid 1 on node-b"):  # written just now, whatever its clock says
        lock.held(out).__enter__()
    stamp = time.time() - 3600
    os.utime(lock_file, (stamp, stamp))  # not renewed for an hour: its machine is gone
    lock.check(out)
    with pytest.warns(UserWarning, match="pid 1 on node-b"):
        with lock.held(out):
            assert json.loads(lock_file.read_text())["pid"] == os.getpid()


def test_the_holder_renews_its_record_in_the_lock_file(tmp_path, monkeypatch):
    from emodraw_batch.files import holder, lease

    monkeypatch.setattr(lease, "RENEW_S", 0.05)
    out = layout(tmp_path / "out")
    lock_file = tmp_path / "out" / ".emodraw.lock"
    with lock.held(out):
        first = json.loads(lock_file.read_text())
        assert {k: first[k] for k in ("host", "boot", "pid")} == {k: holder.me()[k] for k in ("host", "boot", "pid")}
        # Wait for the renewal, not for a fixed time; the deadline only ends a test whose renewer is dead.
        deadline = time.monotonic() + 60
        while lock._read(str(lock_file)).get("renewed", "") <= first["renewed"] and time.monotonic() < deadline:
            time.sleep(0.01)  # (_read: a read beside a renewal's write may see it torn)
        assert lock._read(str(lock_file))["renewed"] > first["renewed"]
    assert lock_file.read_text() == ""


def test_a_torn_record_counts_as_a_holder_until_it_is_old(tmp_path, monkeypatch):
    """A read beside another machine's renewal may see its record half written: not a free folder."""
    per_machine_flock(monkeypatch)
    out = layout(tmp_path / "out")
    (tmp_path / "out").mkdir()
    lock_file = tmp_path / "out" / ".emodraw.lock"
    lock_file.write_text('{"host": "node-b", "boot": "b", "pid": 4')
    for attempt in (lambda: lock.check(out), lambda: lock.held(out).__enter__()):
        with pytest.raises(OutputError, match="another machine"):
            attempt()
    stamp = time.time() - 3600
    os.utime(lock_file, (stamp, stamp))  # damaged long ago: nobody renews it
    with pytest.warns(UserWarning, match="gone"):
        with lock.held(out):
            pass
