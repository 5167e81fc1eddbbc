"""One writer per output, also for the tasks a run leaves behind (files/guard.py).

A shard is published only while run.json names its run; `finish` fails on label files its plan does
not name, and planning removes them. The real-process cases: tests/test_cluster.py (the CLI killed
while its tasks run on a Dask cluster) and tests/test_s3.py (a holder stopped past its lease's expiry).
"""

from __future__ import annotations

import shutil

import pyarrow.parquet as pq
import pytest

from conftest import make_texts, write_corpus
from emodraw_batch.config import load_config
from emodraw_batch.errors import OutputError
from emodraw_batch.files import guard, lock
from emodraw_batch.job import runner
from emodraw_batch.job.plan import plan
from emodraw_batch.job.validate import validate


@pytest.fixture
def corpus(tmp_path):
    return write_corpus(tmp_path / "in.parquet", make_texts(300, seed=5), row_group_size=100)


def cfg(model: str, **settings):
    return load_config(model=model, device="cpu", max_length=64, **settings)


def ids(out) -> list[int]:
    return sorted(pq.read_table(out / "labels", columns=["id"])["id"].to_pylist())


def test_a_shard_of_a_run_that_lost_the_folder_is_not_published(corpus, tiny_model, tmp_path):
    out = tmp_path / "out"
    first = plan(validate([str(corpus)], out, cfg(tiny_model, shard_rows=100)))
    # Another run takes the folder (its main process died, say) and starts again with other settings.
    later = runner.run([str(corpus)], out, cfg(tiny_model, shard_rows=200), overwrite=True)
    before = sorted(p.name for p in (out / "labels").iterdir())
    with pytest.raises(guard.Superseded, match=r"no longer this run's: its run\.json names run .*part-00000-00001"):
        runner.label_shard(first.todo[1], first.job.config, out, run_id=first.run_id)
    assert sorted(p.name for p in (out / "labels").iterdir()) == before  # nothing published, no temporary file
    assert ids(out) == list(range(300)) and later.outputs == 2
    with pytest.raises(guard.Superseded, match="without publishing the manifest"):
        runner.finish(first, [], 1.0)


def test_finish_fails_on_a_file_the_plan_does_not_name_and_the_next_plan_removes_it(corpus, tiny_model, tmp_path):
    out = tmp_path / "out"
    config = cfg(tiny_model, shard_rows=100)
    job = validate([str(corpus)], out, config)
    with lock.held(job.out):
        planned = plan(job)
        results = [runner.label_shard(s, config, out, run_id=planned.run_id) for s in planned.todo]
        # A task of another run passed its check just before this run planned, and published late.
        shutil.copy(out / "labels" / "part-00000-00000.parquet", out / "labels" / "part-00000-00099.parquet")
        with pytest.raises(OutputError, match=r"did not plan \(.*part-00000-00099\.parquet\).*No manifest"):
            runner.finish(planned, results, 1.0)
    assert not (out / "manifest.json").exists()
    summary = runner.run([str(corpus)], out, config)  # the same command again: resumes, the stray file is gone
    assert summary.resumed == 3 and summary.rows == 300
    assert not (out / "labels" / "part-00000-00099.parquet").exists() and ids(out) == list(range(300))


def test_each_run_writes_its_own_id_into_run_json(corpus, tiny_model, tmp_path):
    out = tmp_path / "out"
    job = validate([str(corpus)], out, cfg(tiny_model, shard_rows=100))
    with lock.held(job.out):
        first = plan(job)
        assert first.run_id == lock.token(job.out) and job.out.read_json(job.out.run_file)["run_id"] == first.run_id
    with lock.held(job.out):
        assert plan(job).run_id not in (first.run_id, None)
