"""Issue 39 item 2: language detection in worker processes gives the output of one thread, row for row.

fastText holds the GIL, so `language_workers` spreads a window's fastText calls over processes
(inference/language_pool.py). Nothing may change but where the work runs: the same rows, order,
labels and language columns with 0, 1 or 3 workers, across windows and shards, on resume, inside a
daemonic process (a Dask worker's kind), and when the workers fail.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import labels, make_texts, write_corpus
from emodraw_batch.config import RunConfig
from emodraw_batch.inference import language, language_pool
from emodraw_batch.job import runner

OTHERS = [
    "hoy me siento muy feliz porque todos mis amigos vinieron a mi fiesta",
    "今日はとても悲しい気持ちです。友達に会えなくて寂しい。",
    "je suis tellement en colère contre mon voisin qui fait du bruit",
    "ich bin heute so müde und traurig, nichts klappt",
    "nope", "ikr", "If not now, when?", "😀😀😀", "ok\nthen a second line\r\nand a third",
    "мне очень грустно сегодня", "estou muito feliz hoje com a minha família", "\ttabs\tand  spaces ",
]


def mixed_texts(n: int, seed: int = 5) -> list[str]:
    """English of every length with other languages, short texts and odd whitespace every few rows."""
    texts = make_texts(n, seed=seed)
    for i in range(0, n, 3):
        texts[i] = OTHERS[(i // 3) % len(OTHERS)] + ("" if i % 2 else f" {i}")
    return texts


@pytest.fixture
def small_pool(monkeypatch):
    """The pool for every window of a test corpus (its thresholds are for real windows of thousands of rows)."""
    monkeypatch.setattr(language_pool, "MIN_TEXTS", 1)
    monkeypatch.setattr(language_pool, "MIN_SLICE", 4)
    language_pool.close_all()
    yield
    language_pool.close_all()


def pools() -> list[language_pool.DetectorPool]:
    return list(language_pool._pools.values())


@pytest.mark.parametrize("workers", [1, 3])
def test_scores_from_workers_are_those_of_one_thread_to_the_bit(small_pool, workers):
    detector = language.LanguageDetector(("en", "es"))
    texts = mixed_texts(500)
    one = detector.scores(texts)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a fallback would warn: the workers must have answered
        many = detector.scores(texts, workers)
    assert many[0] == one[0]
    for a, b in zip(one[1:], many[1:]):
        assert a.dtype == b.dtype and np.array_equal(a, b)
    assert pools()[0].texts == len(texts) and len(pools()[0]._workers) == workers


def test_slices_are_contiguous_balanced_and_never_empty():
    sizes = [10] * 50 + [1000] * 5 + [10] * 50
    for parts in (1, 2, 3, 8):
        bounds = language_pool.slices(sizes, parts)
        assert len(bounds) == parts and bounds[0][0] == 0 and bounds[-1][1] == len(sizes)
        assert all(a < b for a, b in bounds) and all(b == c for (_, b), (c, _) in zip(bounds, bounds[1:]))
    assert language_pool.slices([5, 5], 8) == [(0, 1), (1, 2)]
    shares = [sum(sizes[a:b]) for a, b in language_pool.slices(sizes, 2)]
    assert max(shares) < 0.6 * sum(sizes)


def test_auto_starts_workers_on_a_gpu_only():
    assert language_pool.auto_workers("cpu", cores=16) == 0
    assert [language_pool.auto_workers("cuda:0", cores=c) for c in (1, 2, 8, 16, 64)] == [0, 1, 2, 4, 8]
    assert language.workers_for(3, "cpu") == 3 and language.workers_for(None, "cpu") == 0


def corpus(tmp_path: Path, n: int = 240) -> Path:
    texts = mixed_texts(n)
    texts[7], texts[11] = None, ""
    codes = [None if i % 4 else ("und", "es", "en-GB", None)[(i // 4) % 4] for i in range(n)]
    folder = tmp_path / "in"
    write_corpus(folder / "a.parquet", texts[: n // 2], row_group_size=40, lang=pa.array(codes[: n // 2], pa.string()))
    write_corpus(folder / "b.parquet", texts[n // 2:], row_group_size=40, start_id=n // 2)  # no language column
    return folder


def label(src: Path, out: Path, model: str, workers: int | None, **settings) -> runner.Summary:
    config = RunConfig(**{"model": model, "device": "cpu", "window_rows": 30, "shard_rows": 40, "language_workers": workers,
                          **settings})
    return runner.run([str(src)], out, config)


def test_a_run_with_detecting_workers_writes_what_one_thread_writes(tmp_path, tiny_model, small_pool):
    src = corpus(tmp_path)
    alone = label(src, tmp_path / "alone", tiny_model, 0)
    assert not pools()  # 0 workers: no process started
    many = label(src, tmp_path / "many", tiny_model, 3, languages="en,fr")
    assert pools() and pools()[0].texts > 0 and not pools()[0].broken
    many_en = label(src, tmp_path / "many-en", tiny_model, 3)
    a, b = labels(tmp_path / "alone"), labels(tmp_path / "many-en")
    assert a.num_rows == 240 and a.equals(b)  # every column: ids, order, labels, probabilities, languages
    assert set(a["status"].to_pylist()) >= {"ok", "language", "null", "empty"}
    assert set(a["text_lang_source"].to_pylist()) == {"input", "detected", None}
    assert alone.status == many_en.status and alone.repeats == many_en.repeats
    assert many.status != alone.status  # another language setting: the pool answered for it too


def test_a_run_resumed_with_another_worker_count_is_the_same_job(tmp_path, tiny_model, small_pool):
    src = corpus(tmp_path)
    first = label(src, tmp_path / "out", tiny_model, 0)
    reference = labels(tmp_path / "out")
    files = sorted((tmp_path / "out" / "labels").glob("*.parquet"))
    files[1].unlink()
    files[3].unlink()
    again = label(src, tmp_path / "out", tiny_model, 2)
    assert again.resumed == len(files) - 2 and again.rows == first.rows
    assert labels(tmp_path / "out").equals(reference)


def test_workers_that_fail_leave_detection_to_the_thread_with_the_same_results(tmp_path, tiny_model, small_pool,
                                                                              monkeypatch):
    src = corpus(tmp_path)
    label(src, tmp_path / "alone", tiny_model, 0)
    reference = labels(tmp_path / "alone")
    # A worker that cannot start, one that ends at once.
    for i, command in enumerate([("/nonexistent/python",), (sys.executable, "-c", "pass")]):
        language_pool.close_all()
        monkeypatch.setattr(language_pool, "COMMAND", command)
        with pytest.warns(RuntimeWarning, match="language detection goes on in one thread"):
            label(src, tmp_path / f"failed-{i}", tiny_model, 2)
        assert labels(tmp_path / f"failed-{i}").equals(reference)
        assert pools()[0].broken
    # One that dies between windows.
    monkeypatch.undo()
    monkeypatch.setattr(language_pool, "MIN_TEXTS", 1)
    monkeypatch.setattr(language_pool, "MIN_SLICE", 4)
    language_pool.close_all()
    detector = language.LanguageDetector(("en",))
    texts = mixed_texts(300)
    expected = detector.scores(texts)
    detector.scores(texts, 2)
    pools()[0]._workers[1].proc.kill()
    pools()[0]._workers[1].proc.wait()
    with pytest.warns(RuntimeWarning, match="goes on in one thread"):
        got = detector.scores(texts, 2)
    assert got[0] == expected[0] and all(np.array_equal(a, b) for a, b in zip(got[1:], expected[1:]))


DAEMONIC = textwrap.dedent("""
    import json, multiprocessing as mp, sys
    sys.path.insert(0, sys.argv[1])
    from test_language_workers import mixed_texts
    from emodraw_batch.inference import language, language_pool

    def detect(queue):
        # A Dask worker process is daemonic: multiprocessing refuses it children, subprocesses are fine.
        try:
            mp.get_context("fork").Process(target=print).start()
            refused = False
        except AssertionError:
            refused = True
        detector = language.LanguageDetector(("en",))
        texts = mixed_texts(3 * language_pool.MIN_TEXTS)
        names, top, kept, skip = detector.scores(texts, 2)
        pool = list(language_pool._pools.values())[0]
        queue.put(json.dumps({"refused": refused, "texts": pool.texts, "broken": pool.broken,
                              "names": names, "top": top.tolist(), "kept": kept.tolist(), "skip": skip.tolist()}))

    if __name__ == "__main__":
        ctx = mp.get_context("fork")
        queue = ctx.Queue()
        child = ctx.Process(target=detect, args=(queue,), daemon=True)
        child.start()
        print(queue.get(timeout=120))
        child.join(30)
