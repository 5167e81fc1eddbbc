"""A real Dask cluster: `dask scheduler` and two `dask worker` processes on 127.0.0.1, each in its
own working directory, and `emodraw-batch run --engine dask --address ...` against them.

The output must equal the local engine's; with one worker killed by SIGKILL in the middle of a
shard, the run still completes with every row once, the same labels and no temporary file left.
With the CLI killed while its task runs on the cluster, that task publishes nothing into the
rerun's output (files/guard.py).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import pyarrow.parquet as pq

from conftest import assert_same_labels, labels, make_texts, write_corpus
from emodraw_batch.config import load_config
from emodraw_batch.files.writer import read_metadata
from emodraw_batch.job.runner import run

DASK = str(Path(sys.executable).with_name("dask"))
TEMP = re.compile(r"^\.part-.*\.(\d+)\.[0-9a-f]+\.tmp$")  # a shard being written: .NAME.HOST.PID.RANDOM.tmp


def _wait(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not (value := check()):
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.02)
    return value


@pytest.fixture
def cluster(tmp_path, prefect_api):
    """A scheduler and two single-threaded workers without nannies (a killed worker stays dead)."""
    yield from _cluster(tmp_path, prefect_api, 2)


# Preloaded into a worker: its first shard task waits, once the model is loaded, until the test
# says go (a handshake through files, no sleeps), and says when it has ended and how.
HOLD = """
import os, pathlib, time
from emodraw_batch.job import runner

hold = pathlib.Path(os.environ["EMODRAW_TEST_HOLD"])


def install(real):
    def label_shard(shard, *args, **kwargs):
        if (hold / "held").exists():
            return real(shard, *args, **kwargs)
        (hold / "held").write_text(shard.name)
        while not (hold / "go").exists():
            time.sleep(0.02)
        try:
            result = real(shard, *args, **kwargs)
            (hold / "ended").write_text("published")
            return result
        except BaseException as exc:
            (hold / "ended").write_text(type(exc).__name__)
            raise

    label_shard.holds = True
    return label_shard


if not getattr(runner.label_shard, "holds", False):  # the worker may run its preload file more than once
    runner.label_shard = install(runner.label_shard)
