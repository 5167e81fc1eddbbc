"""Hardening (issue #22): what an operator sees when runs are killed, raced or installed from a wheel.

Real processes throughout: the CLI in a subprocess, its pre-started Prefect server found with
psutil, a lock held by this test process. No timed assertions: waits poll for a state with a
generous deadline.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from conftest import make_texts, wait_for, write_corpus

from emodraw_batch.files import lock
from emodraw_batch.files.layout import layout

ROOT = Path(__file__).resolve().parents[1]


def cli_env(tmp_path: Path, api_url: bool) -> dict[str, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200", "PYTHONPATH": os.pathsep.join(
        [str(ROOT), os.environ.get("PYTHONPATH", "")])}
    if not api_url:  # no configured API: the CLI pre-starts Prefect's temporary server
        env.pop("PREFECT_API_URL", None)
        env["PREFECT_HOME"] = str(tmp_path / "prefect-home")
    return env



@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's (see emodraw_flows/api.py)")
def test_a_killed_run_takes_its_prefect_server_with_it(tiny_model, tmp_path):
    corpus = write_corpus(tmp_path / "in.parquet", make_texts(2000, seed=3))
    cmd = [sys.executable, "-m", "emodraw_cli.app", "run", str(corpus), "-o", str(tmp_path / "out"), "--model", tiny_model,
           "--device", "cpu", "--no-progress"]
    proc = subprocess.Popen(cmd, env=cli_env(tmp_path, api_url=False), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def server() -> psutil.Process | None:
            for child in psutil.Process(proc.pid).children(recursive=True):
                try:
                    if "prefect.server.api.server:create_app" in " ".join(child.cmdline()):
                        return child
                except psutil.NoSuchProcess:
                    pass
            return None

        found = wait_for(server, "the pre-started Prefect server")
    finally:
        proc.kill()  # SIGKILL: no atexit, no signal handler runs in the CLI
        proc.wait()

    def gone() -> bool:
        try:
            return found.status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    wait_for(gone, f"the server (pid {found.pid}) to end with its parent", seconds=60)


DRIVER = r"""
import sys
import emodraw_batch.files.lock as lock
lock.check = lambda out: None  # as if the other run took the lock just after this one's validation
import emodraw_cli.app as app
sys.argv = ["emodraw-batch", *sys.argv[1:]]
app.main()
"""


def test_a_run_that_finds_the_lock_taken_after_validation_says_one_paragraph(tiny_model, tmp_path, prefect_api):
    corpus = write_corpus(tmp_path / "in.parquet", make_texts(40, seed=5))
    out = tmp_path / "out"
    with lock.held(layout(out)):  # the other run, holding the folder
        result = subprocess.run([sys.executable, "-c", DRIVER, "run", str(corpus), "-o", str(out), "--model", tiny_model,
                                 "--device", "cpu", "--no-progress"],
                                env=cli_env(tmp_path, api_url=True), capture_output=True, text=True, timeout=600)
    assert result.returncode == 1, result.stderr
    assert "is being written by another run" in result.stderr and f"pid {os.getpid()}" in result.stderr
    assert "Traceback" not in result.stderr and "Encountered exception" not in result.stderr, result.stderr
    assert not (out / "labels").exists() and not (out / "run.json").exists()  # nothing planned, nothing written
    # Free again: the same command runs (the lock is re-entrant inside the run: the CLI and its flow both take it).
    again = subprocess.run([sys.executable, "-m", "emodraw_cli.app", "run", str(corpus), "-o", str(out), "--model", tiny_model,
                            "--device", "cpu", "--no-progress", "--json"],
                           env=cli_env(tmp_path, api_url=True), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["rows"] == 40


def test_the_lock_is_reentrant_in_one_process_and_refuses_another(tmp_path):
    out = layout(tmp_path / "out")
    with lock.held(out):
        with lock.held(out):  # the flow inside the CLI's run: not a refusal of itself
            pass
        code = ("import sys; from emodraw_batch.files import lock; from emodraw_batch.files.layout import layout\n"
                "try:\n    lock.check(layout(sys.argv[1]))\nexcept Exception as exc:\n    print(type(exc).__name__)\n")
        other = subprocess.run([sys.executable, "-c", code, str(tmp_path / "out")], capture_output=True, text=True,
                               env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
        assert other.stdout.strip() == "OutputError"  # still held after the inner block ended
    lock.check(out)  # released
