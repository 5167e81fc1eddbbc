"""The CLI's start-up path (issue #14): the pre-started Prefect server, the fast exit, advice said once.

Each test runs the real `emodraw-batch run` in a subprocess through a small driver that
records, from inside the CLI process, what a test cannot see from outside: the pid of the
pre-started Prefect server, which heavy modules were imported, and whether Prefect had been
imported when the precision advice was printed. No timings: bench/startup.py measures those.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import psutil
import pytest
from conftest import labels, make_texts, write_corpus

AVX2_FLAGS = ["fpu", "sse", "sse4_2", "avx", "avx2", "fma"]  # the CPU kind without native bf16

DRIVER = r"""
import atexit, json, sys

record = {"advice_before_prefect": []}
atexit.register(lambda: print("RECORD " + json.dumps(record), file=sys.stderr, flush=True))  # runs last

flags = json.loads(sys.argv[1])
if flags:
    import emodraw_batch.inference.device as device
    device.cpu_flags = lambda _=None: set(flags)

import emodraw_flows.api as api
prestart = api.prestart
def recorded_prestart():
    prestart()
    record["server_pid"] = api._server.pid if api._server is not None else None
api.prestart = recorded_prestart

import emodraw_cli.app as app
say = app.err.print
def recorded_print(*args, **kwargs):
    if "warning:" in str(args[0]):
        record["advice_before_prefect"].append("prefect" not in sys.modules)
    say(*args, **kwargs)
app.err.print = recorded_print

def modules():
    record["imported"] = sorted(m for m in ("torch", "transformers") if m in sys.modules)
atexit.register(modules)

sys.argv = ["emodraw-batch", *sys.argv[2:]]
app.main()
"""


def drive(*args: str, flags: list[str] | None = None, api_url: bool = True) -> tuple[subprocess.CompletedProcess, dict]:
    """Run `emodraw-batch ARGS` through the driver; returns the process and what the driver recorded."""
    env = {**os.environ, "COLUMNS": "200"}
    if not api_url:
        env.pop("PREFECT_API_URL", None)  # no configured API: the CLI pre-starts Prefect's temporary server
    result = subprocess.run(
        [sys.executable, "-c", DRIVER, json.dumps(flags or []), *args],
        capture_output=True, text=True, env=env, timeout=600,
    )
    lines = [line for line in result.stderr.splitlines() if line.startswith("RECORD ")]
    assert lines, result.stderr
    return result, json.loads(lines[-1].removeprefix("RECORD "))


def assert_gone(pid: int) -> None:
    """The process has exited (it may linger a moment as a zombie of a parent that is gone)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return
        except psutil.NoSuchProcess:
            return
        time.sleep(0.1)
    raise AssertionError(f"the pre-started Prefect server (pid {pid}) is still running")


def test_bf16_on_a_cpu_without_it_is_said_once_before_prefect_starts(tiny_model, tmp_path, prefect_api):
    corpus = write_corpus(tmp_path / "in.parquet", make_texts(30, seed=4))
    out = tmp_path / "out"
    result, record = drive("run", str(corpus), "-o", str(out), "--model", tiny_model, "--device", "cpu",
                           "--precision", "bf16", "--json", flags=AVX2_FLAGS)
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("slower than fp32") == 1, result.stderr  # not again when the model loads
    assert "--precision fast" in result.stderr and "--precision fp32" in result.stderr  # the fix
    assert record["advice_before_prefect"] == [True]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model"]["precision"] == "bf16" and manifest["summary"]["rows"] == 30  # warned, not refused


def test_no_advice_where_bf16_is_native(tiny_model, tmp_path, prefect_api):
    corpus = write_corpus(tmp_path / "in.parquet", make_texts(5, seed=4))
    result, record = drive("run", str(corpus), "-o", str(tmp_path / "out"), "--model", tiny_model, "--device", "cpu",
                           "--precision", "bf16", "--json", flags=["avx2", "avx512f", "avx512_bf16"])
    assert result.returncode == 0, result.stderr
    assert "warning" not in result.stderr and record["advice_before_prefect"] == []


