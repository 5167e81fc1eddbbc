"""A store outage mid-run (issue #22): the run stops within its first failing shard's retries, with one paragraph.

A real S3 server (moto, in this process) is stopped while the CLI, in a subprocess, is between two
shards; the CLI then meets real connection errors from pyarrow. A small driver pauses the CLI
before its third shard until the server is down, so the order is certain without any sleep. The
server is restarted on the same port with its objects (moto keeps them in this process) and the
same command resumes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import make_texts, write_corpus

moto_server = pytest.importorskip("moto.server")
boto3 = pytest.importorskip("boto3")

ROOT = Path(__file__).resolve().parents[1]
SHARDS = 8

DRIVER = r"""
import atexit, json, os, sys, time
from emodraw_batch.job import runner

attempts = {}
real = runner.label_shard
def label_shard(shard, *args, **kwargs):
    attempts[shard.name] = attempts.get(shard.name, 0) + 1
    if len(attempts) == 3 and attempts[shard.name] == 1:  # the third shard: wait until the store is down
        open(os.environ["PAUSED"], "w").close()
        while not os.path.exists(os.environ["GO"]):
            time.sleep(0.05)
    return real(shard, *args, **kwargs)
runner.label_shard = label_shard
atexit.register(lambda: print("ATTEMPTS " + json.dumps(attempts), file=sys.stderr, flush=True))

from emodraw_cli.app import main
sys.argv = ["emodraw-batch", *sys.argv[1:]]
main()
"""


def wait_until(predicate, what: str, seconds: float = 300.0) -> None:
    import time

    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.05)


def test_a_store_outage_stops_the_run_at_the_first_failing_shard_and_a_rerun_resumes(tiny_model, tmp_path, prefect_api):
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1",
           "AWS_EC2_METADATA_DISABLED": "true", "AWS_ENDPOINT_URL": f"http://{host}:{port}", "HF_HUB_OFFLINE": "1",
           "PAUSED": str(tmp_path / "paused"), "GO": str(tmp_path / "go"), "COLUMNS": "200",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1", aws_access_key_id="testing",
                 aws_secret_access_key="testing").create_bucket(Bucket="outage")
    corpus = write_corpus(tmp_path / "in.parquet", make_texts(SHARDS * 20, seed=12), row_group_size=20)
    (tmp_path / "retry.toml").write_text("retries = 1\nretry_delay = 0\n")
    args = ["run", str(corpus), "-o", "s3://outage/out", "--model", tiny_model, "--device", "cpu", "--shard-rows", "20",
            "--config", str(tmp_path / "retry.toml"), "--no-progress"]
    proc = subprocess.Popen([sys.executable, "-c", DRIVER, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        wait_until(lambda: Path(env["PAUSED"]).exists() or proc.poll() is not None, "the CLI to reach its third shard")
        server.stop()  # the store goes down between two shards
        Path(env["GO"]).touch()
        _out, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, err
    attempts = json.loads(next(line for line in err.splitlines() if line.startswith("ATTEMPTS "))[len("ATTEMPTS "):])
    # Two shards done, the third tried 1 + retries times, no other shard even started.
    assert sorted(attempts.values()) == [1, 1, 2], attempts
    paragraph = err[err.index("error:"):]
    assert "The storage could not be reached (the output 's3://outage/out')" in paragraph
    assert f"instead of retrying the other {SHARDS - 3} shard(s)" in paragraph and "the 2 finished shard(s) are kept" in paragraph
    assert "AWS_ENDPOINT_URL" in paragraph and "run the same command again" in paragraph
    assert "Traceback" not in err, err

    restarted = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    restarted.start()  # the same port; moto kept the objects in this process
    try:
        rerun = subprocess.run([sys.executable, "-m", "emodraw_cli.app", *args, "--json"], env=env, capture_output=True,
                               text=True, timeout=600)
    finally:
        restarted.stop()
    assert rerun.returncode == 0, rerun.stderr
    summary = json.loads(rerun.stdout)
    assert summary["resumed"] == 2 and summary["rows"] == SHARDS * 20  # the kept shards, then only the missing ones