"""


@pytest.fixture
def held_worker(tmp_path, prefect_api):
    """A scheduler and one worker whose first shard task waits for tmp_path/hold/go (HOLD)."""
    hold = tmp_path / "hold"
    hold.mkdir()
    (tmp_path / "hold_shard.py").write_text(HOLD)
    extra = {"EMODRAW_TEST_HOLD": str(hold)}
    address, _ = next(gen := _cluster(tmp_path, prefect_api, 1, extra, "--preload", str(tmp_path / "hold_shard.py")))
    try:
        yield address, hold
    finally:
        gen.close()


def _cluster(tmp_path: Path, prefect_api: str, n: int, extra_env: dict | None = None, *worker_args: str):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PREFECT_API_URL": prefect_api, **(extra_env or {})}
    info = tmp_path / "scheduler.json"
    procs = []

    def start(name: str, *args: str) -> subprocess.Popen:
        cwd = tmp_path / name
        cwd.mkdir()
        log = open(cwd / "log.txt", "w")
        procs.append(subprocess.Popen([DASK, *args], cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT))
        return procs[-1]

    start("scheduler", "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard", "--scheduler-file", str(info))
    try:
        address = _wait(lambda: info.exists() and json.loads(info.read_text() or "{}").get("address"), 120, "scheduler")
        workers = [
            start(f"worker{i}", "worker", address, "--nthreads", "1", "--no-nanny", "--no-dashboard",
                  "--name", f"w{i}", "--local-directory", str(tmp_path / f"worker{i}"), *worker_args)
            for i in range(n)
        ]
        from distributed import Client

        with Client(address, timeout=60) as client:
            client.wait_for_workers(n, timeout=180)
        yield address, workers
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def _cli_run(corpus: Path, out: Path, model: str, address: str, shard_rows: int) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "emodraw_cli.app", "run", str(corpus), "--output", str(out), "--model", model,
           "--device", "cpu", "--shard-rows", str(shard_rows), "--engine", "dask", "--address", address,
           "--retries", "0", "--json", "--no-progress"]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _summary(proc: subprocess.Popen) -> dict:
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr[-3000:]
    return json.loads(stdout.strip().splitlines()[-1])


def _reference(corpus: Path, out: Path, model: str, shard_rows: int):
    run([str(corpus)], out, load_config(model=model, device="cpu", shard_rows=shard_rows))
    return labels(out)


def test_an_existing_cluster_gives_the_local_engines_output(cluster, tiny_model, tmp_path):
    address, _ = cluster
    corpus = write_corpus(tmp_path / "in.parquet", make_texts(600, seed=31), row_group_size=100)
    summary = _summary(_cli_run(corpus, tmp_path / "out", tiny_model, address, 200))
    assert summary["rows"] == 600 and summary["outputs"] == 3
    assert sum(w["shards"] for w in summary["workers"].values()) == 3
    assert all(w["model_loads"] == 1 for w in summary["workers"].values())
    assert_same_labels(labels(tmp_path / "out"), _reference(corpus, tmp_path / "ref", tiny_model, 200))


def test_a_worker_killed_mid_shard_loses_and_duplicates_nothing(cluster, tiny_model, tmp_path):
    address, workers = cluster
    # Shards of 6,000 rows take the tiny model a second or more each: long enough to be caught mid-write.
    corpus = write_corpus(tmp_path / "in.parquet", make_texts(36_000, seed=32, max_words=30), row_group_size=6000)
    out = tmp_path / "out"
    proc = _cli_run(corpus, out, tiny_model, address, 6000)

    def writing_pid():
        names = [p.name for p in (out / "labels").glob(".part-*")] if (out / "labels").exists() else []
        pids = {int(m[1]) for m in map(TEMP.match, names) if m} & {w.pid for w in workers}
        return min(pids) if pids else None

    victim = _wait(writing_pid, 300, "a worker writing a shard")
    os.kill(victim, signal.SIGKILL)
    summary = _summary(proc)
    assert summary["rows"] == 36_000 and summary["outputs"] == 6
    # The victim reported no shard: the one it was writing was redone by the surviving worker.
    assert not [w for w in summary["workers"] if w.endswith(f":{victim}")], summary["workers"]
    got = labels(out)
    assert sorted(got["id"].to_pylist()) == list(range(36_000))  # every row once
    assert_same_labels(got, _reference(corpus, tmp_path / "ref", tiny_model, 6000))
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]  # the dead worker's file is gone too



def test_a_task_of_a_killed_run_publishes_nothing_into_the_rerun(held_worker, tiny_model, tmp_path):
    """The CLI dies (SIGKILL) while its shard task runs on the cluster; a rerun with --overwrite and other
    --shard-rows runs meanwhile. The old task, let go, must add nothing to the rerun's output."""
    address, hold = held_worker
    corpus = write_corpus(tmp_path / "in.parquet", make_texts(12_000, seed=33, max_words=30), row_group_size=1000)
    out = tmp_path / "out"
    proc = _cli_run(corpus, out, tiny_model, address, 3000)
    _wait((hold / "held").exists, 300, "the worker starting a shard task")
    proc.kill()  # the run dies; its task on the cluster does not
    proc.wait()
    rerun = run([str(corpus)], out, load_config(model=tiny_model, device="cpu", shard_rows=2000), overwrite=True)
    (hold / "go").touch()
    ended = _wait(lambda: (hold / "ended").exists() and (hold / "ended").read_text(), 300, "the old task")
    planned = sorted(f"part-00000-{start:05d}.parquet" for start in range(0, 12, 2))
    assert sorted(pq.read_table(out / "labels", columns=["id"])["id"].to_pylist()) == list(range(12_000))  # once each
    assert rerun.rows == 12_000 and sorted(p.name for p in (out / "labels").iterdir()) == planned  # nor a temporary file
    assert all(read_metadata(out / "labels" / name)["config"]["shard_rows"] == 2000 for name in planned)
    assert ended == "Superseded"
