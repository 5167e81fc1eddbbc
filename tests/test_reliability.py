"""Bad input, schema drift, safe loading and resume: every row kept once, nothing half-written."""

from __future__ import annotations

import json
import shutil

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from conftest import SAME_MATHS_ATOL, make_texts, write_corpus

from emodraw_batch.config import load_config
from emodraw_batch.errors import InputError, ModelError, OutputError
from emodraw_batch.inference.classifier import EmotionClassifier
from emodraw_batch.job.runner import classifier_for, label_shard, run
from emodraw_batch.job.validate import validate


def read_labels(out_dir) -> pa.Table:
    return pa.concat_tables(
        [pq.read_table(f) for f in sorted((out_dir / "labels").glob("*.parquet"))], promote_options="default"
    )


@pytest.fixture()
def cfg(tiny_model):
    return load_config(model=tiny_model, device="cpu", max_length=32)


class Spy:
    """Wraps the real classifier and records every text sent to it."""

    def __init__(self, inner: EmotionClassifier) -> None:
        self.inner, self.seen = inner, []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def encode(self, texts):
        # Every text reaches the model through encode (tokenization), whichever path runs it.
        self.seen.extend(texts)
        return self.inner.encode(texts)

    def __call__(self, texts):
        self.seen.extend(texts)
        return self.inner(texts)


def test_null_empty_blank_kept_and_never_sent_to_the_model(cfg, tmp_path):
    texts = ["fine text", None, "", "   \t\n ", "\u200b\u200b", "another one"]
    corpus = write_corpus(tmp_path / "in.parquet", texts)
    job = validate([str(corpus)], tmp_path / "out", cfg)
    spy = Spy(classifier_for(cfg))
    result = label_shard(job.shards[0], cfg, tmp_path / "out", classifier=spy)
    out = pq.read_table(tmp_path / "out" / result.output).to_pylist()
    assert [r["status"] for r in out] == ["ok", "null", "empty", "blank", "blank", "ok"]
    assert spy.seen == ["fine text", "another one"]
    assert [r["emotion"] is None for r in out] == [False, True, True, True, True, False]
    assert [r["text"] for r in out] == texts  # passthrough untouched


def test_invalid_utf8_surrogates_and_control_characters(cfg, tmp_path):
    raw = [
        b"ok text",
        b"bad \xff\xfe bytes",
        "lone surrogate \ud800 here".encode("utf-8", "surrogatepass"),
        "ctrl\x00\x07 chars\x1b[31m".encode(),
        "zero\u200bwidth\ufeff".encode(),
    ]
    column = pa.array(raw, pa.binary()).view(pa.string())  # as a broken writer would leave it
    pq.write_table(pa.table({"id": range(len(raw)), "text": column}), tmp_path / "in.parquet")
    run([str(tmp_path / "in.parquet")], tmp_path / "out", cfg)
    out = read_labels(tmp_path / "out")
    assert out["status"].to_pylist() == ["ok"] * len(raw)
    assert None not in out["emotion"].to_pylist()
    # The passthrough column is kept exactly as read, byte for byte.
    assert out["text"].cast(pa.binary()).to_pylist() == raw


def test_odd_but_valid_texts_are_classified(cfg, tmp_path):
    texts = [
        "so happy 😀🎉🔥 today",
        "Я очень рад сегодня",
        "今日はとても嬉しい",
        "مرحبا كيف حالك",
        "a" * 5000,
        "<p>great <b>product</b></p> https://example.com/a?b=c&d=e #love @you",
    ]
    corpus = write_corpus(tmp_path / "in.parquet", texts)
    # Every row through the model, each cut at max_length: the other languages are not skipped
    # (tests/test_language.py covers that) and the 5,000-character text is not chunked (test_chunks.py).
    cfg = cfg.model_copy(update={"languages": "any", "long_texts": "truncate"})
    summary = run([str(corpus)], tmp_path / "out", cfg)
    out = read_labels(tmp_path / "out")
    assert out["status"].to_pylist() == ["ok"] * len(texts)
    assert None not in out["emotion"].to_pylist()
    assert summary.rows == len(texts)
    assert all(n <= 32 for n in out["n_tokens"].to_pylist())


