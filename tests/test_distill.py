"""`emodraw-batch distill`: a tiny trained teacher, a tiny student, on the CPU in seconds."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from emodraw_batch.train.distill import DistillConfig, distill, make_config
from emodraw_batch.errors import ConfigError, OutputError
from emodraw_batch.files.labelled import read_texts
from emodraw_batch.train import TrainConfig, train
from conftest import SAME_MATHS_ATOL
from test_train import StopAfter, labelled_rows, weights, write_lines

KEYS = {"agreement", "agreement_on", "agreement_test", "teacher", "student", "n_texts", "n_train", "n_held",
        "best_epoch", "config", "labels"}
MODEL_KEYS = {"model", "parameters", "bytes", "weights_bytes", "rows_per_s", "test_accuracy", "test_macro_f1"}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny teacher trained on the learnable keyword task, unlabelled texts, a labelled test file."""
    tmp = tmp_path_factory.mktemp("distill")
    cfg = TrainConfig(train=str(write_lines(tmp / "train.txt", labelled_rows(240, seed=1))),
                      val=str(write_lines(tmp / "val.txt", labelled_rows(60, seed=2))),
                      from_scratch="tiny", epochs=5, lr=1e-3, batch_size=4, vocab_size=300, device="cpu")
    train(cfg, tmp / "teacher")
    (tmp / "texts.txt").write_text("".join(f"{text}\n" for text, _ in labelled_rows(300, seed=5)))
    write_lines(tmp / "test.txt", labelled_rows(80, seed=9))
    return tmp


def student_config(tmp: Path, **overrides) -> DistillConfig:
    values = dict(teacher=str(tmp / "teacher"), texts=[str(tmp / "texts.txt")], test=str(tmp / "test.txt"),
                  student_size="tiny", epochs=4, lr=1e-3, batch_size=4, vocab_size=300, device="cpu")
    return DistillConfig(**{**values, **overrides})


@pytest.fixture(scope="module")
def distilled(setup):
    out = setup / "out"
    return out, distill(student_config(setup), out)


def test_student_agrees_with_the_teacher_well_above_chance(distilled):
    out, report = distilled
    teacher = pq.read_table(out / "teacher" / "labels", columns=["emotion"])["emotion"].to_pylist()
    shares = Counter(teacher)
    assert len(shares) == 3, shares  # the teacher uses every class, so agreeing is not trivial
    # Chance agreement is at most the share of the teacher's most frequent class.
    assert report["agreement"] >= max(shares.values()) / len(teacher) + 0.25, (report["agreement"], shares)
    assert report["agreement_test"] >= 0.75
    assert report["student"]["test_accuracy"] >= 0.6
    assert report["n_held"] == 30 and report["n_train"] == 270  # 10% of 300 texts held out


def test_distill_json_has_the_comparison(distilled):
    out, report = distilled
    saved = json.loads((out / "distill.json").read_text())
    assert KEYS <= set(saved) and saved["agreement"] == report["agreement"]
    for name in ("teacher", "student"):
        assert MODEL_KEYS <= set(saved[name]), name
        assert saved[name]["parameters"] > 0 and saved[name]["rows_per_s"] > 0
        assert saved[name]["bytes"] > saved[name]["weights_bytes"] > 0
    # The student is a `train` output folder; the teacher's labels are a `run` output with every probability.
    assert (out / "student" / "model.safetensors").is_file() and (out / "student" / "last" / "trainer_state.json").is_file()
    labels = pq.read_table(out / "teacher" / "labels")
    assert {"prob_anger", "prob_fear", "prob_joy", "emotion"} <= set(labels.column_names) and labels.num_rows == 300
    assert (out / "eval" / "student" / "report.json").is_file()


def test_resume_after_an_interruption_equals_an_uninterrupted_run(setup, distilled):
    out, report = distilled
    copy = setup / "texts-copy.txt"  # the same texts under another name, changed at the end
    copy.write_text((setup / "texts.txt").read_text())
    cfg = student_config(setup, texts=[str(copy)])
    with pytest.raises(KeyboardInterrupt):
        distill(cfg, setup / "resumed", callbacks=StopAfter(1))
    state = json.loads((setup / "resumed" / "student" / "last" / "trainer_state.json").read_text())
    assert state["epoch"] == 1
    with pytest.raises(OutputError, match="--resume"):
        distill(cfg, setup / "resumed")
    resumed = distill(make_config(setup / "resumed", resume=True), setup / "resumed", resume=True)
    expected = weights(out / "student" / "last")
    got = weights(setup / "resumed" / "student" / "last")
    assert all(np.array_equal(v, got[k]) for k, v in expected.items())
    assert resumed["agreement"] == report["agreement"]
    with pytest.raises(OutputError, match="temperature: 2.0 -> 3.0"):
        distill(cfg.model_copy(update={"temperature": 3.0}), setup / "resumed", resume=True)
    copy.write_text(copy.read_text() + "a new text\n")
    with pytest.raises(OutputError, match="texts differ"):
        distill(cfg, setup / "resumed", resume=True)


