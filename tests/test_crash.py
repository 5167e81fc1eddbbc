"""Kill a real `emodraw-batch run` with SIGKILL part-way, rerun it, and compare with a clean run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pyarrow as pa
import pyarrow.parquet as pq
from conftest import make_texts, write_corpus

SHARDS = 24


def start(corpus, out, model) -> subprocess.Popen:
    args = ["run", str(corpus), "-o", str(out), "--model", model, "--device", "cpu", "--shard-rows", "500",
            "--window-rows", "250", "--max-length", "64", "--json", "--no-progress"]
    return subprocess.Popen(
        [sys.executable, "-m", "emodraw_cli.app", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )


def finished(out) -> dict[str, int]:
    labels = out / "labels"
    return {p.name: p.stat().st_mtime_ns for p in labels.glob("*.parquet")} if labels.exists() else {}


def table(out) -> pa.Table:
    return pa.concat_tables([pq.read_table(p) for p in sorted((out / "labels").glob("*.parquet"))])


def test_sigkill_then_rerun_equals_clean_run(tiny_model, tmp_path, prefect_api):
    corpus = write_corpus(tmp_path / "in.parquet", make_texts(SHARDS * 500, seed=11, max_words=60), row_group_size=500)
    out = tmp_path / "crashed"

    proc = start(corpus, out, tiny_model)
    deadline = time.monotonic() + 300
    while len(finished(out)) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = finished(out)
    assert 2 <= len(before) < SHARDS, "the kill must land part-way for this test to mean anything"
    assert not (out / "manifest.json").exists()

    rerun = start(corpus, out, tiny_model)
    stdout, stderr = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, stderr
    after = finished(out)
    assert len(after) == SHARDS
    assert {name: after[name] for name in before} == before  # finished shards were not redone
    assert not [p for p in (out / "labels").iterdir() if p.name.startswith(".")]  # no temp files left

    clean = tmp_path / "clean"
    done = start(corpus, clean, tiny_model)
    done.communicate(timeout=600)
    assert done.returncode == 0
    crashed, reference = table(out), table(clean)
    ids = crashed["id"].to_pylist()
    assert len(ids) == len(set(ids)) == SHARDS * 500  # every row once
    assert ids == reference["id"].to_pylist()
    assert crashed["emotion"].to_pylist() == reference["emotion"].to_pylist()
