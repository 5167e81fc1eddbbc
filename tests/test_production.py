"""Issue 37: the paths operators run, run as they run them, each with a hard time limit.

Real processes throughout: the `emodraw-batch` and `prefect` console scripts of this environment,
a real Prefect server (the session's, `prefect_api`), real Dask clusters (a `LocalCluster` the
flow starts, or `dask scheduler` + `dask worker` processes). Each test has a pytest-timeout
limit and every wait has a deadline, so that a hang fails in minutes. No timed assertion is
tighter than the promise it checks (exit within 10 s of a signal).

(a) a served schedule with configs/nightly.toml (Dask engine) + `prefect deployment run` -> COMPLETED,
    then SIGTERM mid-run -> the schedule exits within 10 s, its run is Cancelled, the rerun resumes;
(b) `prefect work-pool create` + `prefect deploy --prefect-file configs/prefect.yaml` + `prefect worker
    start` + runs on both engines -> COMPLETED;
(c) the CLI over a mix of odd files exits within seconds of its summary;
(d) SIGTERM / SIGINT to `run` mid-run -> exit within 10 s, no child left, Crashed in Prefect, rerun resumes;
(e) a Dask worker that cannot import the task -> the run fails within 2 minutes with one paragraph.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from zoneinfo import ZoneInfo

import psutil
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import make_texts, wait_for, write_corpus

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
STOP_LIMIT = 10.0  # what systemd, Kubernetes and supervisors give a service after SIGTERM

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="process trees are read from /proc")


def env(**extra: str) -> dict[str, str]:
    """The environment of a user's shell here: offline, the session's Prefect server (PREFECT_API_URL)."""
    return {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200", "PREFECT_LOGGING_LEVEL": "INFO", **extra}


def own_prefect(tmp_path: Path) -> dict[str, str]:
    """As a user runs the CLI without a server: Prefect's temporary one, which the CLI pre-starts."""
    environ = env(PREFECT_HOME=str(tmp_path / "prefect-home"))
    environ.pop("PREFECT_API_URL", None)
    return environ



def tree(proc: subprocess.Popen) -> list[psutil.Process]:
    try:
        return psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def alive(processes: list[psutil.Process]) -> list[str]:
    left = []
    for p in processes:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                left.append(f"{p.pid} {' '.join(p.cmdline())[:120]}")
        except psutil.NoSuchProcess:
            pass
    return left


def stop(proc: subprocess.Popen, signum: int) -> tuple[float, list[str]]:
    """Send `signum`; the seconds until the process exited and its descendants still alive a moment later."""
    children = tree(proc)
    sent = time.monotonic()
    proc.send_signal(signum)
    try:
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    took = time.monotonic() - sent
    time.sleep(1.0)  # a child killed at the parent's exit is reaped by init
    return took, alive(children)


def rows_written(out: Path) -> pa.Table:
    return pa.concat_tables([pq.read_table(p, columns=["id"]) for p in sorted((out / "labels").glob("*.parquet"))])


def assert_all_rows(out: Path, n: int) -> None:
    ids = rows_written(out)["id"].to_pylist()
    assert len(ids) == n and len(set(ids)) == n, (len(ids), len(set(ids)), n)


def flow_run_state(run_id: str) -> str:
    from prefect import get_client

    with get_client(sync_client=True) as client:
        return client.read_flow_run(uuid.UUID(run_id)).state.type.value


def cli_run_state(output: Path) -> str:
    """The state of the latest flow run that wrote `output` (a run started by the CLI)."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterStartTime
    from prefect.client.schemas.sorting import FlowRunSort

    since = dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=1)
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(start_time=FlowRunFilterStartTime(after_=since)),
                                     sort=FlowRunSort.START_TIME_DESC, limit=50)
    mine = [r for r in runs if r.parameters.get("output") == str(output)]
    assert mine, f"no flow run wrote {output}"
    return mine[0].state.type.value


def deployment_run(name: str, *args: str, timeout: int = 300) -> tuple[str, subprocess.CompletedProcess]:
    """`prefect deployment run NAME --watch`, as an operator types it; returns the flow run's id and the result."""
    done = subprocess.run([str(BIN / "prefect"), "deployment", "run", name, *args], env=env(), capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT)
    found = re.search(r"UUID: ([0-9a-f-]{36})", done.stdout)
    assert found, done.stdout + done.stderr
    return found.group(1), done


def big_corpus(folder: Path, files: int = 3, rows: int = 40_000) -> int:
    for i in range(files):
        write_corpus(folder / f"p{i}.parquet", make_texts(rows, seed=20 + i, max_words=12), row_group_size=5_000,
                     start_id=i * rows)
    return files * rows


def labelled_shards(out: Path) -> int:
    return len(list((out / "labels").glob("*.parquet"))) if (out / "labels").exists() else 0