def test_cast_text_is_opt_in(cfg, tmp_path):
    pq.write_table(pa.table({"text": pa.array([1, 22, 333])}), tmp_path / "n.parquet")
    with pytest.raises(InputError, match="--cast-text"):
        validate([str(tmp_path / "n.parquet")], tmp_path / "out", cfg)
    run([str(tmp_path / "n.parquet")], tmp_path / "out", cfg.model_copy(update={"cast_text": True}))
    out = read_labels(tmp_path / "out")
    assert out["text"].to_pylist() == [1, 22, 333]  # passthrough keeps the original type
    assert out["status"].to_pylist() == ["ok"] * 3


def test_corrupt_file_errors_first_or_is_skipped(cfg, tmp_path):
    good = write_corpus(tmp_path / "in" / "a.parquet", make_texts(20))
    data = (tmp_path / "in" / "a.parquet").read_bytes()
    (tmp_path / "in" / "b.parquet").write_bytes(data[: len(data) // 2])  # truncated: footer gone
    with pytest.raises(InputError, match="b.parquet"):
        validate([str(tmp_path / "in")], tmp_path / "out", cfg)
    assert not (tmp_path / "out").exists()  # nothing written before the error
    summary = run([str(tmp_path / "in")], tmp_path / "out", cfg.model_copy(update={"skip_bad_files": True}))
    assert summary.rows == 20
    assert [s["path"] for s in summary.skipped_files] == [str(tmp_path / "in" / "b.parquet")]
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["skipped_files"][0]["path"].endswith("b.parquet")
    assert str(good) in [i["path"] for i in manifest["inputs"]]


def test_missing_column_in_one_of_several_files(cfg, tmp_path):
    write_corpus(tmp_path / "a.parquet", ["x"])
    pq.write_table(pa.table({"id": [1], "body": ["y"]}), tmp_path / "b.parquet")
    with pytest.raises(InputError, match=r"b\.parquet.*\['id', 'body'\]"):
        validate([str(tmp_path / "a.parquet"), str(tmp_path / "b.parquet")], tmp_path / "out", cfg)


def test_schema_drift_is_unified(cfg, tmp_path):
    pq.write_table(
        pa.table({"id": pa.array([1, 2], pa.int32()), "text": pa.array(["a b", "c d"], pa.string()), "x": ["p", "q"]}),
        tmp_path / "a.parquet",
    )
    pq.write_table(
        pa.table({"id": pa.array([3], pa.int64()), "text": pa.array(["e f"], pa.large_string()), "y": [1.5]}),
        tmp_path / "b.parquet",
    )
    run([str(tmp_path / "a.parquet"), str(tmp_path / "b.parquet")], tmp_path / "out", cfg)
    frame = pl.scan_parquet(tmp_path / "out" / "labels" / "*.parquet").collect()  # one schema for all files
    assert frame["id"].to_list() == [1, 2, 3] and frame["id"].dtype == pl.Int64
    assert frame["x"].to_list() == ["p", "q", None] and frame["y"].to_list() == [None, None, 1.5]


def test_schema_conflict_names_file_and_column(cfg, tmp_path):
    write_corpus(tmp_path / "a.parquet", ["x"])
    pq.write_table(pa.table({"id": ["not-an-int"], "text": ["y"]}), tmp_path / "b.parquet")
    with pytest.raises(InputError, match=r"'id'.*b\.parquet"):
        validate([str(tmp_path / "a.parquet"), str(tmp_path / "b.parquet")], tmp_path / "out", cfg)


def test_zero_rows_and_only_empty_texts(cfg, tmp_path):
    pq.write_table(pa.table({"id": pa.array([], pa.int64()), "text": pa.array([], pa.string())}), tmp_path / "z.parquet")
    write_corpus(tmp_path / "e.parquet", ["", None, "  "], start_id=10)
    summary = run([str(tmp_path / "z.parquet"), str(tmp_path / "e.parquet")], tmp_path / "out", cfg)
    assert summary.rows == 3 and summary.emotions == {} and summary.status == {"empty": 1, "null": 1, "blank": 1}
    files = sorted((tmp_path / "out" / "labels").glob("*.parquet"))
    assert len(files) == 2
    empty = pq.read_table(files[0])
    assert empty.num_rows == 0 and "prob_joy" in empty.column_names and "emotion" in empty.column_names


def test_duplicate_ids_are_counted_never_dropped(cfg, tmp_path):
    write_corpus(tmp_path / "a.parquet", make_texts(10), start_id=0)
    write_corpus(tmp_path / "b.parquet", make_texts(10, seed=4), start_id=7)  # ids 7, 8, 9 repeat
    summary = run(
        [str(tmp_path / "a.parquet"), str(tmp_path / "b.parquet")],
        tmp_path / "out",
        cfg.model_copy(update={"id_column": "id"}),
    )
    assert summary.rows == 20 and summary.duplicate_ids == 6


def test_pickle_weights_need_explicit_opt_in(tiny_model, tmp_path):
    import torch
    from safetensors.torch import load_file

    folder = tmp_path / "pickled"
    shutil.copytree(tiny_model, folder)
    torch.save(load_file(folder / "model.safetensors"), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    with pytest.raises(ModelError, match="--allow-pickle"):
        EmotionClassifier(str(folder), device="cpu")
    texts = make_texts(5)
    loaded = EmotionClassifier(str(folder), device="cpu", allow_pickle=True)
    reference = EmotionClassifier(tiny_model, device="cpu")
    np.testing.assert_allclose(loaded(texts).probs, reference(texts).probs, atol=SAME_MATHS_ATOL)


def test_output_folder_may_not_contain_inputs(cfg, tmp_path):
    write_corpus(tmp_path / "data" / "in.parquet", ["x"])
    with pytest.raises(OutputError, match="inside the output folder"):
        validate([str(tmp_path / "data")], tmp_path / "data", cfg)
    with pytest.raises(OutputError, match="inside the output folder"):
        validate([str(tmp_path / "data" / "in.parquet")], tmp_path, cfg)


def test_rerun_resumes_and_refuses_a_different_job(cfg, tmp_path, monkeypatch):
    corpus = write_corpus(tmp_path / "in.parquet", make_texts(200), row_group_size=20)
    small = cfg.model_copy(update={"shard_rows": 40})
    first = run([str(corpus)], tmp_path / "out", small)
    assert first.outputs == 5 and first.resumed == 0
    victim = tmp_path / "out" / "labels" / "part-00000-00004.parquet"
    victim.write_bytes(victim.read_bytes()[:100])  # a broken output is redone
    kept = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "out" / "labels").glob("*.parquet") if p != victim}
    second = run([str(corpus)], tmp_path / "out", small)
    assert second.resumed == 4 and second.rows == 200 and second.emotions == first.emotions
    assert {p: (tmp_path / "out" / "labels" / p).stat().st_mtime_ns for p in kept} == kept  # not rewritten
    # Precision `auto` is fp32 on this CPU: naming fp32 is the same job. Where CUDA makes `auto`
    # bf16 (a rerun on a GPU machine), it is another job, refused before any model loads.
    assert run([str(corpus)], tmp_path / "out", small.model_copy(update={"precision": "fp32"})).resumed == 5
    from emodraw_batch.inference import device

    monkeypatch.setattr(device, "no_gpu_here", lambda: False)  # (else device auto is the CPU without asking torch)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with pytest.raises(OutputError, match="precision: 'fp32' before, 'bf16' now"):
        validate([str(corpus)], tmp_path / "out", small.model_copy(update={"device": "auto"}))
    monkeypatch.undo()
    with pytest.raises(OutputError, match="max_length"):
        run([str(corpus)], tmp_path / "out", small.model_copy(update={"max_length": 16}))
    redo = run([str(corpus)], tmp_path / "out", small.model_copy(update={"max_length": 16}), overwrite=True)
    assert redo.resumed == 0 and redo.rows == 200


def test_a_rerun_after_an_input_changed_in_place_is_refused(cfg, tmp_path):
    corpus = write_corpus(tmp_path / "in.parquet", make_texts(60, seed=4), row_group_size=20)
    other = write_corpus(tmp_path / "other.parquet", make_texts(60, seed=5), row_group_size=20)
    first = run([str(corpus), str(other)], tmp_path / "out", cfg)
    record = json.loads((tmp_path / "out" / "run.json").read_text())
    assert {"path", "rows", "size", "mtime"} <= set(record["inputs"][0])
    # The same file name and row count, other texts: resuming would mix old and new rows.
    write_corpus(other, make_texts(60, seed=6), row_group_size=20)
    with pytest.raises(OutputError, match=r"input file '.*other\.parquet' was changed in place.*--overwrite"):
        validate([str(corpus), str(other)], tmp_path / "out", cfg)
    assert run([str(corpus), str(other)], tmp_path / "out", cfg, overwrite=True).resumed == 0
    # A run.json written before sizes and times were recorded still resumes.
    for entry in record["inputs"]:
        del entry["size"], entry["mtime"]
    (tmp_path / "out" / "run.json").write_text(json.dumps(record))
    assert run([str(corpus), str(other)], tmp_path / "out", cfg).resumed == first.outputs


def test_damaged_data_pages_name_the_file_and_row_groups(cfg, tmp_path):
    path = tmp_path / "in.parquet"
    pq.write_table(pa.table({"text": make_texts(400, seed=8)}), path, row_group_size=100, compression="zstd")
    meta = pq.ParquetFile(path).metadata
    column = meta.row_group(2).column(0)
    start = column.dictionary_page_offset or column.data_page_offset
    data = bytearray(path.read_bytes())
    data[start + 20 : start + 120] = bytes(100)  # zero out part of row group 2's pages; the footer stays intact
    path.write_bytes(bytes(data))
    with pytest.raises(InputError, match=r"in\.parquet"):
        run([str(path)], tmp_path / "out", cfg.model_copy(update={"shard_rows": 100}))
    labels = tmp_path / "out" / "labels"
    # Shards before the damage are complete; the damaged one left no file, not even a temporary one.
    assert sorted(p.name for p in labels.iterdir()) == ["part-00000-00000.parquet", "part-00000-00001.parquet"]


def test_validate_writes_nothing_and_plan_claims_the_folder(cfg, tmp_path):
    from emodraw_batch.job.plan import plan

    corpus = write_corpus(tmp_path / "in.parquet", make_texts(30, seed=3), row_group_size=10)
    out = tmp_path / "out"
    job = validate([str(corpus)], out, cfg)
    assert not out.exists()  # checks only: no folder, no run.json
    (out / "labels").mkdir(parents=True)
    stale = out / "labels" / ".part-00000-00000.parquet.999.tmp"
    stale.write_text("partial")
    job = validate([str(corpus)], out, cfg)
    assert stale.exists() and not (out / "run.json").exists()
    planned = plan(job)
    assert (out / "run.json").exists() and not stale.exists() and len(planned.todo) == 1


def test_a_rerun_with_nothing_left_loads_no_model(cfg, tmp_path):
    from emodraw_batch.inference import classifier as model
    from emodraw_batch.job.runner import classifier_settings

    corpus = write_corpus(tmp_path / "in.parquet", make_texts(30, seed=4), row_group_size=10)
    first = run([str(corpus)], tmp_path / "out", cfg)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    model.clear_cache()
    again = run([str(corpus)], tmp_path / "out", cfg)
    assert again.resumed == 1 and again.rows == first.rows and again.emotions == first.emotions
    assert model.load_count(**classifier_settings(cfg)) == 0  # described from the output files instead
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["model"] == manifest["model"]
