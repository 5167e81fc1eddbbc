"""`emodraw-batch train`: tiny synthetic data, a tiny ALBERT, a few epochs on the CPU."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import SAME_MATHS_ATOL
from emodraw_batch.emotions import EMOTIONS
from emodraw_batch.errors import ConfigError, InputError, OutputError
from emodraw_batch.files.labelled import label_order, read_labelled
from emodraw_batch.train import TrainCallbacks, TrainConfig, bucketed_batches, make_config, train

# Each label has its own keywords; the rest of a text is shared filler, so the label is learnable.
KEYWORDS = {"anger": ["angry", "furious", "awful"], "fear": ["afraid", "scary", "nervous"], "joy": ["happy", "great", "lovely"]}
FILLER = "i feel today really so the this that my friend work home night morning rain coffee".split()


def labelled_rows(n: int, seed: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        label = rng.choice(sorted(KEYWORDS))
        words = [rng.choice(FILLER) for _ in range(rng.randint(1, 5))]
        words.insert(rng.randrange(len(words) + 1), rng.choice(KEYWORDS[label]))
        rows.append((" ".join(words), label))
    return rows


def write_lines(path: Path, rows: list[tuple[str, str]]) -> Path:
    path.write_text("".join(f"{text};{label}\n" for text, label in rows))
    return path


def tiny_config(tmp: Path, **overrides) -> TrainConfig:
    values = dict(
        train=str(write_lines(tmp / "train.txt", labelled_rows(240, seed=1))),
        val=str(write_lines(tmp / "val.txt", labelled_rows(60, seed=2))),
        from_scratch="tiny", epochs=3, lr=3e-3, batch_size=8, vocab_size=300,
    )
    return TrainConfig(**{**values, **overrides})


class StopAfter(TrainCallbacks):
    """Interrupts training (like Ctrl-C) once the given epoch is saved."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def epoch_end(self, row, best) -> None:
        if row["epoch"] == self.epoch:
            raise KeyboardInterrupt


def scores(history: list[dict]) -> list[dict]:
    """Epoch rows without the wall time (the only field that may differ between identical runs)."""
    return [{k: v for k, v in row.items() if k != "seconds"} for row in history]


