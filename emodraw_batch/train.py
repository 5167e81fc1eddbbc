"""Fine-tune an ALBERT emotion classifier on labelled data, or train one from scratch.

The output folder is itself a checkpoint, so `emodraw-batch run --model DIR` works:

    DIR/                   best validation loss: config.json, model.safetensors, tokenizer files
    DIR/metrics.csv|json   one row per epoch: train loss, val loss, val accuracy, val macro F1
    DIR/last/              the last epoch: a checkpoint plus trainer_state.json and optimizer.pt

Reproducible by construction: the shuffle and the dropout RNG of epoch k are seeded
from (seed, k), so a run resumed from DIR/last after epoch k computes what an
uninterrupted run computes.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .batching import length_order, pack
from .errors import ConfigError, OutputError
from .labelled import Labelled, check_known, label_order, read_labelled
from .metrics import report
from .atomic import write_json

LAST = "last"
STATE = "trainer_state.json"
OPTIMIZER = "optimizer.pt"
METRICS = ("epoch", "train_loss", "val_loss", "val_accuracy", "val_macro_f1", "lr", "seconds")
# Batches are length-sorted within buckets of this many batches, then the batch order is shuffled:
# little padding, yet every epoch sees a fresh mix.
BUCKET_BATCHES = 50


class TrainConfig(BaseModel):
    """Everything that decides what `emodraw-batch train` computes."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    train: str
    val: str
    base: str | None = None
    from_scratch: Literal["tiny", "small", "base"] | None = None
    text_column: str = "text"
    label_column: str = "label"
    epochs: int = Field(20, ge=1)
    # Early stopping: stop after this many epochs without a lower validation loss.
    patience: int = Field(3, ge=1)
    lr: float = Field(2e-5, gt=0)
    batch_size: int = Field(64, ge=1)
    max_length: int = Field(128, ge=8)
    seed: int = 42
    device: str = "auto"
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    weight_decay: float = Field(0.01, ge=0)
    # Only for --from-scratch: size of the tokenizer vocabulary trained on the training texts.
    vocab_size: int = Field(8000, ge=100)
    allow_pickle: bool = False

    @field_validator("device")
    @classmethod
    def _check_device(cls, value: str) -> str:
        if not (value in ("auto", "cpu", "cuda") or (value.startswith("cuda:") and value[5:].isdigit())):
            raise ValueError(f"device must be auto, cpu, cuda or cuda:N; got {value!r}")
        return value

    @model_validator(mode="after")
    def _one_start(self) -> TrainConfig:
        if (self.base is None) == (self.from_scratch is None):
            raise ValueError(
                "pass exactly one of --base CHECKPOINT (hub id or folder) or --from-scratch tiny|small|base "
                f"(got base={self.base!r}, from_scratch={self.from_scratch!r})"
            )
        return self

    def fingerprint(self) -> dict[str, Any]:
        """The settings a resumed run must share (epochs, patience, device and paths may change)."""
        return self.model_dump(
            include={"base", "from_scratch", "text_column", "label_column", "lr", "batch_size", "max_length",
                     "seed", "warmup_ratio", "weight_decay", "vocab_size"}
        )


def make_config(output: str | Path | None = None, resume: bool = False, **flags: Any) -> TrainConfig:
    """Defaults < the settings of the run being resumed (DIR/last) < flags; flags that are None are not set."""
    values: dict[str, Any] = dict(read_state(Path(output))["config"]) if resume and output else {}
    values.update({k: v for k, v in flags.items() if v is not None})
    try:
        return TrainConfig(**values)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'options'}: {e['msg'].removeprefix('Value error, ')}" for e in exc.errors()
        )
        raise ConfigError(f"Invalid training options: {problems}.") from None


def read_state(output: Path) -> dict[str, Any]:
    """The trainer state of DIR/last, written after every epoch."""
    path = output / LAST / STATE
    if not path.is_file():
        raise OutputError(
            f"Cannot resume: {str(path)!r} does not exist, so {str(output)!r} holds no interrupted training run. "
            "Drop --resume to start a new run, or pass the --output of the run to continue."
        )
    return json.loads(path.read_text())


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


class TrainCallbacks:
    """Progress hooks (the CLI draws bars with them); these defaults do nothing."""

    def epoch_start(self, epoch: int, epochs: int, batches: int) -> None: ...

    def batch_end(self, loss: float) -> None: ...

    def epoch_end(self, row: dict[str, float], best: bool) -> None: ...


def best_epoch(history: list[dict[str, float]]) -> int:
    """The epoch with the lowest validation loss (the earliest on a tie); 0 before any epoch."""
    return int(min(history, key=lambda r: (r["val_loss"], r["epoch"]))["epoch"]) if history else 0


