"""What a run writes, every file through `atomic.replacing`, and how it is read back to resume.

    DIR/                   best validation loss: config.json, model.safetensors, tokenizer files
    DIR/metrics.csv|json   one row per epoch: train loss, val loss, val accuracy, val macro F1
    DIR/last/              the last epoch: a checkpoint plus trainer_state.json and optimizer.pt
"""

from __future__ import annotations

import csv
import io
import json
import tempfile
from pathlib import Path
from typing import Any

from emodraw_batch.atomic import replacing, write_json, write_text
from emodraw_batch.errors import ConfigError, OutputError
from emodraw_batch.train.config import FitSettings
from emodraw_batch.train.loop import METRICS, Session

LAST = "last"
STATE = "trainer_state.json"
OPTIMIZER = "optimizer.pt"


def best_epoch(history: list[dict[str, float]]) -> int:
    """The epoch with the lowest validation loss (the earliest on a tie); 0 before any epoch."""
    return int(min(history, key=lambda r: (r["val_loss"], r["epoch"]))["epoch"]) if history else 0


def finished(history: list[dict[str, float]], cfg: FitSettings) -> bool:
    done = len(history)
    return done >= cfg.epochs or (done > 0 and done - best_epoch(history) >= cfg.patience)


def read_state(output: Path) -> dict[str, Any]:
    """The trainer state of DIR/last, written after every epoch."""
    path = output / LAST / STATE
    if not path.is_file():
        raise OutputError(
            f"Cannot resume: {str(path)!r} does not exist, so {str(output)!r} holds no interrupted training run. "
            "Drop --resume to start a new run, or pass the --output of the run to continue."
        )
    return json.loads(path.read_text())


def read_optimizer(output: Path) -> dict[str, Any]:
    import torch

    return torch.load(output / LAST / OPTIMIZER, map_location="cpu", weights_only=True)


def check_output(output: Path, cfg: FitSettings, resume: bool, overwrite: bool) -> dict[str, Any] | None:
    """Check DIR against the flags, changing nothing; returns the saved state when resuming."""
    if resume and overwrite:
        raise ConfigError("--resume continues the run in --output and --overwrite deletes it; pass one of them.")
    if resume:
        state = read_state(output)
        saved = type(cfg)(**state["config"]).fingerprint()
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
        if not ((output / "metrics.json").is_file() or (output / LAST).is_dir()):
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


def save_best(output: Path, model: Any, tokenizer: Any) -> None:
    """The best model at the top of DIR, file by file, each swapped in atomically (weights last)."""
    with tempfile.TemporaryDirectory(prefix=".best.", dir=output) as scratch:
        model.save_pretrained(scratch)
        tokenizer.save_pretrained(scratch)
        for path in sorted(Path(scratch).iterdir(), key=lambda p: p.suffix == ".safetensors"):
            with replacing(output / path.name) as temp:
                path.replace(temp)


def save_checkpoint(output: str | Path, model: Any, tokenizer: Any, half: bool = False) -> None:
    """A checkpoint folder written by a tool (save_best's atomic files); `half` stores fp16 weights
    (half the bytes; `load_checkpoint` makes them fp32 again)."""
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    save_best(output, model.half() if half else model, tokenizer)


def save_last(output: Path, session: Session, tokenizer: Any, state: dict[str, Any]) -> None:
    """DIR/last: checkpoint + optimizer/scheduler state + trainer state, swapped in as a whole."""
    import torch

    with replacing(output / LAST) as temp:
        session.model.save_pretrained(temp)
        tokenizer.save_pretrained(temp)
        saved = {"optimizer": session.optimizer.state_dict(), "scheduler": session.scheduler.state_dict()}
        torch.save(saved, temp / OPTIMIZER)
        write_json(temp / STATE, state)


def write_metrics(output: Path, history: list[dict[str, float]], labels: list[str], cfg: FitSettings) -> None:
    """DIR/metrics.csv (one row per epoch) and DIR/metrics.json (the same plus the best epoch and settings)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=METRICS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    write_text(output / "metrics.csv", buffer.getvalue())
    write_json(output / "metrics.json", {"best_epoch": best_epoch(history), "labels": labels,
                                         "config": cfg.model_dump(), "history": history})
