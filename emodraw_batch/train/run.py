"""A training run from start to end: `fit` drives any trainer's epochs; `train` is the labelled-data one."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from emodraw_batch.config import build
from emodraw_batch.files.labelled import Labelled, check_known, label_order, read_labelled
from emodraw_batch.train.checkpoints import (
    LAST,
    best_epoch,
    check_output,
    finished,
    read_optimizer,
    read_state,
    save_best,
    save_last,
    write_metrics,
)
from emodraw_batch.train.config import FitSettings, TrainConfig
from emodraw_batch.train.data import Split, encode
from emodraw_batch.train.loop import Objective, TrainCallbacks, open_session, run_epoch, steps_per_epoch
from emodraw_batch.train.start import from_base, from_folder, from_scratch, quiet_transformers


@dataclass
class TrainResult:
    """What a training run did: per-epoch history, the best epoch, where the checkpoints are."""

    output: str
    labels: list[str]
    history: list[dict[str, float]]
    best_epoch: int
    stopped_early: bool
    resumed_from: int = 0
    n_train: int = 0
    n_val: int = 0
    seconds: float = 0.0
    device: str = "cpu"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Setup:
    """What a trainer hands to `fit`: the model to train and the data, encoded for it."""

    tokenizer: Any
    model: Any
    labels: list[str]
    train: Split
    val: Split
    objective: Objective = Objective()


# Builds the Setup; gets the saved trainer state when resuming (then the model comes from DIR/last).
Prepare = Callable[[dict[str, Any] | None], Setup]


def fit(cfg: FitSettings, output: str | Path, prepare: Prepare, *, resume: bool = False, overwrite: bool = False,
        callbacks: TrainCallbacks | None = None, record: dict[str, Any] | None = None) -> TrainResult:
    """Train until cfg.epochs or early stopping; after every epoch save DIR/last, and DIR when val loss improved.

    `record` is stored in the trainer state next to the settings (e.g. what the data was).
    """
    from emodraw_batch.inference.device import resolve_device
    from emodraw_batch.inference.loading import input_limits

    started = time.perf_counter()
    output = Path(output).expanduser()
    callbacks = callbacks or TrainCallbacks()
    state = check_output(output, cfg, resume, overwrite)
    history: list[dict[str, float]] = list(state["history"]) if state else []
    result = TrainResult(str(output), list(state["labels"]) if state else [], history, best_epoch(history),
                         stopped_early=False, resumed_from=len(history))
    if state is not None and finished(history, cfg):
        result.stopped_early = len(history) < cfg.epochs
        return result  # nothing left to do: no need to load the model
    device = resolve_device(cfg.device)
    quiet_transformers()
    setup = prepare(state)
    if state is None:  # only now that data and model are loaded: a typo never costs an earlier run
        shutil.rmtree(output, ignore_errors=True)
        output.mkdir(parents=True)
    _, pad_id = input_limits(setup.tokenizer, setup.model.config, cfg.max_length)
    session = open_session(setup.model, pad_id, cfg, steps_per_epoch(len(setup.train), cfg.batch_size),
                           setup.objective, device, read_optimizer(output) if state else None)
    result.labels, result.n_train, result.n_val, result.device = setup.labels, len(setup.train), len(setup.val), device
    while not finished(history, cfg):
        row = run_epoch(session, setup.train, setup.val, setup.labels, cfg, len(history) + 1, callbacks)
        history.append(row)
        improved = best_epoch(history) == row["epoch"]
        if improved:
            save_best(output, session.model, setup.tokenizer)
        state = {"epoch": len(history), "labels": setup.labels, "config": cfg.model_dump(), **(record or {}),
                 "history": history}
        save_last(output, session, setup.tokenizer, state)
        write_metrics(output, history, setup.labels, cfg)
        callbacks.epoch_end(row, improved)
    result.best_epoch = best_epoch(history)
    result.stopped_early = len(history) < cfg.epochs
    result.seconds = time.perf_counter() - started
    return result


def start_model(cfg: TrainConfig, texts: list[str], labels: list[str], resume_from: Path | None) -> tuple[Any, Any, list[str]]:
    """(tokenizer, model, label order): from DIR/last, a base checkpoint, or a fresh ALBERT."""
    if resume_from is not None:
        return (*from_folder(resume_from, cfg.allow_pickle), labels)
    if cfg.from_scratch is not None:
        return (*from_scratch(texts, labels, cfg.from_scratch, cfg.vocab_size, cfg.max_length, cfg.seed), labels)
    return from_base(str(cfg.base), labels, cfg.seed, cfg.allow_pickle)


def labelled_split(data: Labelled, tokenizer: Any, labels: list[str], max_length: int) -> Split:
    index = {label: i for i, label in enumerate(labels)}
    return Split(encode(tokenizer, data.texts, max_length),
                 np.array([index[label] for label in data.labels], dtype=np.int64))


def train(cfg: TrainConfig, output: str | Path, *, resume: bool = False, overwrite: bool = False,
          callbacks: TrainCallbacks | None = None) -> TrainResult:
    """Fine-tune (cfg.base) or train from scratch (cfg.from_scratch) on labelled data; see `fit`."""
    from emodraw_batch.inference.loading import input_limits

    output = Path(output).expanduser()

    def prepare(state: dict[str, Any] | None) -> Setup:
        train_data = read_labelled(cfg.train, cfg.text_column, cfg.label_column)
        val_data = read_labelled(cfg.val, cfg.text_column, cfg.label_column)
        # Check the labels before the (slow) model set-up, so bad data fails at once.
        labels = list(state["labels"]) if state is not None else label_order(train_data.labels)
        check_known(train_data, labels, "the run being resumed")
        check_known(val_data, labels, "the training data")
        tokenizer, model, labels = start_model(cfg, train_data.texts, labels, output / LAST if state else None)
        max_length, _ = input_limits(tokenizer, model.config, cfg.max_length)
        return Setup(tokenizer, model, labels, labelled_split(train_data, tokenizer, labels, max_length),
                     labelled_split(val_data, tokenizer, labels, max_length))

    return fit(cfg, output, prepare, resume=resume, overwrite=overwrite, callbacks=callbacks)


def make_config(output: str | Path | None = None, resume: bool = False, **flags: Any) -> TrainConfig:
    """Defaults < the settings of the run being resumed (DIR/last) < flags; flags that are None are not set."""
    values: dict[str, Any] = dict(read_state(Path(output))["config"]) if resume and output else {}
    values.update({k: v for k, v in flags.items() if v is not None})
    return build(TrainConfig, values, "the training options")