def test_a_labelled_val_file_validates_and_mixes_hard_labels(setup):
    cfg = student_config(setup, val=str(setup / "test.txt"), test=None, epochs=1, hard_weight=0.5)
    report = distill(cfg, setup / "with-val")
    assert report["agreement_on"] == "val" and report["n_held"] == 80 and report["n_train"] == 300
    assert "agreement_bench" in report and "test_accuracy" not in report["student"]


def test_texts_are_read_from_parquet_csv_plain_and_labelled_lines(tmp_path):
    pq.write_table(pa.table({"body": ["a text", None, "another one"]}), tmp_path / "t.parquet")
    (tmp_path / "t.csv").write_text("body,x\n\"a text\",1\n,2\n\"another one\",3\n")
    (tmp_path / "plain.txt").write_text("a text; with a semicolon inside\n\nanother one\n")
    (tmp_path / "labelled.txt").write_text("a text;joy\nanother one;fear\n")
    assert read_texts(tmp_path / "t.parquet", "body") == (["a text", "another one"], 1)
    assert read_texts(tmp_path / "t.csv", "body") == (["a text", "another one"], 1)
    assert read_texts(tmp_path / "plain.txt")[0] == ["a text; with a semicolon inside", "another one"]
    assert read_texts(tmp_path / "labelled.txt")[0] == ["a text", "another one"]


def test_bad_options_are_refused(setup, tmp_path):
    with pytest.raises(ConfigError, match="not both"):
        make_config(teacher="t", texts=["a"], student_size="tiny", student_base="albert-base-v2")
    with pytest.raises(ConfigError, match="texts"):
        make_config(teacher="t", texts=[])
    cfg = make_config(teacher="t", texts=["a"])
    assert cfg.lr == 5e-4 and cfg.student_size is None  # a mini student from scratch, train's defaults for it
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "notes.txt").write_text("keep me")
    with pytest.raises(OutputError, match="holds no distill run"):
        distill(student_config(setup), tmp_path / "precious", overwrite=True)


def test_cli_distill_prints_the_report(setup, distilled):
    from typer.testing import CliRunner

    from emodraw_cli.app import app

    out, report = distilled
    args = ["distill", "--teacher", str(setup / "teacher"), "--texts", str(setup / "texts.txt"), "--test",
            str(setup / "test.txt"), "--student-size", "tiny", "--epochs", "4", "--lr", "1e-3", "--batch-size", "4",
            "--vocab-size", "300", "--device", "cpu", "--output", str(out), "--resume"]
    result = CliRunner().invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout.strip().splitlines()[-1])
    assert printed["agreement"] == report["agreement"] and KEYS <= set(printed)
    table = CliRunner().invoke(app, args)
    assert table.exit_code == 0 and "agreement" in table.output and "rows/s" in table.output


def test_soft_targets_at_temperature_one_give_cross_entropy():
    import torch

    from emodraw_batch.train.data import Split, Tokens
    from emodraw_batch.train.loop import Objective, soften

    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]], dtype=np.float32)
    assert np.allclose(soften(probs, 1.0), probs, atol=SAME_MATHS_ATOL)  # softmax(log p) = p
    hot = soften(probs, 0.01)  # a low temperature sharpens to the top class
    assert np.allclose(hot, np.eye(3)[[0, 2]], atol=1e-6)
    assert np.allclose(soften(probs, 1e6), 1 / 3, atol=1e-4)  # a high one flattens
    tokens = Tokens.of([[1, 2], [3]])
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.0, 1.0, 3.0]])
    rows = np.arange(2)
    labels = np.array([0, 2])
    ce = Objective()(logits, Split(tokens, labels), rows)
    kl = Objective(temperature=1.0)(logits, Split(tokens, np.full(2, -1), np.eye(3, dtype=np.float32)[labels]), rows)
    assert float(kl) == pytest.approx(float(ce), abs=SAME_MATHS_ATOL)  # KL to a one-hot target = cross-entropy
    # Where a row has a label, hard_weight of its loss is cross-entropy on it.
    soft = Split(tokens, np.array([0, -1]), soften(probs, 2.0))
    mixed = Objective(2.0, hard_weight=1.0)(logits, soft, rows, reduction="sum")
    only_soft = Objective(2.0)(logits, Split(tokens, np.full(2, -1), soften(probs, 2.0)), rows, reduction="sum")
    row0_ce = torch.nn.functional.cross_entropy(logits[:1], torch.tensor([0]))
    row1_kl = Objective(2.0)(logits[1:], Split(Tokens.of([[3]]), np.full(1, -1), soften(probs, 2.0)[1:]), np.arange(1))
    assert float(mixed) == pytest.approx(float(row0_ce + row1_kl), abs=SAME_MATHS_ATOL)
    assert float(mixed) != pytest.approx(float(only_soft), abs=1e-3)


def test_a_pretrained_albert_can_be_the_student(setup, tiny_model):
    cfg = student_config(setup, student_size=None, student_base=tiny_model, epochs=1, test=None)
    report = distill(cfg, setup / "from-base")
    config = json.loads((setup / "from-base" / "student" / "config.json").read_text())
    # The base knows six emotions; the teacher three: a new head in the teacher's label order.
    assert config["id2label"] == {"0": "anger", "1": "fear", "2": "joy"}
    assert config["max_position_embeddings"] == 64  # the base's own model and tokenizer, kept
    assert report["student"]["parameters"] > 0 and 0 <= report["agreement"] <= 1