def _finished(history: list[dict[str, float]], cfg: TrainConfig) -> bool:
    done = len(history)
    return done >= cfg.epochs or (done > 0 and done - best_epoch(history) >= cfg.patience)


def bucketed_batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Shuffle, sort by length inside buckets of BUCKET_BATCHES batches, cut, shuffle the batch order.

    Always ceil(n / batch_size) batches: buckets hold a whole number of batches,
    so only the very last batch can be short.
    """
    order = rng.permutation(len(lengths))
    bucket = batch_size * BUCKET_BATCHES
    batches = []
    for start in range(0, len(order), bucket):
        part = order[start : start + bucket]
        part = part[length_order(lengths[part])]
        batches += [part[i : i + batch_size] for i in range(0, len(part), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def _pad(ids: list[list[int]], rows: np.ndarray, pad_id: int):
    """(input_ids, attention_mask) tensors for `rows`, padded to the longest of them."""
    import torch

    longest = max(len(ids[i]) for i in rows)
    input_ids = np.full((len(rows), longest), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), longest), dtype=np.int64)
    for row, i in enumerate(rows):
        input_ids[row, : len(ids[i])] = ids[i]
        mask[row, : len(ids[i])] = 1
    return torch.from_numpy(input_ids), torch.from_numpy(mask)


class _Run:
    """One training run's model, data and optimizer; `epoch()` trains one epoch and validates."""

    def __init__(self, cfg: TrainConfig, output: Path, state: dict[str, Any] | None) -> None:
        import torch
        from transformers.utils import logging as hf_logging

        from .model import default_batch_tokens, resolve_device

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()  # no "Writing model shards" bar at every save
        self.cfg, self.output = cfg, output
        self.device = resolve_device(cfg.device)
        cuda = self.device.startswith("cuda")
        bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and cuda)
        self.autocast = torch.autocast("cuda" if cuda else "cpu", dtype=torch.bfloat16, enabled=bf16)
        self.train_data = read_labelled(cfg.train, cfg.text_column, cfg.label_column)
        self.val_data = read_labelled(cfg.val, cfg.text_column, cfg.label_column)
        # Check the labels before the (slow) model set-up, so bad data fails at once.
        self.labels = list(state["labels"]) if state is not None else label_order(self.train_data.labels)
        check_known(self.train_data, self.labels, "the run being resumed")
        check_known(self.val_data, self.labels, "the training data")
        if state is not None:
            self.tokenizer, self.model = self._load(output / LAST)
        else:
            self.tokenizer, self.model, self.labels = self._start()
        limit = int(getattr(self.model.config, "max_position_embeddings", cfg.max_length) or cfg.max_length)
        self.max_length = min(cfg.max_length, limit)
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        self.x_train, self.y_train = self._encode(self.train_data)
        self.x_val, self.y_val = self._encode(self.val_data)
        self.lengths = np.fromiter(map(len, self.x_train), dtype=np.int64, count=len(self.x_train))
        self.val_tokens = default_batch_tokens(self.device)
        self.model.to(self.device)
        self.optimizer, self.scheduler = self._optimizer()
        if state is not None:
            saved = torch.load(output / LAST / OPTIMIZER, map_location="cpu", weights_only=True)
            self.optimizer.load_state_dict(saved["optimizer"])
            self.scheduler.load_state_dict(saved["scheduler"])

    # -- setup ---------------------------------------------------------------------------------
    def _load(self, source: str | Path):
        from .model import load_checkpoint

        return load_checkpoint(str(source), allow_pickle=self.cfg.allow_pickle)

    def _start(self):
        """The initial model: a base checkpoint (new head if its labels differ) or a fresh ALBERT."""
        import torch

        cfg, data_labels = self.cfg, self.labels
        torch.manual_seed(cfg.seed)
        if cfg.from_scratch is not None:
            from .checkpoint import new_albert, train_tokenizer

            tokenizer = train_tokenizer(self.train_data.texts, vocab_size=cfg.vocab_size, kind="bpe")
            tokenizer.model_max_length = cfg.max_length
            # Exactly max_length positions: positions never trained must never be used by `run`.
            model = new_albert(tokenizer, data_labels, cfg.from_scratch, cfg.max_length, cfg.seed)
            return tokenizer, model, data_labels
        tokenizer, model = self._load(cfg.base)
        have = [str(model.config.id2label[i]) for i in range(model.config.num_labels)]
        if set(have) == set(data_labels):
            return tokenizer, model, have  # keep the trained head, in its own label order
        import warnings

        from transformers import AutoModelForSequenceClassification

        torch.manual_seed(cfg.seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = AutoModelForSequenceClassification.from_pretrained(
                str(Path(cfg.base).expanduser()) if Path(cfg.base).expanduser().exists() else cfg.base,
                num_labels=len(data_labels),
                id2label=dict(enumerate(data_labels)),
                label2id={label: i for i, label in enumerate(data_labels)},
                ignore_mismatched_sizes=True,  # a fresh classifier head for our labels
                use_safetensors=None if cfg.allow_pickle else True,
                trust_remote_code=False,
            )
        return tokenizer, model, data_labels

    def _encode(self, data: Labelled) -> tuple[list[list[int]], np.ndarray]:
        index = {label: i for i, label in enumerate(self.labels)}
        enc = self.tokenizer(
            data.texts, truncation=True, max_length=self.max_length, return_attention_mask=False,
            return_token_type_ids=False,
        )
        return enc["input_ids"], np.array([index[label] for label in data.labels], dtype=np.int64)

    def _optimizer(self):
        import torch
        from transformers import get_linear_schedule_with_warmup

        # No weight decay on biases and LayerNorm weights (the 1-d parameters), as usual for BERT-style models.
        params = [p for p in self.model.parameters() if p.requires_grad]
        groups = [
            {"params": [p for p in params if p.ndim >= 2], "weight_decay": self.cfg.weight_decay},
            {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
        ]
        optimizer = torch.optim.AdamW(groups, lr=self.cfg.lr)
        total = self.cfg.epochs * math.ceil(len(self.x_train) / self.cfg.batch_size)
        scheduler = get_linear_schedule_with_warmup(optimizer, int(self.cfg.warmup_ratio * total), total)
        return optimizer, scheduler

    # -- one epoch -----------------------------------------------------------------------------
    def epoch(self, epoch: int, callbacks: TrainCallbacks) -> dict[str, float]:
        import torch

        started = time.perf_counter()
        torch.manual_seed(self.cfg.seed * 1_000_003 + epoch)  # dropout of epoch k depends only on (seed, k)
        rng = np.random.default_rng([self.cfg.seed, epoch])
        batches = bucketed_batches(self.lengths, self.cfg.batch_size, rng)
        callbacks.epoch_start(epoch, self.cfg.epochs, len(batches))
        self.model.train()
        total = 0.0
        # enable_grad: an EmotionClassifier built earlier in this process switches gradients off globally.
        with torch.enable_grad():
            for rows in batches:
                input_ids, mask = _pad(self.x_train, rows, self.pad_id)
                target = torch.from_numpy(self.y_train[rows]).to(self.device)
                with self.autocast:
                    logits = self.model(input_ids=input_ids.to(self.device), attention_mask=mask.to(self.device)).logits
                loss = torch.nn.functional.cross_entropy(logits.float(), target)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
                self.optimizer.step()
                self.scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)
                total += loss.item() * len(rows)
                callbacks.batch_end(loss.item())
        val_loss, predicted = self.validate()
        scores = report(self.y_val, predicted, self.labels)
        return {
            "epoch": epoch,
            "train_loss": total / len(self.x_train),
            "val_loss": val_loss,
            "val_accuracy": scores["accuracy"],
            "val_macro_f1": scores["macro_f1"],
            "lr": self.scheduler.get_last_lr()[0],
            "seconds": time.perf_counter() - started,
        }

    def validate(self) -> tuple[float, np.ndarray]:
        """Mean cross-entropy and predicted classes on the validation set (token-budget batches, as `run`)."""
        import torch

        self.model.eval()
        lengths = np.fromiter(map(len, self.x_val), dtype=np.int64, count=len(self.x_val))
        predicted = np.empty(len(self.x_val), dtype=np.int64)
        loss_sum = 0.0
        with torch.inference_mode():
            for rows in pack(lengths, self.val_tokens):
                input_ids, mask = _pad(self.x_val, rows, self.pad_id)
                with self.autocast:
                    logits = self.model(input_ids=input_ids.to(self.device), attention_mask=mask.to(self.device)).logits
                logits = logits.float()
                target = torch.from_numpy(self.y_val[rows]).to(self.device)
                loss_sum += torch.nn.functional.cross_entropy(logits, target, reduction="sum").item()
                predicted[rows] = logits.argmax(-1).cpu().numpy()
        return loss_sum / len(self.x_val), predicted

    # -- saving ----------------------------------------------------------------------------------
    def _save_to(self, folder: Path) -> None:
        self.model.save_pretrained(folder)  # model.safetensors
        self.tokenizer.save_pretrained(folder)
        # safetensors writes its file owner-only (0600); give every file the usual umask mode so
        # that a service running as another user can load the model.
        umask = os.umask(0)
        os.umask(umask)
        for path in folder.iterdir():
            path.chmod(0o666 & ~umask)

    def save_best(self) -> None:
        """The best model at the top of DIR, file by file with atomic renames."""
        temp = self.output / f".best.{os.getpid()}.tmp"
        shutil.rmtree(temp, ignore_errors=True)
        self._save_to(temp)
        for path in sorted(temp.iterdir(), key=lambda p: p.suffix == ".safetensors"):  # weights last
            os.replace(path, self.output / path.name)
        temp.rmdir()

    def save_last(self, history: list[dict[str, float]]) -> None:
        """DIR/last: checkpoint + optimizer/scheduler state + history, swapped in as a whole."""
        import torch

        temp = self.output / f".last.{os.getpid()}.tmp"
        shutil.rmtree(temp, ignore_errors=True)
        self._save_to(temp)
        torch.save({"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()}, temp / OPTIMIZER)
        state = {"epoch": len(history), "labels": self.labels, "config": self.cfg.model_dump(), "history": history}
        write_json(temp / STATE, state)
        last, old = self.output / LAST, self.output / f".last.{os.getpid()}.old"
        if last.exists():
            os.replace(last, old)
        os.replace(temp, last)
        shutil.rmtree(old, ignore_errors=True)


def write_metrics(output: Path, history: list[dict[str, float]], labels: list[str], cfg: TrainConfig) -> None:
    """DIR/metrics.csv (one row per epoch) and DIR/metrics.json (the same plus the best epoch and settings)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=METRICS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    temp = output / f".metrics.csv.{os.getpid()}.tmp"
    temp.write_text(buffer.getvalue())
    os.replace(temp, output / "metrics.csv")
    write_json(output / "metrics.json", {"best_epoch": best_epoch(history), "labels": labels,
                                         "config": cfg.model_dump(), "history": history})


def _check_output(output: Path, cfg: TrainConfig, resume: bool, overwrite: bool) -> dict[str, Any] | None:
    """Check DIR against the flags, changing nothing; returns the saved state when resuming."""
    if resume and overwrite:
        raise ConfigError("--resume continues the run in --output and --overwrite deletes it; pass one of them.")
    if resume:
        state = read_state(output)
        saved = TrainConfig(**state["config"]).fingerprint()
        diff = [f"{k}: {saved[k]!r} -> {v!r}" for k, v in cfg.fingerprint().items() if saved[k] != v]
        if diff:
            raise OutputError(
                f"Cannot resume {str(output)!r} with different settings ({'; '.join(diff)}). "
                "Resume with the original settings, or train into a new --output."
            )
        return state
    if output.exists() and not output.is_dir():
        raise OutputError(f"--output {str(output)!r} is a file; pass a folder (it is created if missing).")
    if output.exists() and any(output.iterdir()):
        ours = (output / "metrics.json").is_file() or (output / LAST).is_dir()
        if not ours:
            raise OutputError(
                f"--output {str(output)!r} is a non-empty folder that holds no training run; "
                "refusing to write into it. Pass a new or empty folder."
            )
        if not overwrite:
            raise OutputError(
                f"--output {str(output)!r} already holds a training run. Pass --resume to continue it, "
                "--overwrite to start again from scratch, or a new folder."
            )
    return None


def train(cfg: TrainConfig, output: str | Path, *, resume: bool = False, overwrite: bool = False,
          callbacks: TrainCallbacks | None = None) -> TrainResult:
    """Train until cfg.epochs or early stopping; after every epoch save DIR/last, and DIR when val loss improved."""
    started = time.perf_counter()
    output = Path(output).expanduser()
    callbacks = callbacks or TrainCallbacks()
    state = _check_output(output, cfg, resume, overwrite)
    history: list[dict[str, float]] = list(state["history"]) if state else []
    resumed_from = len(history)
    result = TrainResult(str(output), list(state["labels"]) if state else [], history, best_epoch(history),
                         stopped_early=False, resumed_from=resumed_from)
    if state is not None and _finished(history, cfg):
        result.stopped_early = len(history) < cfg.epochs
        return result  # nothing left to do: no need to load the model
    run = _Run(cfg, output, state)
    if state is None:  # only now that data and model are loaded: a typo never costs an earlier run
        shutil.rmtree(output, ignore_errors=True)
        output.mkdir(parents=True)
    result.labels, result.n_train, result.n_val, result.device = run.labels, len(run.x_train), len(run.x_val), run.device
    while not _finished(history, cfg):
        row = run.epoch(len(history) + 1, callbacks)
        history.append(row)
        improved = best_epoch(history) == row["epoch"]
        if improved:
            run.save_best()
        run.save_last(history)
        write_metrics(output, history, run.labels, cfg)
        callbacks.epoch_end(row, improved)
    result.best_epoch = best_epoch(history)
    result.stopped_early = len(history) < cfg.epochs
    result.seconds = time.perf_counter() - started
    return result