@pytest.mark.parametrize(
    ("flags", "needles"),
    [
        (["--runtime", "onnx", "--precision", "int8"], ["--runtime onnx runs fp32 only", "--runtime torch"]),
        (["--runtime", "tensorrt"], ["runtime", "tensorrt"]),
    ],
    ids=["onnx-int8", "unknown-runtime"],
)
def test_a_runtime_that_cannot_run_is_refused_before_anything_starts(flags, needles, tiny_model, tmp_path):
    corpus = write_corpus(tmp_path / "in.parquet", make_texts(5))
    out = tmp_path / "out"
    result, record = drive("run", str(corpus), "-o", str(out), "--model", tiny_model, "--device", "cpu", *flags,
                           api_url=False)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    message = next(line for line in result.stderr.splitlines() if line.startswith("error:"))
    assert all(n in message for n in needles), message
    assert not out.exists()  # nothing written
    assert record["imported"] == [] or "transformers" not in record["imported"]  # no model was loaded
    assert record["server_pid"] is not None  # a server was pre-started ...
    assert_gone(record["server_pid"])  # ... and stopped with the CLI


def test_an_input_error_leaves_no_server_and_keeps_its_exit_code(tmp_path):
    result, record = drive("run", str(tmp_path / "missing.parquet"), "-o", str(tmp_path / "out"), api_url=False)
    assert result.returncode == 1
    assert "missing.parquet" in result.stderr and "Traceback" not in result.stderr
    assert record["server_pid"] is not None
    assert_gone(record["server_pid"])
    usage, _ = drive("run", api_url=False)  # a usage error keeps typer's exit code
    assert usage.returncode == 2


def test_a_run_on_the_prestarted_server_then_a_rerun_without_torch(tiny_model, tmp_path):
    """No PREFECT_API_URL: the CLI's own pre-started server serves the flow, and is gone after the run.

    The second run of the same checkpoint (new output) loads the cached ONNX export: it labels
    alike without importing torch or transformers at all.
    """
    if os.path.exists("/dev/nvidia0"):
        pytest.skip("device auto asks torch for a GPU on a machine with one")
    corpus = write_corpus(tmp_path / "in.parquet", make_texts(40, seed=6))
    first, record = drive("run", str(corpus), "-o", str(tmp_path / "a"), "--model", tiny_model, "--json",
                          api_url=False)
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["rows"] == 40
    assert record["server_pid"] is not None
    assert_gone(record["server_pid"])
    second, record = drive("run", str(corpus), "-o", str(tmp_path / "b"), "--model", tiny_model, "--json",
                           api_url=False)
    assert second.returncode == 0, second.stderr
    assert record["imported"] == []
    third, record = drive("run", str(corpus), "-o", str(tmp_path / "c"), "--model", tiny_model, "--json",
                          "--device", "cpu", api_url=False)
    assert third.returncode == 0, third.stderr
    assert record["imported"] == []  # --device cpu needs no torch either
    a, b = labels(tmp_path / "a"), labels(tmp_path / "b")
    assert a["emotion"].to_pylist() == b["emotion"].to_pylist()
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert manifest["model"]["runtime"] == "onnx" and manifest["model"]["precision"] == "fp32"


def test_a_head_start_gives_forward_the_same_result_with_fewer_batches(tiny_model, monkeypatch):
    """EmotionClassifier.head_start runs forward's own batches; forward reuses them only for the same ids."""
    import numpy as np

    from emodraw_batch.inference.classifier import EmotionClassifier

    clf = EmotionClassifier(tiny_model, device="cpu", precision="fp32", batch_tokens=256)
    ids, _ = clf.encode(make_texts(120, seed=11))
    expected = clf.forward(ids)
    calls = []
    run_batch = clf.backend.run
    monkeypatch.setattr(clf.backend, "run", lambda *a: calls.append(1) or run_batch(*a))
    total = sum(1 for _ in clf.batcher.batches(ids))
    assert total > 4
    ran = clf.head_start(ids, stop=lambda: len(calls) >= 3)
    assert ran == 3
    np.testing.assert_array_equal(clf.forward(ids), expected)  # exactly: the same batches, the same kernels
    assert len(calls) == total  # 3 ahead + the rest, none twice
    calls.clear()
    clf.head_start(ids, stop=lambda: False)
    other, _ = clf.encode(make_texts(50, seed=12))
    np.testing.assert_array_equal(clf.forward(other), EmotionClassifier.forward(clf, other))  # not these ids: ignored
    calls.clear()
    np.testing.assert_array_equal(clf.forward(ids), expected)
    assert len(calls) == total  # the head start was dropped by the forward of other ids: all run again


