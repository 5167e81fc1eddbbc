"""Training defaults by starting point: how they resolve, and that from scratch they learn."""

from __future__ import annotations

import json
import random
from collections import Counter

import pytest

from emodraw_batch.train import DEFAULTS, TrainConfig, defaults_for, make_config, train
from emodraw_batch.train.defaults import TUNED, describe, start_key


def test_every_starting_point_defines_every_tuned_setting():
    for start, table in DEFAULTS.items():
        assert set(table) == set(TUNED), start
    assert start_key("albert-base-v2", None) == "fine-tune" and start_key(None, "small") == "scratch:small"


def test_fine_tuning_keeps_the_seed_protocol_and_from_scratch_learns_faster():
    tuned = defaults_for("albert-base-v2", None)
    assert (tuned["lr"], tuned["batch_size"]) == (2e-5, 64)
    tiny = defaults_for(None, "tiny")
    assert tiny["lr"] >= 10 * tuned["lr"] and tiny["batch_size"] < tuned["batch_size"]
    # Bigger models from scratch get lower learning rates.
    assert tiny["lr"] > defaults_for(None, "small")["lr"] > defaults_for(None, "base")["lr"]


def test_unset_settings_resolve_by_starting_point_and_flags_override(tmp_path):
    scratch = make_config(train="a", val="b", from_scratch="tiny")
    assert {k: getattr(scratch, k) for k in TUNED} == defaults_for(None, "tiny")
    base = make_config(train="a", val="b", base="some/checkpoint")
    assert {k: getattr(base, k) for k in TUNED} == defaults_for("some/checkpoint", None)
    flagged = make_config(train="a", val="b", from_scratch="tiny", lr=1e-4, batch_size=None, epochs=2)
    assert (flagged.lr, flagged.epochs, flagged.batch_size) == (1e-4, 2, defaults_for(None, "tiny")["batch_size"])
    # The resolved values are what is recorded and compared on resume.
    assert scratch.model_dump()["lr"] == defaults_for(None, "tiny")["lr"]
    assert TrainConfig(**scratch.model_dump()) == scratch


def test_the_cli_help_shows_the_table():
    assert describe("lr") == "2e-05 fine-tuning; from scratch 0.001 tiny, 0.0005 mini, 0.0005 small, 0.0002 base"
    assert describe("patience") == str(DEFAULTS["fine-tune"]["patience"])


def skewed_rows(n: int, seed: int) -> list[tuple[str, str]]:
    """A learnable task with a clear majority class (joy ~55%): each label has its own keywords."""
    keywords = {"anger": ["angry", "furious"], "fear": ["afraid", "scary"], "joy": ["happy", "great"]}
    filler = "i feel today really so the this that my friend work home night".split()
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        label = rng.choices(["joy", "anger", "fear"], weights=[55, 25, 20])[0]
        words = [rng.choice(filler) for _ in range(rng.randint(2, 8))]
        words.insert(rng.randrange(len(words) + 1), rng.choice(keywords[label]))
        rows.append((" ".join(words), label))
    return rows


def test_defaults_only_from_scratch_beats_the_majority_class(tmp_path):
    train_rows, val_rows = skewed_rows(320, seed=1), skewed_rows(100, seed=2)
    for name, rows in (("train", train_rows), ("val", val_rows)):
        (tmp_path / f"{name}.txt").write_text("".join(f"{t};{y}\n" for t, y in rows))
    cfg = make_config(train=str(tmp_path / "train.txt"), val=str(tmp_path / "val.txt"), from_scratch="tiny",
                      device="cpu")
    result = train(cfg, tmp_path / "m")
    majority = Counter(y for _, y in val_rows).most_common(1)[0][1] / len(val_rows)
    best = result.history[result.best_epoch - 1]
    assert best["val_accuracy"] >= majority + 0.3, (best, majority)
    recorded = json.loads((tmp_path / "m" / "metrics.json").read_text())["config"]
    assert {k: recorded[k] for k in TUNED} == defaults_for(None, "tiny")


@pytest.mark.parametrize("size", ["mini", "small", "base"])
def test_every_size_resolves(size):
    cfg = make_config(train="a", val="b", from_scratch=size)
    assert cfg.lr == DEFAULTS[f"scratch:{size}"]["lr"]
