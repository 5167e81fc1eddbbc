"""The Prefect flow behind `emodraw-batch run`: engines, Dask workers, retries, failure and resume.

Everything runs against one session-wide Prefect test server (the `prefect_api` fixture),
so the tests also check what lands in Prefect's run history.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

import emodraw_flows  # noqa: F401  (Prefect defaults before Prefect is imported)
from conftest import assert_same_labels, labels, make_texts, write_corpus
from emodraw_cli.app import app
from emodraw_batch.config import load_config
from emodraw_batch.errors import ConfigError
from emodraw_flows import api, engines
from emodraw_flows.settings import load_settings

cli = CliRunner()


# ---------------------------------------------------------------- engine selection (no Prefect)

CPU_BOX = engines.Machine(cpus=16, gpus=0, dask_cuda=False)
GPU_BOX = engines.Machine(cpus=32, gpus=4, dask_cuda=True)


def test_cpu_machine_gets_cpu_worker_processes_sharing_the_cores():
    spec = engines.local_cluster(None, "auto", CPU_BOX)
    assert spec.cluster_class == "distributed.LocalCluster"
    assert spec.kwargs["processes"] is True and spec.kwargs["threads_per_worker"] == 1
    # Default: one worker per CPU_THREADS_PER_WORKER cores, each with its share of torch threads.
    assert spec.workers == 16 // engines.CPU_THREADS_PER_WORKER
    assert int(spec.kwargs["env"]["OMP_NUM_THREADS"]) * spec.workers == 16
    two = engines.local_cluster(2, "cpu", CPU_BOX)
    assert two.workers == 2 and two.kwargs["env"]["OMP_NUM_THREADS"] == "8"


def test_gpu_machine_gets_one_pinned_worker_per_gpu():
    spec = engines.local_cluster(None, "auto", GPU_BOX)
    assert spec.cluster_class == "dask_cuda.LocalCUDACluster"
    assert spec.workers == 4 and spec.kwargs["threads_per_worker"] == 1
    assert engines.local_cluster(2, "cuda", GPU_BOX).workers == 2  # the first two GPUs
    # --device cpu keeps a GPU machine on CPU workers.
    assert engines.local_cluster(2, "cpu", GPU_BOX).cluster_class == "distributed.LocalCluster"


@pytest.mark.parametrize(
    ("workers", "device", "machine", "words"),
    [
        (5, "auto", GPU_BOX, "--workers 5"),  # more workers than GPUs
        (None, "auto", engines.Machine(8, 2, dask_cuda=False), "dask-cuda"),  # GPUs but no dask-cuda
        (None, "cuda", CPU_BOX, "no CUDA GPU"),
    ],
)
def test_impossible_local_clusters_are_config_errors(workers, device, machine, words):
    with pytest.raises(ConfigError, match=words):
        engines.local_cluster(workers, device, machine)


@pytest.mark.parametrize(
    ("settings", "words"),
    [
        ({"workers": 2}, "needs --engine dask"),
        ({"address": "tcp://10.0.0.5:8786"}, "--engine dask"),
        ({"engine": "dask", "device": "cuda:1"}, "pinned to its"),
        ({"engine": "dask", "address": "tcp://10.0.0.5:8786", "workers": 3}, "existing cluster"),
        ({"engine": "dask", "address": "10.0.0.5"}, "tcp://"),
    ],
)
def test_engine_settings_are_checked(settings, words):
    with pytest.raises(ConfigError, match=words):
        load_settings(None, **settings)


def test_valid_engine_settings_pass():
    for settings in ({}, {"engine": "dask", "workers": 2}, {"engine": "dask", "address": "tcp://10.0.0.5:8786"}):
        load_settings(None, **settings)


# ---------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """Two files of 150 rows in row groups of 30: with --shard-rows 60 that makes 3 + 3 shards."""
    root = tmp_path_factory.mktemp("corpus")
    write_corpus(root / "a.parquet", make_texts(150, seed=21), row_group_size=30)
    texts = make_texts(150, seed=22)
    texts[5] = ""  # an empty and a null text travel through every engine too
    write_corpus(root / "b.parquet", texts, row_group_size=30, start_id=1000)
    return root


def invoke(*args: str) -> dict:
    result = cli.invoke(app, ["run", *args, "--json", "--no-progress"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])


def final_error(stderr: str) -> str:
    """The CLI's closing error paragraph (Prefect's own log lines, tracebacks included, come before it)."""
    assert "error:" in stderr, stderr
    return " ".join(stderr[stderr.rindex("error:") :].split())


def wait_for(check, timeout: float = 60.0):
    """Poll Prefect's API until `check()` is truthy (task states arrive as events, a moment later)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.5)


