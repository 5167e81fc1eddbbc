"""Issue 37: no wait without a bound (emodraw_flows/watch.py): a stalled run and a cluster without workers fail."""

from __future__ import annotations

import threading
import time

import pytest

import emodraw_flows  # noqa: F401  (Prefect defaults before Prefect is imported)
from conftest import make_texts, write_corpus
from emodraw_batch.files.reader import Shard
from emodraw_flows import tasks, watch


def shard(group: int) -> Shard:
    return Shard(file_index=0, path="in.parquet", start=group, stop=group + 1, rows=10)


def test_the_stall_limit_is_per_window_scaled_by_the_window_and_set_by_device():
    assert watch.stall_limit(None, 25_000, gpu=True) == 300.0
    assert watch.stall_limit(None, 25_000, gpu=False) == 3600.0
    assert watch.stall_limit(None, 100_000, gpu=True) == 1200.0  # four times the rows, four times the time
    assert watch.stall_limit(60.0, 5_000, gpu=False) == 60.0  # never below one window's limit
    assert watch.stall_limit(60.0, 50_000, gpu=False) == 120.0


def test_progress_moves_the_deadline_and_silence_past_it_is_stalled():
    seen: list[int] = []
    w = watch.Watch(limit=0.2, on_rows=seen.append)
    w.check([shard(3)])  # the first window gets twice the limit
    time.sleep(0.25)
    w.check([shard(3)])
    w.event((0.0, {"shard": "part-00000-00003.parquet", "rows": 7}))  # a Dask worker's report
    time.sleep(0.1)
    w.check([shard(3)])
    assert seen == [7]
    time.sleep(0.25)
    with pytest.raises(watch.Stalled, match=r"no progress for 1 s.*Still unfinished: part-00000-00003.parquet \(part-00000-00003.parquet last labelled a window"):
        w.check([shard(3)])


def test_a_cluster_without_workers_for_the_limit_is_lost_and_one_with_workers_is_not():
    workers = [1]
    w = watch.Watch(limit=3600, workers=lambda: workers[0], workerless=0.2)
    workers[0] = 0
    w.check([shard(3)])
    time.sleep(0.3)
    with pytest.raises(watch.ClusterLost, match="no workers for 0 s while 1 shard"):
        w.check([shard(3)])
    down = watch.Watch(limit=3600, workers=lambda: 1 / 0, workerless=0.0)  # the scheduler itself is gone
    time.sleep(0.01)
    with pytest.raises(watch.ClusterLost):
        down.check([shard(3)])


@pytest.mark.timeout(300)
def test_a_shard_that_never_finishes_fails_the_run_naming_it_and_keeps_the_finished_ones(
    prefect_api, tiny_model, tmp_path, monkeypatch
):
    """A real flow run on the local engine whose second shard hangs: the flow fails, it does not wait."""
    from emodraw_flows.label import label_corpus

    corpus = write_corpus(tmp_path / "in.parquet", make_texts(120, seed=12), row_group_size=40)
    release = threading.Event()
    real = tasks.runner.label_shard

    def hangs_on_the_second(shard, *args, **kwargs):
        if shard.name.endswith("00001.parquet"):
            release.wait(120)  # stuck, as a hung device or a read that never returns
        return real(shard, *args, **kwargs)

    monkeypatch.setattr(tasks.runner, "label_shard", hangs_on_the_second)
    out = tmp_path / "out"
    started = time.monotonic()
    try:
        with pytest.raises(watch.Stalled) as stalled:
            label_corpus([str(corpus)], str(out), {"model": tiny_model, "device": "cpu", "shard_rows": 40,
                                                   "stall_timeout": 1.5, "retries": 0})
    finally:
        release.set()
    assert time.monotonic() - started < 60
    assert "part-00000-00001.parquet" in str(stalled.value) and "run the same command again" in str(stalled.value)
    assert [p.name for p in sorted((out / "labels").glob("*.parquet"))] == ["part-00000-00000.parquet"]
