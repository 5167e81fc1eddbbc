"""Repeated texts are labelled once per shard (issue 24 part 1): same results, fewer rows through the model."""

from __future__ import annotations

import json
import tracemalloc

import numpy as np
import pyarrow as pa
import pytest
from conftest import SAME_MATHS_ATOL, assert_same_labels, labels, make_texts, write_corpus

from emodraw_batch.config import RunConfig
from emodraw_batch.errors import OutputError
from emodraw_batch.inference.classifier import Prediction
from emodraw_batch.job import runner
from emodraw_batch.job.dedup import Repeats
from emodraw_batch.text import OK, prepare

LONG = "some tweet text repeated to reach a realistic length " * 2
PROBS = [f"prob_{label}" for label in ("sadness", "joy", "love", "anger", "fear", "surprise")]


def repeated_corpus(n: int = 400, seed: int = 21) -> list[str | None]:
    """Distinct texts, each repeated 1-4 times at random places, with null, empty and blank rows and a
    copy that differs from its original only by what cleaning removes (a zero-width space)."""
    rng = np.random.default_rng(seed)
    distinct = make_texts(n // 3, seed=seed, max_words=30)
    rows: list[str | None] = [distinct[i] for i in rng.integers(0, len(distinct), size=n)]
    rows[5], rows[17], rows[40], rows[41] = None, "", "   ", "\u200b"
    rows[60] = rows[61][:3] + "\u200b" + rows[61][3:]  # the same text for the model as row 61
    return rows


def model_rows(texts: list[str | None], shards: list[slice]) -> tuple[int, int]:
    """(rows with text, distinct model inputs summed over the shards)."""
    ok = distinct = 0
    for part in shards:
        cleaned, status = prepare(pa.array(texts[part], pa.string()))
        kept = [t for t, s in zip(cleaned, status) if s == OK]
        ok, distinct = ok + len(kept), distinct + len(set(kept))
    return ok, distinct


def count_model_rows(monkeypatch, config: RunConfig, resolved: bool = True) -> list[int]:
    """Record how many texts each window sends to the tokenizer and the model (a long text is one,
    whatever its chunks): the classifier the shard tasks use (precision and runtime resolved once,
    as the plan hands them on), or `classify`'s (`resolved=False`)."""
    from emodraw_batch.job.validate import resolve

    clf = runner.classifier_for(resolve(config)[0] if resolved else config)
    sent: list[int] = []
    encode = clf.encode
    monkeypatch.setattr(clf, "encode", lambda texts: (sent.append(len(texts)), encode(texts))[1])
    return sent


@pytest.mark.parametrize("long_texts", ["truncate", "chunk"])
def test_copies_get_bit_identical_results_equal_to_no_dedup(tiny_model, tmp_path, monkeypatch, long_texts):
    texts = repeated_corpus()
    corpus = write_corpus(tmp_path / "in.parquet", texts, row_group_size=100)
    # Windows of 37 rows: repeats within a window and across windows; shards of 200 rows: the memory is per shard.
    config = RunConfig(model=tiny_model, device="cpu", max_length=24, window_rows=37, shard_rows=200, long_texts=long_texts)
    sent = count_model_rows(monkeypatch, config)
    on = runner.run([str(corpus)], tmp_path / "on", config)
    ok, distinct = model_rows(texts, [slice(0, 200), slice(200, 400)])
    assert sum(sent) == distinct < ok  # each distinct text of a shard went through the model once
    sent.clear()
    off = runner.run([str(corpus)], tmp_path / "off", config.model_copy(update={"dedup": False}))
    assert sum(sent) == ok
    a, b = labels(tmp_path / "on"), labels(tmp_path / "off")
    assert_same_labels(a, b)  # rows in = rows out, order, statuses, labels; probabilities within 1e-5
    assert a["status"].to_pylist()[5] == "null" and a["status"].to_pylist()[17] == "empty"
    assert a["status"].to_pylist()[40] == a["status"].to_pylist()[41] == "blank"
    # Every copy of a text (as the model sees it) carries exactly the same numbers.
    model_text = [t.replace("\u200b", "") if t else t for t in texts]
    for shard in (range(0, 200), range(200, 400)):
        first: dict[str, dict] = {}
        for i in shard:
            if a["status"][i].as_py() != "ok":
                continue
            row = {c: a[c][i].as_py() for c in [*PROBS, "emotion_score", "emotion", "n_chunks", "n_tokens", "truncated"]}
            assert first.setdefault(model_text[i], row) == row, i
    assert a.slice(60, 1).select(PROBS).equals(a.slice(61, 1).select(PROBS))
    # chunk mode: repeated long texts (several windows each) were chunked and run once, like the others
    assert (max(a["n_chunks"].to_pylist()) > 1) == (long_texts == "chunk")
    assert (on.repeats, off.repeats) == (ok - distinct, 0)
    manifest = json.loads((tmp_path / "on" / "manifest.json").read_text())
    assert manifest["summary"]["repeats"] == ok - distinct
    assert sum(o["repeats"] for o in manifest["outputs"]) == ok - distinct
    assert [o["repeats"] for o in manifest["outputs"]] == [model_rows(texts, [s])[0] - model_rows(texts, [s])[1]
                                                          for s in (slice(0, 200), slice(200, 400))]
    assert manifest["config"]["dedup"] is True and manifest["fingerprint"]["dedup"] is True


def test_a_resumed_run_reports_the_repeats_and_refuses_a_changed_dedup(tiny_model, tmp_path):
    texts = repeated_corpus(200, seed=4)
    corpus = write_corpus(tmp_path / "in.parquet", texts, row_group_size=50)
    config = RunConfig(model=tiny_model, device="cpu", max_length=24, window_rows=40, shard_rows=100)
    first = runner.run([str(corpus)], tmp_path / "out", config)
    assert first.repeats > 0
    again = runner.run([str(corpus)], tmp_path / "out", config)  # every shard kept: counts from the files
    assert (again.resumed, again.repeats) == (2, first.repeats)
    with pytest.raises(OutputError, match="dedup: True before, False now"):
        runner.run([str(corpus)], tmp_path / "out", config.model_copy(update={"dedup": False}))


def test_a_job_started_before_dedup_resumes_with_no_dedup_only(tiny_model, tmp_path):
    corpus = write_corpus(tmp_path / "in.parquet", repeated_corpus(100, seed=6), row_group_size=50)
    off = RunConfig(model=tiny_model, device="cpu", max_length=24, shard_rows=50, dedup=False)
    runner.run([str(corpus)], tmp_path / "out", off)
    record = json.loads((tmp_path / "out" / "run.json").read_text())
    del record["fingerprint"]["dedup"]  # run.json as the version before dedup wrote it
    (tmp_path / "out" / "run.json").write_text(json.dumps(record))
    assert runner.run([str(corpus)], tmp_path / "out", off).resumed == 2
    (tmp_path / "out" / "run.json").write_text(json.dumps(record))
    with pytest.raises(OutputError, match="dedup: False before, True now"):
        runner.run([str(corpus)], tmp_path / "out", off.model_copy(update={"dedup": True}))


def test_classify_labels_repeats_once(tiny_model, monkeypatch):
    from emodraw_batch import classify

    texts = ["so happy today", None, "so happy today", "rain again", "so happy today", "rain again"]
    config = RunConfig(model=tiny_model, device="cpu")
    sent = count_model_rows(monkeypatch, config, resolved=False)
    on = classify(texts, model=tiny_model, device="cpu")
    assert sent == [2]
    off = classify(texts, model=tiny_model, device="cpu", dedup=False)
    assert sent == [2, 5]
    assert on["status"].to_list() == off["status"].to_list() and on.height == 6
    probs = on.select(PROBS).to_numpy()
    assert (probs[0] == probs[2]).all() and (probs[0] == probs[4]).all() and (probs[3] == probs[5]).all()
    np.testing.assert_allclose(probs, off.select(PROBS).to_numpy(), atol=SAME_MATHS_ATOL)


def test_dedup_memory_is_bounded_on_a_million_row_shard():
    """Hashes and results only, never the texts: state <= 90 bytes per distinct text on 1,000,000 distinct
    texts of ~120 characters (keeping the texts alone would take ~170 bytes per text)."""
    repeats = Repeats()
    rows, window = 1_000_000, 50_000
    tracemalloc.start()
    try:
        for start in range(0, rows, window):
            texts = [f"{i:012d} {LONG}" for i in range(start, start + window)]
            plan = repeats.plan(texts + texts[:10])  # a few repeats within the window too
            n = len(plan.run)
            got = repeats.serve(plan, Prediction(np.full((n, 6), 0.5, np.float32), np.ones(n, np.int32), np.zeros(n, bool)))
            assert len(got.probs) == window + 10 and plan.repeats == 10
            del texts, plan, got
        held, _peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert repeats.nbytes / rows <= 90
    assert held / rows <= 90, held / rows  # what the process still holds: nothing of the texts
    # The peak too, window texts included (~9 bytes a row): 66 measured; 97 when the results were one
    # growable array, copied as it grew.
    assert _peak / rows <= 80, _peak / rows


def fake_prediction(texts: list[str]) -> Prediction:
    """What a model gives these texts: a value of each text's own (its number), the same every time it runs."""
    values = np.array([int(t.split()[1]) for t in texts], dtype=np.float32)
    return Prediction(np.repeat(values[:, None], 6, axis=1), values.astype(np.int32), np.zeros(len(texts), bool))


def test_a_bounded_memory_serves_every_copy_and_forgets_only_texts_older_than_half_of_it():
    """`Repeats(limit)`: windows planned one ahead of being served, as in a run. Every copy gets its text's
    result; a text runs again only after at least limit / 2 other texts were new since it last ran; the state
    holds about `limit` texts, not the stream's 3,000 distinct ones."""
    rng = np.random.default_rng(3)
    limit, window = 40, 25
    repeats = Repeats(limit)
    # A new text every ~3 rows; the others repeat recent texts, now and then an older one (geometric).
    stream = [f"text {int(n)}" for n in np.maximum((np.arange(4000) * 0.3).astype(int) - rng.geometric(0.08, 4000) + 1, 0)]
    windows = [stream[i:i + window] for i in range(0, len(stream), window)]
    last_run: dict[str, int] = {}  # the slot each text took when it last ran
    reruns = 0
    planned = [repeats.plan(windows[0])]
    for k, texts in enumerate(windows):
        if k + 1 < len(windows):
            planned.append(repeats.plan(windows[k + 1]))  # the next window is planned before this one is served
        plan = planned[k]
        ran = [texts[i] for i in plan.run]
        for slot, text in enumerate(ran, start=plan.first_slot):
            if text in last_run:
                reruns += 1
                assert slot - last_run[text] >= limit // 2, (text, slot, last_run[text])
            last_run[text] = slot
        served = repeats.serve(plan, fake_prediction(ran))
        np.testing.assert_array_equal(served.probs, fake_prediction(texts).probs)  # every copy, its own text's result
        assert repeats.nbytes <= 49 * (limit + 2 * window)  # two generations, and a window past the limit
    assert len(set(stream)) > 25 * limit and reruns > 0
    assert sum(len(p.run) for p in planned) < len(stream) // 2  # most copies were still served, not run


def test_a_run_with_a_small_dedup_memory_labels_like_no_dedup(tiny_model, tmp_path):
    """dedup_texts far below the shard's distinct texts: older repeats run again, nothing else changes."""
    texts = repeated_corpus(400, seed=9)
    corpus = write_corpus(tmp_path / "in.parquet", texts, row_group_size=100)
    config = RunConfig(model=tiny_model, device="cpu", max_length=24, window_rows=37, dedup_texts=10)
    small = runner.run([str(corpus)], tmp_path / "small", config)
    whole = runner.run([str(corpus)], tmp_path / "whole", config.model_copy(update={"dedup_texts": 1_000_000}))
    off = runner.run([str(corpus)], tmp_path / "off", config.model_copy(update={"dedup": False}))
    assert_same_labels(labels(tmp_path / "small"), labels(tmp_path / "off"))  # rows, order, statuses, labels
    assert small.rows == off.rows == len(texts)
    ok, distinct = model_rows(texts, [slice(0, 400)])
    assert whole.repeats == ok - distinct and 0 < small.repeats < whole.repeats