def flow_run_for(output: Path):
    """The newest emodraw-label flow run that wrote to `output`, and its task runs."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName, FlowRunFilter, FlowRunFilterId
    from prefect.client.schemas.sorting import FlowRunSort

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=["emodraw-label"])), sort=FlowRunSort.START_TIME_DESC
        )
        run = next(r for r in runs if r.parameters.get("output") == str(output))
        tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id])))
    return run, tasks


# ---------------------------------------------------------------- the flow, end to end


@pytest.fixture(scope="module")
def reference(corpus, tiny_model, tmp_path_factory) -> pa.Table:
    """The same job through the plain in-process runner (no Prefect): what every engine must reproduce."""
    from emodraw_batch.job import runner

    out = tmp_path_factory.mktemp("reference")
    runner.run([str(corpus)], out, load_config(None, model=tiny_model, shard_rows=60, device="cpu"))
    return labels(out)


def test_cli_run_is_a_flow_run_in_prefect_history(prefect_api, corpus, tiny_model, reference, tmp_path):
    from emodraw_batch.inference.classifier import clear_cache

    clear_cache()  # `reference` loaded this model in this process already
    out = tmp_path / "out"
    summary = invoke(str(corpus), "--output", str(out), "--model", tiny_model, "--shard-rows", "60", "--device", "cpu")
    assert summary["rows"] == 300 and summary["outputs"] == 6
    assert_same_labels(labels(out), reference)
    # The local engine: one process, the model loaded once for all six shards.
    assert list(summary["workers"].values()) == [{"shards": 6, "model_loads": 1}]

    def completed():
        run, tasks = flow_run_for(out)
        shard_tasks = [t for t in tasks if t.name.startswith("label part-")]
        return run.state.is_completed() and len(shard_tasks) == 6 and all(t.state.is_completed() for t in shard_tasks)

    assert wait_for(completed), "the run and its six shard tasks should be Completed in Prefect's history"
    run, tasks = flow_run_for(out)
    assert sorted(t.name for t in tasks if t.name.startswith("label ")) == sorted(
        f"label {p.name}" for p in (out / "labels").glob("*.parquet")
    )
    names = {t.name for t in tasks}
    assert any(n.startswith("plan-shards") for n in names) and any(n.startswith("finish") for n in names)


def test_the_flow_reuses_the_job_the_cli_validated(prefect_api, corpus, tiny_model, reference, tmp_path, monkeypatch):
    """The CLI validates (every input footer read) and hands the Job to its flow run, which does not read
    them again; a flow run started without it (a schedule, a direct call) validates itself."""
    import emodraw_flows.label
    from emodraw_batch.inference.classifier import clear_cache

    calls = []
    validate = emodraw_flows.label.validate
    monkeypatch.setattr(emodraw_flows.label, "validate", lambda *a, **k: calls.append(a) or validate(*a, **k))
    clear_cache()
    summary = invoke(str(corpus), "--output", str(tmp_path / "cli"), "--model", tiny_model, "--shard-rows", "60",
                     "--device", "cpu")
    assert summary["rows"] == 300 and calls == []
    assert_same_labels(labels(tmp_path / "cli"), reference)
    config = {"model": tiny_model, "shard_rows": 60, "device": "cpu"}
    direct = emodraw_flows.label.label_corpus([str(corpus)], str(tmp_path / "direct"), config)
    assert direct["rows"] == 300 and len(calls) == 1
    assert_same_labels(labels(tmp_path / "direct"), reference)


def test_two_dask_workers_give_the_same_output_and_load_the_model_once_each(
    prefect_api, corpus, tiny_model, reference, tmp_path, monkeypatch, capfd
):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    out = tmp_path / "dask"
    # No PREFECT_API_URL: the run takes Prefect's temporary server of this process (here the test
    # server, registered as that instance) and must hand it to the worker processes.
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.setattr(api, "prestart", lambda: None)  # else the CLI's own pre-started server would be that one
    monkeypatch.setenv("PREFECT_LOGGING_LEVEL", "INFO")  # the workers' log shows any server they start
    capfd.readouterr()
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        summary = invoke(
            str(corpus), "--output", str(out), "--model", tiny_model, "--shard-rows", "60", "--device", "cpu",
            "--engine", "dask", "--workers", "2",
        )
    assert summary["rows"] == 300 and summary["outputs"] == 6
    assert_same_labels(labels(out), reference)
    workers = summary["workers"]
    assert 1 <= len(workers) <= 2
    assert sum(w["shards"] for w in workers.values()) == 6
    # Six shards over at most two processes, each process loaded the checkpoint exactly once.
    assert all(w["model_loads"] == 1 for w in workers.values()), workers
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["engine"]["engine"] == "dask" and manifest["summary"]["rows"] == 300
    # The worker processes (their output is inherited, so captured here) started no server of their own.
    assert "Starting temporary server" not in capfd.readouterr().err

    def shards_recorded():  # the workers reported their task runs to the run's server
        run, tasks = flow_run_for(out)
        done = [t for t in tasks if t.name.startswith("label part-") and t.state.is_completed()]
        return run.state.is_completed() and len(done) == 6

    assert wait_for(shards_recorded), "the six shard tasks run on the workers should be in the run's history"


# ---------------------------------------------------------------- retries, failure, resume


@pytest.fixture
def flaky(monkeypatch):
    """Make runner.label_shard fail for chosen shards (in this process: the local engine).

    `fail[name] = n` fails its first n attempts with a RuntimeError; `fail[name] = exc` always raises exc.
    """
    from emodraw_batch.job import runner

    real = runner.label_shard
    fail: dict[str, int | Exception] = {}
    attempts: dict[str, int] = {}

    def label_shard(shard, *args, **kwargs):
        attempts[shard.name] = attempts.get(shard.name, 0) + 1
        rule = fail.get(shard.name, 0)
        if isinstance(rule, Exception):
            raise rule
        if attempts[shard.name] <= rule:
            raise RuntimeError(f"worker lost while labelling {shard.name}")
        return real(shard, *args, **kwargs)

    monkeypatch.setattr(runner, "label_shard", label_shard)
    return fail, attempts


@pytest.fixture
def fast_retry(tmp_path) -> Path:
    """A config with one retry and no delay between attempts."""
    path = tmp_path / "fast-retry.toml"
    path.write_text("retries = 1\nretry_delay = 0\n")
    return path


def test_a_transient_shard_failure_is_retried(prefect_api, corpus, tiny_model, reference, flaky, fast_retry, tmp_path):
    fail, attempts = flaky
    fail["part-00000-00002.parquet"] = 1
    out = tmp_path / "out"
    summary = invoke(
        str(corpus), "--output", str(out), "--model", tiny_model, "--shard-rows", "60", "--device", "cpu",
        "--config", str(fast_retry),
    )
    assert attempts["part-00000-00002.parquet"] == 2 and attempts["part-00000-00000.parquet"] == 1
    assert summary["rows"] == 300
    assert_same_labels(labels(out), reference)


def test_a_shard_that_keeps_failing_fails_the_run_loudly_and_a_rerun_resumes(
    prefect_api, corpus, tiny_model, reference, flaky, fast_retry, tmp_path
):
    fail, attempts = flaky
    bad = "part-00001-00000.parquet"
    fail[bad] = 99
    out = tmp_path / "out"
    args = ["run", str(corpus), "--output", str(out), "--model", tiny_model, "--shard-rows", "60", "--device", "cpu"]
    result = cli.invoke(app, [*args, "--config", str(fast_retry), "--no-progress"])
    assert result.exit_code == 1
    message = final_error(result.stderr)
    assert bad in message and "b.parquet" in message and "after 2 attempt(s)" in message and "Traceback" not in message
    assert attempts[bad] == 2  # 1 + retries
    # The other five shards are complete on disk; there is no manifest for an incomplete run.
    assert sorted(p.name for p in (out / "labels").glob("*.parquet")) == sorted(
        n for n in attempts if n != bad
    ) and len(attempts) == 6
    assert not (out / "manifest.json").exists()
    assert wait_for(lambda: flow_run_for(out)[0].state.is_failed()), "the flow run should be Failed in Prefect"

    fail.clear()
    attempts.clear()
    summary = invoke(*args[1:])
    assert list(attempts) == [bad]  # only the missing shard ran again
    assert summary["resumed"] == 5 and summary["rows"] == 300
    assert_same_labels(labels(out), reference)


def run_with_failing_shard(corpus, tiny_model, flaky, tmp_path, error: BaseException, *options: str):
    """`emodraw-batch run` in 5 shards whose first one raises `error`; (the result, attempts per shard)."""
    fail, attempts = flaky
    fail["part-00000-00000.parquet"] = error
    args = [str(corpus), "--output", str(tmp_path / "out"), "--model", tiny_model, "--shard-rows", "60"]
    return cli.invoke(app, ["run", *args, "--device", "cpu", "--no-progress", *options]), attempts


def test_a_model_error_is_not_retried_and_stops_the_run(prefect_api, corpus, tiny_model, flaky, tmp_path):
    from emodraw_batch.errors import ModelError

    broken = ModelError("Could not load the checkpoint folder 'x': broken weights")
    result, attempts = run_with_failing_shard(corpus, tiny_model, flaky, tmp_path, broken, "--retries", "3")
    assert result.exit_code == 1
    message = final_error(result.stderr)
    assert "broken weights" in message and "Traceback" not in message
    # The paragraph only: Prefect's logs of the same error, with its traceback, stay in Prefect. (Counted by
    # the error's own words: in-process, the tasks cancelled after it may make `logging` report a write to
    # an earlier CliRunner's closed stream, a traceback of the harness, not of the run.)
    assert result.stderr.count("broken weights") == 1 and "Encountered exception" not in result.stderr, result.stderr
    # Retrying cannot fix the model, and every other shard would fail the same way.
    assert attempts["part-00000-00000.parquet"] == 1 and len(attempts) < 6


@pytest.mark.parametrize("verbose", [False, True])
def test_an_environment_error_is_one_paragraph_unless_verbose(prefect_api, corpus, tiny_model, flaky, fast_retry,
                                                               tmp_path, verbose):
    full = OSError(28, "No space left on device")
    result, _ = run_with_failing_shard(corpus, tiny_model, flaky, tmp_path, full, "--config", str(fast_retry),
                                       *(["--verbose"] if verbose else []))
    assert result.exit_code == 1
    assert "No space left on device" in final_error(result.stderr)
    # Prefect's logs of it (messages and traceback), on the terminal only if asked; the paragraph always.
    assert (result.stderr.count("No space left on device") > 1) is verbose, result.stderr
    if verbose:
        assert "Traceback" in result.stderr, result.stderr


def test_an_unexpected_exception_keeps_its_traceback(prefect_api, corpus, tiny_model, flaky, tmp_path):
    result, _ = run_with_failing_shard(corpus, tiny_model, flaky, tmp_path, KeyError("a bug"), "--retries", "0")
    assert result.exit_code == 1
    assert "Traceback" in result.stderr and "KeyError" in result.stderr  # a bug is shown, not hidden


def test_input_errors_appear_before_prefect_starts(corpus, tiny_model, tmp_path, monkeypatch):
    import emodraw_flows.run

    def no_prefect(*args, **kwargs):
        raise AssertionError("the flow must not start when the inputs are invalid")

    monkeypatch.setattr(emodraw_flows.run, "run", no_prefect)
    result = cli.invoke(
        app, ["run", str(corpus), "--output", str(tmp_path / "o"), "--model", tiny_model, "--text-column", "body"]
    )
    assert result.exit_code == 1
    assert "has no text column 'body'" in final_error(result.stderr)
    bad = cli.invoke(app, ["run", str(corpus), "--output", str(tmp_path / "o"), "--engine", "spark"])
    assert bad.exit_code == 1 and "engine" in bad.stderr