@pytest.mark.timeout(600)
def test_a_served_schedule_with_the_nightly_config_runs_on_dask_and_stops_on_sigterm(prefect_api, tiny_model, tmp_path):
    """(a) + (d) for `schedule`: serve, run a day to COMPLETED, stop a second run with SIGTERM, resume it."""
    name = f"nightly-{uuid.uuid4().hex[:8]}"
    day = dt.datetime.now(dt.timezone.utc).date()  # a run started by hand: {date} is today (UTC)
    write_corpus(tmp_path / "tweets" / day.isoformat() / "a.parquet", make_texts(3_000, seed=4), row_group_size=500)
    log = (tmp_path / "schedule.log").open("w")
    serve = subprocess.Popen(
        [str(BIN / "emodraw-batch"), "schedule", "--name", name, "--cron", "0 2 * * *",
         "--input", str(tmp_path / "tweets" / "{date}" / "*.parquet"), "--output", str(tmp_path / "out" / "{date}"),
         "--config", "configs/nightly.toml", "--model", tiny_model],
        cwd=ROOT, env=env(), stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        from prefect import get_client

        def registered():
            with get_client(sync_client=True) as client:
                try:
                    return client.read_deployment_by_name(f"emodraw-label/{name}")
                except Exception:
                    return None

        wait_for(registered, "the served deployment", 180, poll=0.5)  # asks the Prefect API
        run_id, done = deployment_run(f"emodraw-label/{name}", "--watch", "--watch-timeout", "240")
        assert done.returncode == 0 and flow_run_state(run_id) == "COMPLETED", (done.stdout, (tmp_path / "schedule.log").read_text()[-4000:])
        assert_all_rows(tmp_path / "out" / day.isoformat(), 3_000)

        # A second, larger run, stopped with SIGTERM once its first shard is written.
        big, out = tmp_path / "big", tmp_path / "big-out"
        n = big_corpus(big)
        config = {"model": tiny_model, "shard_rows": 20_000}
        run_id, _ = deployment_run(f"emodraw-label/{name}", "--params", json.dumps(
            {"inputs": [str(big / "*.parquet")], "output": str(out), "config": config}))
        wait_for(lambda: labelled_shards(out) >= 1, "the big run's first shard", 240)
        took, left = stop(serve, signal.SIGTERM)
        assert took <= STOP_LIMIT and not left, (took, left, (tmp_path / "schedule.log").read_text()[-3000:])
        assert serve.returncode == 128 + signal.SIGTERM
        assert flow_run_state(run_id) in ("CANCELLED", "CRASHED"), (took, (tmp_path / "schedule.log").read_text()[-3000:])
        assert labelled_shards(out) < n // 20_000  # stopped mid-run, not after it
    finally:
        if serve.poll() is None:
            serve.kill()
        log.close()
    # The same job from the command line labels only the missing shards.
    again = subprocess.run([str(BIN / "emodraw-batch"), "run", str(big / "*.parquet"), "--output", str(out),
                            "--config", "configs/nightly.toml", "--model", tiny_model, "--shard-rows", "20000", "--json",
                            "--no-progress"], cwd=ROOT, env=env(), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads(again.stdout)["resumed"] >= 1
    assert_all_rows(out, n)


@pytest.mark.timeout(600)
def test_a_work_pool_deployment_of_the_shipped_prefect_yaml_completes_on_both_engines(prefect_api, tiny_model, tmp_path):
    """(b) `prefect work-pool create`, `prefect deploy --prefect-file`, `prefect worker start`, two runs."""
    pool, name = f"emodraw-{uuid.uuid4().hex[:8]}", f"nightly-{uuid.uuid4().hex[:8]}"
    tz = "Europe/Berlin"
    yesterday = dt.datetime.now(ZoneInfo(tz)).date() - dt.timedelta(days=1)
    write_corpus(tmp_path / "tweets" / yesterday.isoformat() / "a.parquet", make_texts(3_000, seed=6), row_group_size=500)
    shipped = (ROOT / "configs" / "prefect.yaml").read_text()
    spec = (shipped.replace("/opt/emodraw-batch", str(ROOT)).replace("/data/tweets", str(tmp_path / "tweets"))
            .replace("/data/emotions", str(tmp_path / "out")).replace("/models/albert-base-v2-emotion", tiny_model)
            .replace("name: emodraw\n", f"name: {pool}\n").replace("- name: nightly\n", f"- name: {name}\n"))
    assert spec.count(str(tmp_path)) == 2 and pool in spec and name in spec  # the paths its comments say to edit
    (tmp_path / "prefect.yaml").write_text(spec)
    for cmd in (["work-pool", "create", pool, "--type", "process"],
                ["deploy", "--prefect-file", str(tmp_path / "prefect.yaml"), "--all"]):
        done = subprocess.run([str(BIN / "prefect"), *cmd], cwd=ROOT, env=env(), capture_output=True, text=True, timeout=240)
        assert done.returncode == 0, done.stdout + done.stderr
    log = (tmp_path / "worker.log").open("w")
    worker = subprocess.Popen([str(BIN / "prefect"), "worker", "start", "--pool", pool], cwd=tmp_path,
                              env=env(PREFECT_WORKER_QUERY_SECONDS="2", PREFECT_WORKER_PREFETCH_SECONDS="2"),
                              stdout=log, stderr=subprocess.STDOUT)
    try:
        # The deployment as shipped: configs/nightly.toml, the Dask engine.
        run_id, done = deployment_run(f"emodraw-label/{name}", "--watch", "--watch-timeout", "240")
        assert done.returncode == 0 and flow_run_state(run_id) == "COMPLETED", (tmp_path / "worker.log").read_text()[-4000:]
        assert_all_rows(tmp_path / "out" / yesterday.isoformat(), 3_000)
        # The local engine, into another folder.
        local = tmp_path / "out-local"
        run_id, done = deployment_run(f"emodraw-label/{name}", "--watch", "--watch-timeout", "240", "--params", json.dumps(
            {"output": str(local), "config": {"model": tiny_model, "engine": "local"}}))
        assert done.returncode == 0 and flow_run_state(run_id) == "COMPLETED", (tmp_path / "worker.log").read_text()[-4000:]
        assert_all_rows(local, 3_000)
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
        log.close()


def odd_files(tmp_path: Path) -> list[Path]:
    """The issue's mix: 30 short tweets, and 16 awkward rows."""
    a = write_corpus(tmp_path / "a.parquet", make_texts(30, seed=5, max_words=12))
    odd = ["word " * 3_000, "x" * 20_000, "😀😂🎉", "我今天很高兴，因为天气很好", "أنا سعيد جدا اليوم", "ctrl\x00\x07\x1b text",
           "\u200b\u200b", None, "", "i feel happy", "   ", "tab\tnew\nline", "é" * 50, "ok", "I am so angry today",
           "mixed 😀 text"]
    b = tmp_path / "b.parquet"
    pq.write_table(pa.table({"id": pa.array(range(100, 116), pa.int64()), "text": pa.array(odd, pa.string())}), b)
    return [a, b]


@pytest.mark.timeout(300)
def test_the_cli_exits_within_seconds_of_its_summary(tiny_model, tmp_path):
    """(c) It used to print its summary and wait for ever on idle ONNX Runtime pool threads."""
    out = tmp_path / "out"
    cmd = [str(BIN / "emodraw-batch"), "run", *map(str, odd_files(tmp_path)), "--output", str(out), "--id-column", "id",
           "--model", tiny_model, "--device", "cpu", "--no-progress"]
    proc = subprocess.Popen(cmd, env=own_prefect(tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    summary_at = None
    try:
        for line in proc.stderr:  # the summary ends with the line naming the manifest
            if "manifest:" in line:
                summary_at = time.monotonic()
                break
        assert summary_at is not None, "no summary"
        proc.wait(timeout=60)
        exited = time.monotonic() - summary_at
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0 and exited < 10, exited
    assert_all_rows(out, 46)


def test_closing_the_cached_classifiers_ends_their_onnx_threads(tiny_model):
    """(c)'s cause: a classifier made in a non-daemon thread (here the main one) keeps ONNX Runtime's idle pool
    threads, which a join waits on for ever; the per-process cache, their owner, closes them."""
    import threading

    from emodraw_batch.inference import classifier

    classifier.clear_cache()
    clf = classifier.cached_classifier(model=tiny_model, device="cpu", precision="fp32", runtime="onnx")
    assert clf.runtime == "onnx" and clf(["i feel happy", "so angry today", "a third text here"]).probs.shape[0] == 3
    pool = [t for t in threading.enumerate() if t.name.startswith("emodraw-onnx") and not t.daemon]
    assert pool  # the threads that used to hold the CLI after its summary
    classifier.clear_cache()
    for thread in pool:
        thread.join(10)
    assert not [t.name for t in pool if t.is_alive()]


@pytest.mark.timeout(420)
@pytest.mark.parametrize("signum, engine", [(signal.SIGTERM, "local"), (signal.SIGINT, "dask")])
def test_a_signal_stops_a_run_within_10_s_and_the_rerun_resumes(prefect_api, tiny_model, tmp_path, signum, engine):
    """(d) for `run`: exit within 10 s, no process left, the flow run Crashed in Prefect, nothing lost on the rerun."""
    big, out = tmp_path / "big", tmp_path / "out"
    n = big_corpus(big)
    cmd = [str(BIN / "emodraw-batch"), "run", str(big), "--output", str(out), "--model", tiny_model, "--device", "cpu",
           "--shard-rows", "20000", "--engine", engine, "--no-progress"]
    proc = subprocess.Popen(cmd, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: labelled_shards(out) >= 1, "the first shard", 240)
        took, left = stop(proc, signum)
    finally:
        if proc.poll() is None:
            proc.kill()
    stderr = proc.stderr.read()
    assert took <= STOP_LIMIT and not left, (took, left, stderr[-3000:])
    assert proc.returncode == 128 + signum and f"stopped by {signal.Signals(signum).name}" in stderr, stderr[-3000:]
    assert labelled_shards(out) < n // 20_000  # stopped mid-run
    assert cli_run_state(out) == "CRASHED"
    again = subprocess.run([*cmd[:-1], "--json", "--no-progress"], env=env(), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads(again.stdout)["resumed"] >= 1
    assert_all_rows(out, n)


@contextlib.contextmanager
def dask_cluster(tmp_path: Path, worker_env: dict[str, str] | None = None) -> Iterator[str]:
    """`dask scheduler` and one `dask worker`, as an operator starts them (in their own folder); yields the address."""
    folder = tmp_path / "cluster"
    folder.mkdir()
    scheduler_file = folder / "scheduler.json"
    procs = [subprocess.Popen([str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                               "--scheduler-file", str(scheduler_file)], cwd=folder, env=env(),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        address = wait_for(lambda: scheduler_file.exists() and json.loads(scheduler_file.read_text() or "{}").get("address"),
                           "the scheduler", 120)
        procs.append(subprocess.Popen([str(BIN / "dask"), "worker", address, "--nworkers", "1", "--nthreads", "1",
                                       "--no-dashboard"], cwd=folder, env=env(**(worker_env or {})),
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        yield address
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


SHADOW = 'raise ImportError("emodraw_flows is not installed on this worker (a test stand-in)")\n'


@pytest.mark.timeout(300)
def test_a_dask_worker_that_cannot_import_the_task_fails_the_run_with_one_paragraph(tiny_model, tmp_path):
    """(e) The worker dies unpickling the shard task; the run used to wait for ever for a new one."""
    shadow = tmp_path / "shadow" / "emodraw_flows"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text(SHADOW)
    corpus = write_corpus(tmp_path / "in.parquet", make_texts(500, seed=8))
    (tmp_path / "run.toml").write_text("[run]\nworkerless_timeout = 15\n")
    with dask_cluster(tmp_path, {"PYTHONPATH": str(shadow.parent)}) as address:
        started = time.monotonic()
        done = subprocess.run([str(BIN / "emodraw-batch"), "run", str(corpus), "--output", str(tmp_path / "out"),
                               "--model", tiny_model, "--device", "cpu", "--engine", "dask", "--address", address,
                               "--config", str(tmp_path / "run.toml"), "--no-progress"],
                              env=own_prefect(tmp_path), capture_output=True, text=True, timeout=240)
        took = time.monotonic() - started
    assert done.returncode == 1 and took < 120, (took, done.stderr[-3000:])
    error = done.stderr[done.stderr.index("error:"):]
    assert "no workers for 15 s" in error and "install the same emodraw-batch on every worker" in error, error
    assert "Traceback" not in done.stderr, done.stderr[-3000:]


LOAD_BY_FILE = """
import json, sys
from prefect.flows import load_flow_from_entrypoint
flow = load_flow_from_entrypoint("emodraw_flows/label.py:label_corpus")  # as a deployment with a file path loads it
summary = flow([sys.argv[1]], sys.argv[2], {"model": sys.argv[3], "engine": "dask", "address": sys.argv[4],
                                           "device": "cpu", "shard_rows": 500, "workerless_timeout": 15})
print(json.dumps({"rows": summary["rows"], "module": flow.fn.__module__}))
"""


@pytest.mark.timeout(300)
def test_the_flow_loaded_from_its_file_runs_its_shards_on_dask_workers(prefect_api, tiny_model, tmp_path):
    """The cause of (a) and (b): loaded by file path, the flow's module is not `emodraw_flows.label` but `label`;
    its shard task used to be pickled under that stand-alone module, and every Dask worker died importing it
    (a worker started elsewhere, as on a cluster, has no `label` module to import)."""
    corpus = write_corpus(tmp_path / "in.parquet", make_texts(1_500, seed=9), row_group_size=250)
    with dask_cluster(tmp_path) as address:
        done = subprocess.run([sys.executable, "-c", LOAD_BY_FILE, str(corpus), str(tmp_path / "out"), tiny_model, address],
                              cwd=ROOT, env=env(), capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"rows": 1_500, "module": "emodraw_flows.label"}  # the package's flow, though loaded from the file
    assert_all_rows(tmp_path / "out", 1_500)