def weights(folder: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(folder / "model.safetensors"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One uninterrupted 3-epoch run from scratch, shared by the tests below (they must not modify it)."""
    tmp = tmp_path_factory.mktemp("train")
    cfg = tiny_config(tmp)
    return cfg, tmp / "model", train(cfg, tmp / "model")


# -- reading labelled data ------------------------------------------------------------------------

def test_formats_read_the_same_and_unusable_rows_are_dropped(tmp_path):
    rows = [("i feel great; really", "joy"), ("so scary", "fear"), ("", "joy"), ("   ", "fear"), ("no label", "")]
    lines = write_lines(tmp_path / "data.txt", rows)
    pq.write_table(pa.table({"body": [t for t, _ in rows] + [None], "y": [y for _, y in rows] + ["joy"]}),
                   tmp_path / "data.parquet")
    (tmp_path / "data.csv").write_text("text,label\n" + "".join(f'"{t}",{y}\n' for t, y in rows))
    parquet = read_labelled(tmp_path / "data.parquet", "body", "y")
    for data in (read_labelled(lines), parquet, read_labelled(tmp_path / "data.csv")):
        # The line format splits at the last ';' so a text may hold ';'.
        assert data.texts == ["i feel great; really", "so scary"]
        assert data.labels == ["joy", "fear"]
    assert read_labelled(lines).dropped == 3
    assert parquet.dropped == 4


def test_bad_labelled_files_are_explained(tmp_path):
    (tmp_path / "bad.txt").write_text("fine text;joy\nno separator here\n")
    with pytest.raises(InputError, match="line 2 has no ';'"):
        read_labelled(tmp_path / "bad.txt")
    pq.write_table(pa.table({"text": ["a"], "emotion": ["joy"]}), tmp_path / "cols.parquet")
    with pytest.raises(InputError, match="no column 'label'.*--label-column"):
        read_labelled(tmp_path / "cols.parquet")
    with pytest.raises(InputError, match="does not exist"):
        read_labelled(tmp_path / "missing.csv")


def test_label_order_is_canonical_for_the_six_emotions_else_sorted():
    assert label_order(reversed(EMOTIONS)) == list(EMOTIONS)
    assert label_order(["joy", "anger", "joy", "fear"]) == ["anger", "fear", "joy"]


def test_bucketed_batches_cover_every_row_once_with_little_padding():
    lengths = np.random.default_rng(0).integers(1, 100, size=1003)
    batches = bucketed_batches(lengths, 16, np.random.default_rng(5))
    rows = np.concatenate(batches)
    assert sorted(rows.tolist()) == list(range(1003))
    assert len(batches) == math.ceil(1003 / 16)
    assert sorted(len(b) for b in batches)[1:] == [16] * (len(batches) - 1)
    # Within a bucket rows are sorted by length: padding per batch is far below a random split's.
    padding = sum(int(lengths[b].max() - lengths[b].min()) for b in batches)
    shuffled = np.random.default_rng(1).permutation(1003)
    random_padding = sum(int(lengths[b].max() - lengths[b].min()) for b in np.array_split(shuffled, len(batches)))
    assert padding < random_padding / 4
    again = bucketed_batches(lengths, 16, np.random.default_rng(5))
    assert all(np.array_equal(a, b) for a, b in zip(batches, again))


# -- training --------------------------------------------------------------------------------------

def test_training_lowers_validation_loss_and_saves_hf_folders(trained):
    cfg, out, result = trained
    history = result.history
    assert [row["epoch"] for row in history] == [1, 2, 3]
    # Untrained, 3 balanced classes: about ln 3. Training must do clearly better.
    assert min(row["val_loss"] for row in history) < math.log(3) - 0.2
    assert history[-1]["val_loss"] < history[0]["val_loss"]
    assert result.best_epoch == min(history, key=lambda r: r["val_loss"])["epoch"]
    for folder in (out, out / "last"):
        config = json.loads((folder / "config.json").read_text())
        assert config["id2label"] == {"0": "anger", "1": "fear", "2": "joy"}
        assert (folder / "model.safetensors").is_file() and not list(folder.glob("*.bin"))
        assert (folder / "tokenizer.json").is_file()
    # The last checkpoint is the last epoch; the top-level one is the best epoch's.
    state = json.loads((out / "last" / "trainer_state.json").read_text())
    assert state["epoch"] == 3 and state["history"] == history
    if result.best_epoch == 3:
        assert all(np.array_equal(v, weights(out / "last")[k]) for k, v in weights(out).items())
    metrics = (out / "metrics.csv").read_text().splitlines()
    assert metrics[0].split(",")[:5] == ["epoch", "train_loss", "val_loss", "val_accuracy", "val_macro_f1"]
    assert len(metrics) == 1 + len(history)
    assert json.loads((out / "metrics.json").read_text())["best_epoch"] == result.best_epoch


def test_saved_checkpoint_reloads_with_identical_predictions(trained):
    """`run --model DIR` loads DIR with EmotionClassifier; it must reproduce the training-time validation."""
    from emodraw_batch.analysis.metrics import report
    from emodraw_batch.inference.classifier import EmotionClassifier

    cfg, out, result = trained
    val = read_labelled(cfg.val)
    truth = np.array([["anger", "fear", "joy"].index(label) for label in val.labels])
    for folder, epoch in ((out, result.best_epoch), (out / "last", 3)):
        row = result.history[epoch - 1]
        probs = EmotionClassifier(str(folder), device="cpu", batch_tokens=50)(val.texts).probs
        loss = float(-np.log(probs[np.arange(len(truth)), truth]).mean())
        scores = report(truth, probs.argmax(1), ["anger", "fear", "joy"])
        assert loss == pytest.approx(row["val_loss"], abs=SAME_MATHS_ATOL)  # other batches than in training
        assert scores["accuracy"] == row["val_accuracy"] and scores["macro_f1"] == row["val_macro_f1"]


def test_fixed_seed_reproduces_and_resume_continues_from_the_saved_epoch(trained, tmp_path):
    cfg, out, full = trained
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "run", callbacks=StopAfter(2))
    state = json.loads((tmp_path / "run" / "last" / "trainer_state.json").read_text())
    # Same seed, same data: the first two epochs of both runs are identical.
    assert state["epoch"] == 2 and scores(state["history"]) == scores(full.history[:2])
    resumed = train(make_config(tmp_path / "run", resume=True), tmp_path / "run", resume=True)
    assert resumed.resumed_from == 2
    assert [row["epoch"] for row in resumed.history] == [1, 2, 3]
    # Optimizer, scheduler and RNG continue where they stopped: epoch 3 is what the uninterrupted run computed.
    assert resumed.history[2]["val_loss"] == full.history[2]["val_loss"]
    expected = weights(out / "last")
    assert all(np.array_equal(v, expected[k]) for k, v in weights(tmp_path / "run" / "last").items())
    # Resuming a finished run does nothing; more epochs continue it.
    assert scores(train(cfg, tmp_path / "run", resume=True).history) == scores(resumed.history)
    longer = train(make_config(tmp_path / "run", resume=True, epochs=4), tmp_path / "run", resume=True)
    assert [row["epoch"] for row in longer.history] == [1, 2, 3, 4] and longer.resumed_from == 3


def test_fine_tuning_a_base_checkpoint_gets_a_head_for_the_data_labels(tiny_model, tmp_path):
    cfg = tiny_config(tmp_path, from_scratch=None, base=tiny_model, epochs=1, lr=1e-3)
    result = train(cfg, tmp_path / "ft")
    config = json.loads((tmp_path / "ft" / "config.json").read_text())
    # The base has six emotions; the data three, so the head is new and sized for them.
    assert config["id2label"] == {"0": "anger", "1": "fear", "2": "joy"} and result.labels == ["anger", "fear", "joy"]
    assert weights(tmp_path / "ft")["classifier.weight"].shape[0] == 3
    assert config["max_position_embeddings"] == 64  # the base's, kept


def test_a_base_checkpoint_is_loaded_once_even_when_its_head_is_replaced(tiny_model, monkeypatch):
    from emodraw_batch.inference import loading
    from emodraw_batch.train import start

    loads = []
    real = loading.load_checkpoint
    monkeypatch.setattr(loading, "load_checkpoint", lambda *a, **k: loads.append(a) or real(*a, **k))
    _, model, labels = start.from_base(tiny_model, ["anger", "fear", "joy"], seed=0, allow_pickle=False)
    assert len(loads) == 1 and labels == ["anger", "fear", "joy"]
    assert model.classifier.out_features == 3 and model.num_labels == 3
    assert model.config.id2label == {0: "anger", 1: "fear", 2: "joy"} and model.config.label2id["joy"] == 2
    # The new head is drawn from the seed: the same seed gives the same head.
    _, again, _ = start.from_base(tiny_model, ["anger", "fear", "joy"], seed=0, allow_pickle=False)
    assert np.array_equal(model.classifier.weight.detach().numpy(), again.classifier.weight.detach().numpy())
    # A base that already knows the labels keeps its head and its label order.
    _, kept, order = start.from_base(tiny_model, list(reversed(EMOTIONS)), seed=0, allow_pickle=False)
    assert order == list(EMOTIONS) and kept.classifier.out_features == 6


def test_bad_options_and_folders_are_refused(trained, tmp_path):
    cfg, out, _ = trained
    with pytest.raises(ConfigError, match="exactly one of --base"):
        make_config(train="a", val="b")
    with pytest.raises(ConfigError, match="lr"):
        make_config(train="a", val="b", from_scratch="tiny", lr=-1)
    with pytest.raises(OutputError, match="--resume"):
        train(cfg, out)  # a finished run is never overwritten silently
    with pytest.raises(OutputError, match="lr: 0.003 -> 0.1"):
        train(cfg.model_copy(update={"lr": 0.1}), out, resume=True)
    with pytest.raises(ConfigError, match="pass one of them"):
        train(cfg, out, resume=True, overwrite=True)
    # A typo with --overwrite fails before the earlier run is deleted.
    with pytest.raises(InputError, match="does not exist"):
        train(cfg.model_copy(update={"train": str(tmp_path / "typo.txt")}), out, overwrite=True)
    assert (out / "metrics.json").is_file() and (out / "last" / "trainer_state.json").is_file()
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "notes.txt").write_text("keep me")
    with pytest.raises(OutputError, match="holds no training run"):
        train(cfg, tmp_path / "precious", overwrite=True)
    with pytest.raises(OutputError, match="Cannot resume"):
        train(cfg, tmp_path / "empty", resume=True)
    write_lines(tmp_path / "val.txt", [("so surprising", "surprise")])
    with pytest.raises(InputError, match="'surprise'"):
        train(cfg.model_copy(update={"val": str(tmp_path / "val.txt")}), tmp_path / "new")


def test_cli_train_then_run_model_dir(tmp_path):
    from typer.testing import CliRunner

    from emodraw_cli.app import app

    write_lines(tmp_path / "train.txt", labelled_rows(64, seed=3))
    write_lines(tmp_path / "val.txt", labelled_rows(16, seed=4))
    args = ["train", "--train", str(tmp_path / "train.txt"), "--val", str(tmp_path / "val.txt"), "--from-scratch",
            "tiny", "--epochs", "1", "--batch-size", "16", "--vocab-size", "100", "--output", str(tmp_path / "m"), "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["best_epoch"] == 1 and summary["labels"] == ["anger", "fear", "joy"]
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 1 and "--resume" in again.output and "Traceback" not in again.output