""")


def test_workers_start_inside_a_daemonic_process_like_a_dask_worker(tmp_path):
    script = tmp_path / "daemonic.py"
    script.write_text(DAEMONIC)
    done = subprocess.run([sys.executable, str(script), str(Path(__file__).parent)], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["refused"] and not got["broken"] and got["texts"] == 3 * language_pool.MIN_TEXTS
    names, top, kept, skip = language.LanguageDetector(("en",)).scores(mixed_texts(3 * language_pool.MIN_TEXTS))
    assert got["names"] == names
    assert got["top"] == top.tolist() and got["kept"] == kept.tolist() and got["skip"] == skip.tolist()


def test_the_worker_reads_lines_as_the_thread_does():
    """The protocol alone: a newline ends a text, a carriage return does not; fewer than k guesses are padded."""
    from emodraw_batch.inference import language_worker as W

    class Fake:
        def __call__(self, line, k, threshold, errors):
            assert line.endswith(b"\n") and line.count(b"\n") == 1
            return [] if line == b"\n" else [(0.5, "__label__" + line[:2].decode())]

    raw = W.answer(Fake(), b"ab\rcd\n\nef", 2)
    n, size = W.ANSWER.unpack(raw[: W.ANSWER.size])
    assert n == 6
    probs = np.frombuffer(raw[W.ANSWER.size: W.ANSWER.size + 4 * n], np.float32)
    index = np.frombuffer(raw[W.ANSWER.size + 4 * n: W.ANSWER.size + 6 * n], np.uint16)
    table = raw[W.ANSWER.size + 6 * n:].decode().split("\n")
    assert len(raw) == W.ANSWER.size + 6 * n + size
    assert [table[i] for i in index] == ["__label__ab", "__label__", "__label__", "__label__", "__label__ef", "__label__"]
    assert probs.tolist() == [0.5, 0, 0, 0, 0.5, 0]


SLOW_WORKER = textwrap.dedent("""
    import sys, time
    from emodraw_batch.inference import language_worker as W

    def predict(line, k, threshold, errors):
        return [(0.9, "__label__en")]

    while True:
        head = sys.stdin.buffer.read(W.REQUEST.size)
        if len(head) < W.REQUEST.size:
            break
        k, size = W.REQUEST.unpack(head)
        data = sys.stdin.buffer.read(size)
        time.sleep(0.5)  # a slice's work, without taking a core: the test holds on a busy machine too
        sys.stdout.buffer.write(W.answer(predict, data, k))
        sys.stdout.buffer.flush()
