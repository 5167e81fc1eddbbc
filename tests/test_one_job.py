"""One output folder holds one job's labels (issue 27, items 4 and 5).

Item 4: the job record is checked again under the lock (a run validated against an empty folder
must not take over the output of a job that finished there meanwhile), and resume keeps a shard
file only when its own metadata names this job's settings, not merely when its row count is right.
Item 5: precision and runtime are resolved once, on the machine that plans the run, and every
shard is labelled with them: a worker that sees another device neither re-resolves them nor
labels its shard some other way; one that cannot run them fails its shard with one paragraph.

Workers are simulated in this process: the classifier resolves its device through its own module's
`resolve_device`, the planning side (validate) through `device.resolve_device`, so patching one of
them gives "a worker that sees another device than the machine that planned the run".
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import assert_same_labels, labels, make_texts, write_corpus
from emodraw_batch.config import RunConfig
from emodraw_batch.errors import OutputError
from emodraw_batch.files import lock
from emodraw_batch.files.writer import METADATA_KEY, read_metadata
from emodraw_batch.inference import classifier as classifier_mod
from emodraw_batch.inference import device as device_mod
from emodraw_batch.inference.backends import onnx_forward
from emodraw_batch.job import resume
from emodraw_batch.job.plan import plan
from emodraw_batch.job.runner import WorkerError, run
from emodraw_batch.job.validate import validate


@pytest.fixture
def corpus(tmp_path) -> Path:
    """60 rows in row groups of 20: with shard_rows=20, three shards."""
    return write_corpus(tmp_path / "in.parquet", make_texts(60, seed=27), row_group_size=20)


def files(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((out / "labels").iterdir())}


def test_a_job_validated_before_another_finished_there_is_refused_under_the_lock(corpus, tiny_model, tmp_path):
    out = tmp_path / "out"
    ours = validate([str(corpus)], out, RunConfig(model=tiny_model, device="cpu", shard_rows=20, max_length=32))
    # Between our validation (empty folder) and our lock, another job labels the same input there.
    other = run([str(corpus)], out, RunConfig(model=tiny_model, device="cpu", shard_rows=20, max_length=16))
    assert other.rows == 60
    record, written = (out / "run.json").read_text(), files(out)
    with lock.held(ours.out), pytest.raises(OutputError, match="holds the output of a different job") as refused:
        plan(ours)
    assert "max_length: 16 before, 32 now" in str(refused.value)
    # Nothing taken over: the other job's record and labels are as it left them.
    assert (out / "run.json").read_text() == record and files(out) == written


def plant(path: Path, **changes) -> None:
    """Rewrite a shard file with the same rows but its metadata changed, and every label made 'planted'."""
    table = pq.read_table(path)
    metadata = json.loads(table.schema.metadata[METADATA_KEY])
    for key, value in changes.items():
        metadata[key] = value
        if key in metadata["config"]:
            metadata["config"][key] = value
    emotion = table.schema.get_field_index("emotion")
    table = table.set_column(emotion, "emotion", pa.array(["planted"] * table.num_rows, pa.string()))
    pq.write_table(table.replace_schema_metadata({METADATA_KEY: json.dumps(metadata).encode()}), path)


@pytest.mark.parametrize(
    "changes",
    [{"model": "someone/another-emotion-model"}, {"precision": "bf16"}, {"max_length": 16}, {"cast_text": True}],
    ids=["model", "precision", "max_length", "cast_text"],
)
def test_a_shard_with_another_jobs_metadata_under_the_right_row_count_is_redone(corpus, tiny_model, tmp_path, changes):
    out = tmp_path / "out"
    config = RunConfig(model=tiny_model, device="cpu", shard_rows=20)
    run([str(corpus)], out, config)
    reference = labels(out)
    planted = out / "labels" / "part-00000-00001.parquet"
    plant(planted, **changes)
    assert pq.read_metadata(planted).num_rows == 20  # the row count alone says "complete"

    summary = run([str(corpus)], out, config)
    assert summary.rows == 60 and summary.resumed == 2  # the two shards of this job kept, the planted one redone
    assert_same_labels(labels(out), reference)
    assert read_metadata(planted)["config"]["model"] == tiny_model


def test_every_setting_of_the_fingerprint_is_compared_with_the_shard(tiny_model):
    """A setting added to the fingerprint (and so to the settings a shard records) needs no second table."""
    fingerprint = {**RunConfig(model=tiny_model, precision="fp32").fingerprint(), "future_setting": "on"}
    written = {"precision": "fp32", "config": {**RunConfig(model=tiny_model).model_dump(mode="json")}}
    assert resume.shard_differences(written, fingerprint) == ["future_setting: missing in the file, 'on' in this job"]
    written["config"]["future_setting"] = "off"
    assert resume.shard_differences(written, fingerprint) == ["future_setting: 'off' in the file, 'on' in this job"]
    written["config"]["future_setting"] = "on"
    assert resume.shard_differences(written, fingerprint) == []


def test_every_shard_has_the_precision_and_runtime_the_plan_resolved(corpus, tiny_model, tmp_path, monkeypatch):
    """The machine that plans sees a GPU (auto = bf16, torch); the worker sees a CPU (auto would be fp32)."""
    real = device_mod.resolve_device
    monkeypatch.setattr(device_mod, "resolve_device", lambda device: "cuda" if device == "auto" else real(device))
    classifier_mod.clear_cache()
    out = tmp_path / "out"
    summary = run([str(corpus)], out, RunConfig(model=tiny_model, shard_rows=20))  # device, precision, runtime: auto
    assert summary.rows == 60 and summary.outputs == 3
    assert json.loads((out / "run.json").read_text())["fingerprint"]["precision"] == "bf16"
    for path in sorted((out / "labels").glob("*.parquet")):
        written = read_metadata(path)
        assert (written["precision"], written["runtime"], written["device"]) == ("bf16", "torch", "cpu"), path.name
    manifest = json.loads((out / "manifest.json").read_text())
    assert (manifest["model"]["precision"], manifest["model"]["runtime"]) == ("bf16", "torch")
    assert manifest["config"]["precision"] == "auto"  # what was asked, next to what ran


@pytest.mark.skipif(not onnx_forward.available(), reason="onnxruntime/onnx not installed")
def test_a_worker_that_cannot_run_the_plans_settings_fails_its_shard_with_one_paragraph(corpus, tiny_model, tmp_path,
                                                                                         monkeypatch):
    """The machine that plans is this CPU (auto = fp32 on ONNX Runtime); the worker sees a GPU."""
    monkeypatch.setattr(classifier_mod, "resolve_device", lambda device: "cuda")
    classifier_mod.clear_cache()
    out = tmp_path / "out"
    with pytest.raises(WorkerError) as failed:
        run([str(corpus)], out, RunConfig(model=tiny_model, shard_rows=20))
    message = str(failed.value)
    assert "\n" not in message
    assert "--runtime onnx runs on the CPU, but the device is cuda" in message  # the rule, what was received
    assert "precision (fp32) and runtime (onnx)" in message and "resolved once" in message
    assert "--precision fp32 --runtime torch" in message  # the fix
    assert not list((out / "labels").glob("*.parquet"))
