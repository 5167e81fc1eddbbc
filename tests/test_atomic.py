"""Temporary names (atomic.py) stay unique where containers or machines share a mount and pids collide."""

from __future__ import annotations

import os
import socket

import pyarrow.fs as pafs

from emodraw_batch import atomic
from emodraw_batch.files.layout import layout
from emodraw_batch.job import resume


def test_two_containers_with_one_pid_write_one_file_without_touching_each_others_temp(tmp_path, monkeypatch):
    """Each container's first process is pid 1: two writers of one file on a shared mount, same pid, two hosts."""
    monkeypatch.setattr(os, "getpid", lambda: 1)
    target = tmp_path / "labels" / "part-00000-00000.parquet"
    monkeypatch.setattr(socket, "gethostname", lambda: "container-a")
    with atomic.replacing(target) as first:
        first.write_bytes(b"A" * 1000)
        monkeypatch.setattr(socket, "gethostname", lambda: "container-b")
        with atomic.replacing(target) as second:  # the other container starts while the first still writes
            second.write_bytes(b"B" * 1000)
        assert first.read_bytes() == b"A" * 1000  # its half-done file was neither removed nor overwritten
    assert target.read_bytes() == b"A" * 1000  # the last complete write wins, whole
    assert [p.name for p in target.parent.iterdir()] == [target.name]


def test_remote_temp_names_differ_across_hosts_with_one_pid_and_are_cleaned_by_resume(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "getpid", lambda: 1)
    out = layout(tmp_path / "out")
    (tmp_path / "out" / "labels").mkdir(parents=True)
    names = set()
    for host in ("container-a", "container-b"):
        monkeypatch.setattr(socket, "gethostname", lambda host=host: host)
        name = atomic._remote_temp(out.shard("part-00000-00000.parquet"))
        assert name.rpartition("/")[2].startswith(".part-00000-00000")
        with pafs.LocalFileSystem().open_output_stream(name) as stream:  # a writer that then died
            stream.write(b"partial")
        names.add(name)
    assert len(names) == 2
    assert sorted(out.temp_files(out.labels)) == sorted(names)  # recognised as temporary ...
    resume.remove_temp_files(out)
    assert list((tmp_path / "out" / "labels").iterdir()) == []  # ... and removed by the resume check