def test_a_head_start_behind_goes_on_until_the_first_submit_takes_it(tiny_model, monkeypatch):
    """head_start_behind runs forward's batches in a thread; the next forward stops it and runs only the rest."""
    import threading

    import numpy as np

    from emodraw_batch.inference.classifier import EmotionClassifier

    clf = EmotionClassifier(tiny_model, device="cpu", precision="fp32", batch_tokens=256)
    ids, _ = clf.encode(make_texts(120, seed=11))
    expected = clf.forward(ids)
    total = sum(1 for _ in clf.batcher.batches(ids))
    calls, second = [], threading.Event()
    run_batch = clf.backend.run

    def counted(*args):
        calls.append(threading.current_thread().name)
        if len(calls) == 2:
            second.set()
        return run_batch(*args)

    monkeypatch.setattr(clf.backend, "run", counted)
    clf.head_start_behind(lambda: ids)
    assert second.wait(30)  # the thread is working through the batches
    np.testing.assert_array_equal(clf.forward(ids), expected)  # stops the thread, takes its batches, runs the rest
    assert len(calls) == total  # every batch once: none lost, none run twice
    assert calls.count("emodraw-head-start") >= 2 and clf.ahead._behind is None and clf.ahead._done is None

    def unreadable():
        raise OSError("damaged row group")

    clf.head_start_behind(unreadable)  # an error only ends the head start
    clf.end_head_start()
    calls.clear()
    np.testing.assert_array_equal(clf.forward(ids), expected)
    assert len(calls) == total


def test_a_run_after_a_head_start_writes_the_same_labels(tiny_model, tmp_path, monkeypatch):
    from emodraw_batch.inference import classifier as model
    from emodraw_batch.job import runner
    from emodraw_batch.config import RunConfig
    from emodraw_batch.job.validate import validate

    corpus = write_corpus(tmp_path / "in.parquet", make_texts(300, seed=13), row_group_size=50)
    config = RunConfig(model=tiny_model, device="cpu", precision="fp32", batch_tokens=256, shard_rows=100, window_rows=60)
    plain = runner.run([str(corpus)], tmp_path / "plain", config)
    model.clear_cache()
    job = validate([str(corpus)], tmp_path / "ahead", config)
    clf = runner.head_start_behind(job)
    # The shards' classifier: the settings with precision and runtime resolved once (Job.resolved, Plan.config).
    assert clf is runner.classifier_for(job.resolved)
    clf.ahead._behind[1].join(60)  # let it run the whole first window (nothing stops it here)
    assert clf.ahead._done is not None and len(clf.ahead._done[1]) > 0
    ahead = runner.run([str(corpus)], tmp_path / "ahead", config)
    assert runner.classifier_for(job.resolved).ahead._done is None  # taken by the first shard's first window
    assert ahead.rows == plain.rows == 300
    assert labels(tmp_path / "ahead").select(["id", "emotion"]).equals(labels(tmp_path / "plain").select(["id", "emotion"]))
    import numpy as np

    for name in ("prob_" + label for label in runner.classifier_for(job.resolved).labels):
        np.testing.assert_array_equal(labels(tmp_path / "ahead")[name].to_numpy(), labels(tmp_path / "plain")[name].to_numpy())
    model.clear_cache()


def test_a_head_start_that_fails_is_only_skipped(tiny_model, tmp_path, monkeypatch):
    """An unreadable first window ends the head start quietly; the shard's task meets the error and reports it."""
    from emodraw_batch.inference import classifier as model
    from emodraw_batch.job import runner
    from emodraw_batch.config import RunConfig
    from emodraw_batch.job.validate import validate

    corpus = write_corpus(tmp_path / "in.parquet", make_texts(40, seed=14))
    config = RunConfig(model=tiny_model, device="cpu", precision="fp32")
    job = validate([str(corpus)], tmp_path / "out", config)

    def damaged(*args, **kwargs):
        raise OSError("damaged row group")

    monkeypatch.setattr(runner, "read_windows", damaged)
    clf = runner.head_start_behind(job)
    clf.ahead._behind[1].join(60)
    assert clf.ahead._done is None  # nothing ran, and nothing was raised
    monkeypatch.undo()
    assert runner.run([str(corpus)], tmp_path / "out", config).rows == 40
    model.clear_cache()
