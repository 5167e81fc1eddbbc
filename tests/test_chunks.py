"""Long texts in chunk mode (`--long-texts chunk`): windows, aggregation, equality with truncate mode
for texts that fit, pipelining, resume refusal and bounded memory."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import SAME_MATHS_ATOL, make_texts, write_corpus

from emodraw_batch import classify
from emodraw_batch.config import RunConfig, load_config
from emodraw_batch.errors import ConfigError, OutputError
from emodraw_batch.inference.backends import Pending
from emodraw_batch.inference.chunks import ChunkMap, Chunker, aggregate
from emodraw_batch.inference.token_rows import EncodedIds
from emodraw_batch.job import runner

CLS, SEP = 2, 3
CHUNK = {"long_texts": "chunk", "chunk_overlap": 8, "max_chunks": 4}


def text_ids(n: int) -> list[int]:
    """A text of n tokens, special tokens included: [CLS] 1000 1001 ... [SEP]."""
    return [CLS, *range(1000, 1000 + n - 2), SEP]


@pytest.mark.parametrize("max_length, overlap, cap", [(16, 0, 50), (16, 4, 50), (32, 8, 50), (16, 4, 3), (32, 15, 2)])
@pytest.mark.parametrize("n", [3, 15, 16, 17, 30, 31, 100, 257])
def test_windows_cover_the_text_with_their_overlap_and_never_split_special_tokens(n, max_length, overlap, cap):
    chunker = Chunker(max_length, overlap, cap)
    body, step = max_length - 2, max_length - 2 - overlap
    expected = 1 if n <= max_length else 1 + -(-(n - 2 - body) // step)  # ceil
    assert chunker.count(n) == expected
    encoded, chunks = chunker.split(EncodedIds.from_rows([text_ids(n), text_ids(5)]))
    rows = encoded.tolist()
    kept = min(expected, cap)
    assert chunks.n_chunks.tolist() == [kept, 1] and chunks.starts.tolist() == [0, kept]
    assert len(rows) == kept + 1 and rows[-1] == text_ids(5)
    windows = rows[:kept]
    for w in windows:
        assert w[0] == CLS and w[-1] == SEP and len(w) <= max_length
        assert CLS not in w[1:-1] and SEP not in w[1:-1]
    bodies = [w[1:-1] for w in windows]
    for a, b in zip(bodies, bodies[1:]):
        assert a[len(a) - overlap :] == b[:overlap] if overlap else True
        assert len(a) == body  # only the last window may be shorter
    seen = bodies[0] + [t for b in bodies[1:] for t in b[overlap:]]
    assert seen == text_ids(n)[1:-1][: len(seen)]
    if expected <= cap:
        assert seen == text_ids(n)[1:-1]  # the whole text, each token once


def test_aggregations_and_one_chunk_texts_kept_exactly():
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [0.2, 0.3, 0.5], [0.3, 0.3, 0.4]], dtype=np.float32)
    chunks = ChunkMap(np.array([0, 1, 3]), np.array([1, 2, 1]), np.array([10, 60, 10]))
    weights = np.array([10, 32, 16, 10])
    weighted = aggregate(probs, chunks, weights, "weighted")
    np.testing.assert_allclose(weighted[1], (32 * probs[1] + 16 * probs[2]) / 48, atol=1e-7)
    np.testing.assert_allclose(aggregate(probs, chunks, weights, "mean")[1], (probs[1] + probs[2]) / 2, atol=1e-7)
    top = np.maximum(probs[1], probs[2])
    np.testing.assert_allclose(aggregate(probs, chunks, weights, "max")[1], top / top.sum(), atol=1e-7)
    for how in ("weighted", "mean", "max"):
        out = aggregate(probs, chunks, weights, how)
        assert np.array_equal(out[[0, 2]], probs[[0, 3]])  # bit-identical: truncate mode's probabilities
        np.testing.assert_allclose(out.sum(axis=1), 1, atol=1e-6)


def test_overlap_must_leave_the_windows_room():
    with pytest.raises(ConfigError, match="chunk_overlap"):
        load_config(max_length=32, chunk_overlap=20)
    with pytest.raises(ConfigError, match="--chunk-overlap"):
        Chunker(16, 14, 4)


@pytest.fixture(scope="module")
def mixed_texts() -> list[str | None]:
    long = [" ".join(make_texts(12, seed=s, max_words=30)) for s in range(6)]  # hundreds of tokens each
    texts: list[str | None] = list(make_texts(60, seed=3, max_words=12))
    for i, t in enumerate(long):
        texts.insert(7 * i + 3, t)
    return [*texts[:10], None, "", "   \u200b ", *texts[10:]]


def test_texts_that_fit_get_the_same_labels_in_both_modes(tiny_model, mixed_texts):
    settings = dict(model=tiny_model, device="cpu", max_length=32, window_rows=17, batch_tokens=256)
    trunc = classify(mixed_texts, **settings, long_texts="truncate")
    chunk = classify(mixed_texts, **settings, **CHUNK)
    assert chunk.height == trunc.height == len(mixed_texts)
    assert chunk["text"].to_list() == mixed_texts  # rows in = rows out, in order
    assert chunk["status"].to_list()[10:13] == ["null", "empty", "blank"]
    assert chunk["n_chunks"].to_list()[10:13] == [0, 0, 0] and chunk["emotion"].to_list()[10:13] == [None] * 3
    fits = (trunc["status"] == "ok") & (trunc["n_tokens"] < 32) & ~trunc["truncated"]
    assert fits.sum() > 40 and (~fits & (trunc["status"] == "ok")).sum() >= 6
    assert chunk.filter(fits)["n_chunks"].to_list() == [1] * int(fits.sum())
    assert chunk.filter(fits)["emotion"].to_list() == trunc.filter(fits)["emotion"].to_list()
    assert chunk.filter(fits)["n_tokens"].to_list() == trunc.filter(fits)["n_tokens"].to_list()
    probs = [c for c in chunk.columns if c.startswith("prob_")]
    np.testing.assert_allclose(chunk.filter(fits)[probs].to_numpy(), trunc.filter(fits)[probs].to_numpy(), atol=SAME_MATHS_ATOL)
    longer = chunk.filter(~fits & (chunk["status"] == "ok"))
    assert min(longer["n_chunks"]) >= 2 and max(longer["n_tokens"]) > 32
    # the six long texts exceed 4 windows: cut after the 4th, flagged; the others are seen whole
    assert longer.filter(longer["n_chunks"] == 4)["truncated"].all()
    assert not longer.filter(longer["n_chunks"] < 4)["truncated"].any()


def test_windows_pipelined_across_submit_and_collect(tiny_model, mixed_texts, monkeypatch):
    """On a GPU window k is queued before window k-1 is collected; chunk rows must follow their window."""
    config = RunConfig(model=tiny_model, device="cpu", max_length=32, window_rows=9, batch_tokens=256, **CHUNK)
    clf = runner.classifier_for(config)
    table = pa.table({"text": pa.array(mixed_texts, pa.string())})
    windows = [table.slice(s, 9) for s in range(0, table.num_rows, 9)]
    schema = runner.output_schema(table.schema, clf.columns, {})
    at_once: list[pa.Table] = []
    runner.label_windows([table], config, clf, schema, at_once.append)

    class Event:  # a stand-in for a CUDA event: the window is still running when the next is queued
        def synchronize(self) -> None:
            pass

    submit = clf.submit
    monkeypatch.setattr(clf, "submit", lambda ids: (lambda p: Pending(p.rows, p.order, p.probs, Event()))(submit(ids)))
    piped: list[pa.Table] = []
    runner.label_windows(windows, config, clf, schema, piped.append)
    assert len(at_once) > 3  # token-bounded windows: several even from one table
    a, b = pa.concat_tables(at_once), pa.concat_tables(piped)
    assert b.num_rows == a.num_rows and b["text"].equals(a["text"]) and b["n_chunks"].equals(a["n_chunks"])
    np.testing.assert_allclose(b["emotion_score"].to_numpy(zero_copy_only=False), a["emotion_score"].to_numpy(zero_copy_only=False),
                               atol=SAME_MATHS_ATOL)


def test_a_repeated_sentence_keeps_its_probabilities():
    sentence = "i am feeling really scared and nervous about the exam tomorrow"
    text = ". ".join([sentence] * 60)  # ~700 tokens: 8 windows of 128
    out = classify([sentence, text], model="offline", device="cpu", long_texts="chunk", max_chunks=16)
    probs = out.select([c for c in out.columns if c.startswith("prob_")]).to_numpy()
    assert out["n_chunks"].to_list()[0] == 1 and out["n_chunks"].to_list()[1] >= 6
    assert not out["truncated"][1] and out["emotion"][0] == out["emotion"][1] == "fear"
    assert np.abs(probs[1] - probs[0]).max() < 0.05, probs


def test_a_megabyte_text_is_cut_before_tokenizing(tiny_model):
    clf = runner.classifier_for(RunConfig(model=tiny_model, device="cpu", max_length=32, **CHUNK))
    chunker = clf.batcher.chunker
    huge = "i feel happy today " * 60_000  # 1.1 MB
    texts, cut = chunker.cut([huge, "short"], "right")
    assert cut.tolist() == [True, False] and len(texts[0]) == chunker.char_limit < len(huge) // 100
    ids, truncated = clf.encode([huge, "short"])
    assert truncated.tolist() == [True, False]
    assert ids.chunks.n_chunks.tolist() == [4, 1] and ids.chunks.n_tokens[0] == chunker.token_limit


def run_job(src, out, **settings):
    config = RunConfig(model=settings.pop("model"), device="cpu", max_length=32, **settings)
    return runner.run([str(src)], out, config)


def test_output_records_the_mode_and_resume_refuses_another(tiny_model, tmp_path):
    src = write_corpus(tmp_path / "in.parquet", [" ".join(make_texts(5, seed=1, max_words=20))] + make_texts(20, seed=2))
    out = tmp_path / "out"
    summary = run_job(src, out, model=tiny_model, **CHUNK)
    table = pq.read_table(out / "labels")
    assert summary.rows == table.num_rows == 21 and table.schema.field("n_chunks").type == pa.int32()
    assert table["n_chunks"][0].as_py() > 1
    meta = json.loads(table.schema.metadata[b"emodraw"])
    assert meta["long_texts"] == {"mode": "chunk", "overlap": 8, "max_chunks": 4, "aggregation": "weighted"}
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["fingerprint"]["long_texts"] == "chunk" and manifest["model"]["long_texts"]["max_chunks"] == 4
    run_job(src, out, model=tiny_model, **CHUNK)  # the same job: resumes (nothing left to do)
    for change in ({"long_texts": "truncate"}, {"chunk_overlap": 4}, {"max_chunks": 5}, {"chunk_aggregation": "max"}):
        with pytest.raises(OutputError, match="holds the output of a different job") as error:
            run_job(src, out, model=tiny_model, **{**CHUNK, **change})
        assert next(iter(change)) in str(error.value) and "\n" not in str(error.value)


JOB = """
import json, re, sys
from emodraw_batch.config import load_config
from emodraw_batch.job.runner import run
cfg = load_config(model=sys.argv[1], device="cpu", max_length=64, window_rows=500, long_texts="chunk",
                  chunk_overlap=0, max_chunks=64, batch_tokens=4096, runtime="torch")
