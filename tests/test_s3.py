"""Inputs and outputs in S3-compatible object storage, against a real S3 server on 127.0.0.1.

The `s3` fixture starts moto's S3 server in this process (port chosen by the OS) and points
the usual environment at it (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...), which subprocesses and
Dask workers inherit. Nothing is mocked below the HTTP API: pyarrow, polars and boto3 talk S3 to it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import polars as pl
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from conftest import make_texts, write_corpus
from emodraw_batch import atomic
from emodraw_batch.job import runner
from emodraw_batch.config import load_config
from emodraw_batch.errors import OutputError
from emodraw_batch.files.layout import layout
from emodraw_batch.files.storage import polars_options
from emodraw_batch.job.validate import validate
from emodraw_cli.app import app

moto_server = pytest.importorskip("moto.server")
boto3 = pytest.importorskip("boto3")

cli = CliRunner()
ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1",
       "AWS_EC2_METADATA_DISABLED": "true"}


@pytest.fixture(scope="module")
def s3():
    """A boto3 client of a fresh S3 server on 127.0.0.1; the environment points at it while the tests run."""
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    saved = {k: os.environ.get(k) for k in [*ENV, "AWS_ENDPOINT_URL"]}
    os.environ.update(ENV, AWS_ENDPOINT_URL=f"http://{host}:{port}")
    try:
        client = boto3.client("s3")
        for bucket in ("inputs", "labels-out"):
            client.create_bucket(Bucket=bucket)
        yield client
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        server.stop()


def keys(client, prefix: str, bucket: str = "labels-out") -> dict[str, dict]:
    """The objects under `prefix` (pyarrow's empty `folder/` marker objects left out)."""
    found = client.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
    return {o["Key"][len(prefix):]: o for o in found if not o["Key"].endswith("/")}


def upload(client, local, bucket: str, key: str) -> str:
    client.upload_file(str(local), bucket, key)
    return f"s3://{bucket}/{key}"


@pytest.fixture(scope="module")
def corpus(s3, tmp_path_factory):
    """Two Parquet files in s3://inputs/tweets/ (and the same files locally)."""
    folder = tmp_path_factory.mktemp("s3-corpus")
    for i in range(2):
        path = write_corpus(folder / f"part-{i}.parquet", make_texts(150, seed=30 + i), row_group_size=50, start_id=i * 150)
        upload(s3, path, "inputs", f"tweets/part-{i}.parquet")
    return folder


@pytest.fixture
def cfg(tiny_model):
    return load_config(model=tiny_model, device="cpu", shard_rows=100, window_rows=50, max_length=64, id_column="id")


def test_s3_inputs_and_output_equal_a_local_run(s3, corpus, cfg, tmp_path):
    summary = runner.run(["s3://inputs/tweets/"], "s3://labels-out/equal", cfg)
    local = runner.run([str(corpus)], tmp_path / "local", cfg)
    assert summary.rows == local.rows == 300 and summary.output_dir == "s3://labels-out/equal"
    assert summary.duplicate_ids == 0  # counted by polars over s3://

    objects = keys(s3, "equal/")
    shards = sorted(k for k in objects if k.startswith("labels/") and k.endswith(".parquet"))
    assert shards == sorted(f"labels/{p.name}" for p in (tmp_path / "local" / "labels").glob("*.parquet"))
    assert {"run.json", "manifest.json", "stats/summary.json", "stats/overall.parquet", "stats/status.parquet"} <= set(objects)
    assert not [k for k in objects if k.rsplit("/", 1)[-1].startswith(".")]  # no temporary objects left

    # A reader's view: polars straight from the bucket, credentials and endpoint from the environment.
    remote = pl.scan_parquet("s3://labels-out/equal/labels/*.parquet", storage_options=polars_options("s3://")).collect()
    expected = pl.read_parquet(tmp_path / "local" / "labels" / "*.parquet")
    assert remote.sort("id").equals(expected.sort("id"))
    manifest = json.loads(s3.get_object(Bucket="labels-out", Key="equal/manifest.json")["Body"].read())
    assert manifest["summary"]["rows"] == 300 and manifest["inputs"][0]["path"] == "s3://inputs/tweets/part-0.parquet"


def test_stats_and_report_read_an_s3_output(s3, corpus, cfg, tmp_path):
    runner.run(["s3://inputs/tweets/part-0.parquet"], "s3://labels-out/stats", cfg)
    result = cli.invoke(app, ["stats", "s3://labels-out/stats", "--group-by", "id", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["rows"] == 150
    assert "stats/by_id.parquet" in keys(s3, "stats/")

    # The run's own breakdown again: the earlier by_id table is gone (the folder is replaced file by file).
    result = cli.invoke(app, ["stats", "s3://labels-out/stats"])
    assert result.exit_code == 0, result.output
    assert "stats/by_id.parquet" not in keys(s3, "stats/")

    refused = cli.invoke(app, ["report", "s3://labels-out/stats"])
    assert refused.exit_code == 1 and "--charts DIR" in refused.output
    early = cli.invoke(app, ["run", "s3://inputs/tweets/", "-o", "s3://labels-out/later", "--report"])
    assert early.exit_code == 1 and "--charts DIR" in early.output  # before anything runs
    drawn = cli.invoke(app, ["report", "s3://labels-out/stats", "--charts", str(tmp_path / "charts")])
    assert drawn.exit_code == 0, drawn.output
    assert (tmp_path / "charts" / "report.html").is_file() and (tmp_path / "charts" / "overall.png").is_file()
    assert "s3://labels-out/stats" in (tmp_path / "charts" / "report.html").read_text()


def test_remote_replacing_never_shows_a_partial_object(s3):
    out = layout("s3://labels-out/atomic")
    target = out.join("file.bin")
    with pytest.raises(RuntimeError):
        with atomic.replacing_in(out.fs, target) as temp:
            with out.fs.open_output_stream(temp) as fh:
                fh.write(b"half")
            raise RuntimeError("crash while writing")
    assert keys(s3, "atomic/") == {}  # neither the final object nor the temporary one
    atomic.write_text(target, "whole", out.fs)
    assert s3.get_object(Bucket="labels-out", Key="atomic/file.bin")["Body"].read() == b"whole"
    assert set(keys(s3, "atomic/")) == {"file.bin"}


def test_bad_output_uris_fail_before_anything_is_written(s3, corpus, cfg):
    inputs = set(keys(s3, "", "inputs"))  # what the module's other tests uploaded so far stays as it is
    validate(["s3://inputs/tweets/"], "s3://labels-out/fresh", cfg)
    assert keys(s3, "fresh") == {}  # validate reads only
    with pytest.raises(OutputError, match=r"bucket 'no-such-bucket'.*AWS_ENDPOINT_URL"):
        validate(["s3://inputs/tweets/"], "s3://no-such-bucket/job", cfg)
    with pytest.raises(OutputError, match="nosuchscheme://"):
        validate(["s3://inputs/tweets/"], "nosuchscheme://bucket/job", cfg)
    with pytest.raises(OutputError, match="must not hold credentials"):
        validate(["s3://inputs/tweets/"], "s3://KEY:SECRET@labels-out/job", cfg)
    with pytest.raises(OutputError, match="names no bucket"):
        validate(["s3://inputs/tweets/"], "s3://", cfg)
    with pytest.raises(OutputError, match="lies inside the output folder"):
        validate(["s3://inputs/tweets/"], "s3://inputs", cfg)
    s3.put_object(Bucket="labels-out", Key="an-object", Body=b"x")
    with pytest.raises(OutputError, match="is an object"):
        validate(["s3://inputs/tweets/"], "s3://labels-out/an-object", cfg)
    assert set(keys(s3, "", "inputs")) == inputs >= {"tweets/part-0.parquet", "tweets/part-1.parquet"}


def test_a_rerun_after_an_object_changed_in_place_is_refused(s3, cfg, tmp_path):
    first = write_corpus(tmp_path / "v1.parquet", make_texts(80, seed=40), row_group_size=40)
    source = upload(s3, first, "inputs", "changing/day.parquet")
    runner.run([source], "s3://labels-out/changing", cfg)
    record = json.loads(s3.get_object(Bucket="labels-out", Key="changing/run.json")["Body"].read())
    assert record["inputs"][0]["etag"] == s3.head_object(Bucket="inputs", Key="changing/day.parquet")["ETag"].strip('"')
    assert record["inputs"][0]["size"] == first.stat().st_size
    # Overwritten in place with other texts (same key, same row count): refused, naming the object.
    upload(s3, write_corpus(tmp_path / "v2.parquet", make_texts(80, seed=41), row_group_size=40), "inputs", "changing/day.parquet")
    with pytest.raises(OutputError, match=r"input file 's3://inputs/changing/day\.parquet' was changed in place.*etag"):
        validate([source], "s3://labels-out/changing", cfg)
    assert runner.run([source], "s3://labels-out/changing", cfg, overwrite=True).resumed == 0


# ---------------------------------------------------------------- the CLI, as a new user runs it


def cli_run(inputs: list[str], out: str, model: str, cwd, *extra: str) -> subprocess.Popen:
    args = ["run", *inputs, "-o", out, "--model", model, "--device", "cpu", "--max-length", "64", "--json",
            "--no-progress", *extra]
    return subprocess.Popen(
        [sys.executable, "-m", "emodraw_cli.app", *args], cwd=cwd,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )


def test_cli_on_dask_writes_to_the_bucket_and_not_to_the_working_directory(
    s3, corpus, tiny_model, tmp_path, prefect_api
):
    work = tmp_path / "cwd"
    work.mkdir()
    proc = cli_run(["s3://inputs/tweets/"], "s3://labels-out/cli", tiny_model, work, "--shard-rows", "100",
                   "--engine", "dask", "--workers", "1", "--report", "--charts", str(tmp_path / "charts"))
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr
    assert json.loads(stdout)["rows"] == 300
    assert list(work.iterdir()) == []  # no local folder named `s3:` (or anything else)
    assert len([k for k in keys(s3, "cli/labels/") if k.endswith(".parquet")]) == 4
    assert (tmp_path / "charts" / "report.html").is_file()


def test_sigkill_then_rerun_resumes_from_the_bucket(s3, tiny_model, tmp_path, prefect_api):
    shards = 12
    corpus = write_corpus(tmp_path / "big.parquet", make_texts(shards * 200, seed=12, max_words=60), row_group_size=200)
    source = upload(s3, corpus, "inputs", "big/big.parquet")
    out = "s3://labels-out/crash"
    options = ("--shard-rows", "200", "--window-rows", "100")

    def finished() -> dict[str, dict]:
        return {k: o for k, o in keys(s3, "crash/labels/").items() if k.endswith(".parquet") and not k.startswith(".")}

    proc = cli_run([source], out, tiny_model, tmp_path, *options)
    deadline = time.monotonic() + 300
    while len(finished()) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = finished()
    assert 2 <= len(before) < shards, "the kill must land part-way for this test to mean anything"
    assert "manifest.json" not in keys(s3, "crash/")
    # What a crash can leave: a temporary object of an upload that completed but was never moved.
    s3.put_object(Bucket="labels-out", Key="crash/labels/.part-00000-00011.parquet.999.tmp", Body=b"PAR1 half")

    rerun = cli_run([source], out, tiny_model, tmp_path, *options)
    stdout, stderr = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, stderr
    summary = json.loads(stdout)
    assert summary["resumed"] == len(before) and summary["rows"] == shards * 200
    after = finished()
    assert len(after) == shards
    for name, obj in before.items():  # finished shards were found by listing and reading footers, not redone
        assert after[name]["LastModified"] == obj["LastModified"] and after[name]["ETag"] == obj["ETag"]
    assert not [k for k in keys(s3, "crash/labels/") if k.startswith(".")]  # temporary objects removed

    fs = pafs.S3FileSystem(endpoint_override=os.environ["AWS_ENDPOINT_URL"], region="us-east-1")
    ids = pq.ParquetDataset("labels-out/crash/labels", filesystem=fs).read(columns=["id"])["id"].to_pylist()
    assert sorted(ids) == list(range(shards * 200))  # every row once


def test_one_writer_per_bucket_prefix(s3, corpus, cfg, monkeypatch):
    """The lease object: a second run on a held prefix is refused naming the holder; released at the end."""
    from emodraw_batch.files import lease, lock

    monkeypatch.setattr(lease, "SETTLE_S", 0.05)
    out = layout("s3://labels-out/locked")
    with lock.held(out):
        holder = json.loads(s3.get_object(Bucket="labels-out", Key="locked/.emodraw.lock")["Body"].read())
        assert holder["pid"] == os.getpid()
        with pytest.raises(OutputError, match=rf"being written by another run \(pid {os.getpid()} on "):
            validate(["s3://inputs/tweets"], "s3://labels-out/locked", cfg)
        with pytest.raises(OutputError, match="being written by another run"):
            runner.run(["s3://inputs/tweets"], "s3://labels-out/locked", cfg)
    assert ".emodraw.lock" not in keys(s3, "locked/")
    assert runner.run(["s3://inputs/tweets"], "s3://labels-out/locked", cfg).rows == 300


# Run as "another machine": its lease is judged by its renewal time, as a holder on another host is
# (one on this host is judged by its pid, which a stopped process keeps).
ELSEWHERE = """
import socket, sys
socket.gethostname = lambda: "stalled-host"
from emodraw_cli.app import main
sys.argv = ["emodraw-batch", *sys.argv[1:]]
main()
"""


def test_a_holder_stopped_past_its_lease_then_continued_writes_nothing_more(s3, tiny_model, tmp_path, prefect_api, monkeypatch):
    """SIGSTOP a run past its (shortened) lease; another run takes over with --overwrite and other settings;
    SIGCONT: the stalled run must publish no shard nor manifest, keep the other's lease, and fail with a paragraph."""
    from emodraw_batch.files import lease

    shards, expiry = 12, 3.0
    corpus = write_corpus(tmp_path / "big.parquet", make_texts(shards * 200, seed=13, max_words=60), row_group_size=200)
    source = upload(s3, corpus, "inputs", "stall/big.parquet")
    env = {**os.environ, "EMODRAW_LEASE_EXPIRY_S": str(expiry)}

    def start(max_length: int, *extra: str, program: tuple[str, ...] = ("-m", "emodraw_cli.app")) -> subprocess.Popen:
        args = ["run", source, "-o", "s3://labels-out/stall", "--model", tiny_model, "--device", "cpu", "--json",
                "--no-progress", "--shard-rows", "200", "--window-rows", "100", "--max-length", str(max_length), *extra]
        return subprocess.Popen([sys.executable, *program, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, start_new_session=True)

    def lock_object() -> dict:
        return json.loads(s3.get_object(Bucket="labels-out", Key="stall/.emodraw.lock")["Body"].read())

    def lock_age() -> float:  # by the store's clock (the moto server runs on this machine)
        written = s3.head_object(Bucket="labels-out", Key="stall/.emodraw.lock")["LastModified"]
        return time.time() - written.timestamp()

    def wait(check, what: str):
        deadline = time.monotonic() + 300
        while not (value := check()):
            assert time.monotonic() < deadline, what
            time.sleep(0.05)
        return value

    stalled = start(64, program=("-c", ELSEWHERE))
    wait(lambda: any(k.endswith(".parquet") and not k.startswith(".") for k in keys(s3, "stall/labels/")) or stalled.poll() is not None,
         "a first shard")
    # Stop it just after a renewal, in the RENEW_S before the next: a stop inside the renewal's own
    # write is the one gap a store without conditional writes leaves (files/lease.py), not this test's case.
    renewed = lock_object()["renewed"]
    wait(lambda: lock_object()["renewed"] != renewed or stalled.poll() is not None, "a renewal of the lease")
    os.killpg(stalled.pid, signal.SIGSTOP)
    try:
        assert stalled.poll() is None and "manifest.json" not in keys(s3, "stall/"), "the stop must land part-way"
        monkeypatch.setattr(lease, "LEASE_S", expiry)
        # The store keeps times to the second: by this clock the lock may look up to 1 s older than it is,
        # and by the other run's probe (the store's clock) up to 1 s younger. Wait out both, or the other
        # run, if it starts fast, still finds the lease live and is refused.
        wait(lambda: lease.gone(lock_object(), lock_age() - 2.0), "the stalled run's lease to expire")
        other = start(32, "--overwrite")
        def planned() -> bool:
            try:
                record = json.loads(s3.get_object(Bucket="labels-out", Key="stall/run.json")["Body"].read())
            except s3.exceptions.NoSuchKey:  # between a clear and a write of run.json
                record = {}
            done = record.get("fingerprint", {}).get("max_length") == 32
            assert done or other.poll() is None, other.communicate()[1]
            return done

        wait(planned, "the other run's plan")
    finally:
        os.killpg(stalled.pid, signal.SIGCONT)
    _, stalled_err = stalled.communicate(timeout=600)
    stdout, stderr = other.communicate(timeout=600)
    assert stalled.returncode == 1 and "is no longer this run's" in stalled_err and "Traceback" not in stalled_err, stalled_err
    assert other.returncode == 0, stderr
    assert json.loads(stdout)["rows"] == shards * 200
    names = sorted(k for k in keys(s3, "stall/labels/"))
    assert names == [f"part-00000-{i:05d}.parquet" for i in range(shards)]  # and no temporary object
    fs = pafs.S3FileSystem(endpoint_override=os.environ["AWS_ENDPOINT_URL"], region="us-east-1")
    for name in names:  # every shard is the other run's (--max-length 32), none the stalled run's (64)
        assert json.loads(pq.read_schema(f"labels-out/stall/labels/{name}", filesystem=fs).metadata[b"emodraw"])["config"]["max_length"] == 32
    ids = pq.ParquetDataset("labels-out/stall/labels", filesystem=fs).read(columns=["id"])["id"].to_pylist()
    assert sorted(ids) == list(range(shards * 200))
    manifest = json.loads(s3.get_object(Bucket="labels-out", Key="stall/manifest.json")["Body"].read())
    assert manifest["config"]["max_length"] == 32
    assert ".emodraw.lock" not in keys(s3, "stall/")  # the other run released its own lease; nobody deleted it before
