"""The core job: parity with transformers.pipeline, batching invariance, order, contract."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import SAME_MATHS_ATOL, make_texts, write_corpus

from emodraw_batch.inference.batching import invert, length_order, pack
from emodraw_batch.config import load_config
from emodraw_batch.inference.classifier import EmotionClassifier
from emodraw_batch.job.runner import run


def labels_of(out_dir) -> pa.Table:
    files = sorted((out_dir / "labels").glob("*.parquet"))
    return pa.concat_tables([pq.read_table(f) for f in files])


def test_pack_covers_every_row_once_within_budget():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 200, size=5000)
    batches = list(pack(lengths, budget=1024))
    seen = np.concatenate(batches)
    assert sorted(seen.tolist()) == list(range(len(lengths)))
    for batch in batches:
        # rows x longest row <= budget, unless a single row is longer than the budget
        assert len(batch) * lengths[batch].max() <= 1024 or len(batch) == 1
    order = length_order(lengths)
    assert np.array_equal(order[invert(order)], np.arange(len(lengths)))


def test_parity_with_transformers_pipeline(tiny_model):
    from transformers import pipeline

    texts = make_texts(60, seed=3, max_words=20)
    clf = EmotionClassifier(tiny_model, device="cpu", max_length=64)
    pred = clf(texts)
    pipe = pipeline("text-classification", model=tiny_model, top_k=None, device="cpu")
    reference = pipe(texts, batch_size=8, truncation=True, max_length=64)
    expected = np.array([[{d["label"]: d["score"] for d in row}[label] for label in clf.labels] for row in reference])
    assert np.abs(pred.probs - expected).max() < SAME_MATHS_ATOL  # other batches and padding
    assert [clf.labels[i] for i in pred.probs.argmax(1)] == [row[0]["label"] for row in reference]
    np.testing.assert_allclose(pred.probs.sum(axis=1), 1.0, atol=SAME_MATHS_ATOL)
    # The random model must not be trivially constant, or parity would prove little.
    assert len({row[0]["label"] for row in reference}) > 1


def test_the_test_model_computes_in_fp32_within_a_tenth_of_the_same_maths_tolerance(tiny_model):
    """SAME_MATHS_ATOL assumes rounding stays at a few ulps per layer. The test model's own fp32 error
    (against the same model in fp64) must be far below it, or two orders of the same maths could
    differ by more than the tolerance without any bug (a too-wide random initialiser did that)."""
    import copy

    import torch

    from emodraw_batch.inference.batcher import pad_batch

    clf = EmotionClassifier(tiny_model, device="cpu", precision="fp32")
    ids, _ = clf.encode(make_texts(200, seed=11, max_words=80))
    lengths = np.array([len(i) for i in ids])
    flat = np.concatenate([np.asarray(i) for i in ids])
    input_ids, mask = pad_batch(flat, np.cumsum(lengths) - lengths, lengths, clf.batcher.pad_id)
    fp32 = clf.backend.run(input_ids, lengths).numpy()
    with torch.inference_mode():
        model64 = copy.deepcopy(clf.model).double()  # a copy: the loaded model may be shared
        fp64 = model64(input_ids=torch.from_numpy(input_ids), attention_mask=torch.from_numpy(mask))
    assert np.abs(fp32 - fp64.logits.softmax(-1).numpy()).max() < SAME_MATHS_ATOL / 10


@pytest.mark.parametrize("batch_tokens,window_rows", [(64, 7), (512, 50), (100_000, 10_000)])
def test_budget_and_window_do_not_change_results(tiny_model, tmp_path, batch_tokens, window_rows):
    corpus = write_corpus(tmp_path / "in.parquet", make_texts(300, seed=5, max_words=60), row_group_size=40)
    base = load_config(model=tiny_model, device="cpu", max_length=48)
    run([str(corpus)], tmp_path / "ref", base)
    run([str(corpus)], tmp_path / "alt", base.model_copy(update=dict(batch_tokens=batch_tokens, window_rows=window_rows)))
    ref, alt = labels_of(tmp_path / "ref"), labels_of(tmp_path / "alt")
    assert ref["emotion"].to_pylist() == alt["emotion"].to_pylist()
    prob_cols = [c for c in ref.column_names if c.startswith("prob_")]
    diff = max(np.abs(ref[c].to_numpy() - alt[c].to_numpy()).max() for c in prob_cols)
    assert diff < SAME_MATHS_ATOL


def test_order_rows_and_passthrough_across_files_and_row_groups(tiny_model, tmp_path):
    texts = make_texts(500, seed=9)
    extra = {"score_in": pa.array(np.arange(500, dtype=np.float64)), "tag": pa.array([f"t{i % 7}" for i in range(500)])}
    write_corpus(tmp_path / "in" / "a.parquet", texts[:200], row_group_size=33, start_id=0,
                 **{k: v.slice(0, 200) for k, v in extra.items()})
    write_corpus(tmp_path / "in" / "b" / "c.parquet", texts[200:], row_group_size=50, start_id=200,
                 **{k: v.slice(200) for k, v in extra.items()})
    cfg = load_config(model=tiny_model, device="cpu", max_length=32, shard_rows=90, window_rows=37)
    summary = run([str(tmp_path / "in")], tmp_path / "out", cfg)
    out = labels_of(tmp_path / "out")
    assert summary.rows == out.num_rows == 500
    assert out["id"].to_pylist() == list(range(500))  # order kept (shards are listed in input order)
    assert out["text"].to_pylist() == texts
    assert out["score_in"].to_pylist() == list(range(500))
    assert out["tag"].to_pylist() == [f"t{i % 7}" for i in range(500)]
    assert summary.outputs > 2  # several shards really were written
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert sum(o["rows"] for o in manifest["outputs"]) == 500
    for o in manifest["outputs"]:
        assert pq.ParquetFile(tmp_path / "out" / o["output"]).metadata.num_rows == o["rows"]
    assert not list((tmp_path / "out" / "labels").glob(".*"))  # no temporary files left


def test_output_contract(tiny_model, tmp_path):
    texts = ["short one", "", None, "   ", " ".join(["word"] * 200), "another fine day"]
    corpus = write_corpus(tmp_path / "in.parquet", texts)
    cfg = load_config(model=tiny_model, device="cpu", max_length=16, long_texts="truncate")  # chunks: test_chunks.py
    run([str(corpus)], tmp_path / "out", cfg)
    files = list((tmp_path / "out" / "labels").glob("*.parquet"))
    out = pq.read_table(files[0])
    schema = out.schema
    assert schema.names[:2] == ["id", "text"]
    assert schema.field("emotion").type == pa.string()
    assert schema.field("n_tokens").type == pa.int32() and schema.field("truncated").type == pa.bool_()
    prob_cols = [c for c in schema.names if c.startswith("prob_")]
    assert prob_cols == ["prob_sadness", "prob_joy", "prob_love", "prob_anger", "prob_fear", "prob_surprise"]
    rows = out.to_pylist()
    assert [r["status"] for r in rows] == ["ok", "empty", "null", "blank", "ok", "ok"]
    for r in rows:
        if r["status"] == "ok":
            probs = [r[c] for c in prob_cols]
            assert abs(sum(probs) - 1) < SAME_MATHS_ATOL
            assert r["emotion_score"] == max(probs) and r["emotion"] == prob_cols[probs.index(max(probs))][5:]
        else:
            assert r["emotion"] is None and r["emotion_score"] is None and r["n_tokens"] == 0
    assert rows[4]["truncated"] and rows[4]["n_tokens"] == 16
    assert not rows[0]["truncated"] and rows[0]["n_tokens"] < 16
    meta = json.loads(schema.metadata[b"emodraw"])
    assert meta["model"] == tiny_model and meta["config"]["max_length"] == 16 and len(meta["labels"]) == 6
    assert pq.ParquetFile(files[0]).metadata.row_group(0).column(0).compression == "ZSTD"


def test_max_length_is_capped_at_the_position_limit(tiny_model):
    clf = EmotionClassifier(tiny_model, device="cpu", max_length=4096)
    assert clf.max_length == 64  # the fixture's max_position_embeddings
    pred = clf([" ".join(["word"] * 500)])
    assert pred.n_tokens[0] == 64 and pred.truncated[0]