summary = run([sys.argv[2]], sys.argv[3], cfg)
peak = int(re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1))
print(json.dumps({"rows": summary.rows, "truncated": summary.truncated, "peak_kib": peak}))
"""


def test_a_window_of_long_texts_costs_no_more_memory_than_one_of_short_texts(tiny_model, tmp_path):
    """Bound: a chunk-mode window holds at most window_rows x max_length characters of text (a token
    takes at least one), so 500 texts of ~1,500 tokens (~25 windows each) peak within 60 MiB of 500
    texts of ~100 tokens (measured: +171 MiB when windows were cut by rows only, and the Rust calls
    by 4,096 texts)."""
    rng = np.random.default_rng(0)
    words = np.array("good bad sad glad mad calm fear joy love wow".split())

    def peak(n_words: int) -> dict:
        texts = [" ".join(words[rng.integers(0, len(words), size=n_words)]) for _ in range(500)]
        src = write_corpus(tmp_path / f"in{n_words}.parquet", texts, row_group_size=500)
        out = subprocess.run([sys.executable, "-c", JOB, tiny_model, str(src), str(tmp_path / f"out{n_words}")],
                             capture_output=True, text=True, check=True, timeout=600)
        return json.loads(out.stdout.strip().splitlines()[-1])

    short, long = peak(50), peak(800)
    assert short["rows"] == long["rows"] == 500 and long["truncated"] == 0
    growth_mib = (long["peak_kib"] - short["peak_kib"]) / 1024
    assert growth_mib < 60, (short, long)