""")


def test_the_workers_run_their_slices_at_the_same_time(small_pool, monkeypatch):
    """4 workers, each taking 0.5 s a slice: a window takes about 0.5 s, not 2 (the slices are all sent first)."""
    import time

    monkeypatch.setattr(language_pool, "COMMAND", (sys.executable, "-c", SLOW_WORKER))
    pool = language_pool.pool(4, "unused")
    lines = [f"text {i}" for i in range(40)]
    pool.predict(lines, 2)  # starts the workers
    started = time.perf_counter()
    found = pool.predict(lines, 2)
    assert time.perf_counter() - started < 1.5 and found is not None and not pool.broken
    assert found.probs.shape == (40, 2) and [found.labels[i] for i in found.index[:, 0]] == ["__label__en"] * 40


def test_workers_start_inside_a_dask_worker_process_with_the_same_output(tmp_path, tiny_model):
    """The real thing: a Dask worker process (daemonic) labels shards with language workers of its own."""
    import multiprocessing

    distributed = pytest.importorskip("distributed")
    texts = mixed_texts(4_400)  # windows of 2,200 texts: over MIN_TEXTS, so the pool detects them
    src = write_corpus(tmp_path / "in" / "c.parquet", texts, row_group_size=2_200)
    alone = label(src, tmp_path / "alone", tiny_model, 0, window_rows=2_200, shard_rows=2_200)
    config = RunConfig(model=tiny_model, device="cpu", window_rows=2_200, shard_rows=2_200, language_workers=2)
    planned = runner.plan(runner.validate([str(src)], tmp_path / "dask", config))
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        futures = [client.submit(runner.label_shard, shard, planned.config, str(tmp_path / "dask"), pure=False)
                   for shard in planned.todo]
        results = client.gather(futures)
        daemonic = list(client.run(lambda: multiprocessing.current_process().daemon).values())
        served = list(client.run(lambda: [(p.texts, p.broken) for p in language_pool._pools.values()]).values())
    assert daemonic == [True] and sum(r.rows for r in results) == alone.rows == 4_400
    assert served == [[(4_400, False)]]  # every text of both shards went to the worker's own pool
    assert labels(tmp_path / "dask").equals(labels(tmp_path / "alone"))
