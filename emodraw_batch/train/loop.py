"""The epoch loop: optimizer, one training epoch, validation, the loss.

Reproducible by construction: the shuffle and the dropout RNG of epoch k are seeded from
(seed, k), so a run resumed after epoch k computes what an uninterrupted run computes.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from emodraw_batch.inference.batching import pack
from emodraw_batch.analysis.metrics import report
from emodraw_batch.train.config import FitSettings
from emodraw_batch.train.data import Split, bucketed_batches

METRICS = ("epoch", "train_loss", "val_loss", "val_accuracy", "val_macro_f1", "lr", "seconds")


class TrainCallbacks:
    """Progress hooks (the CLI draws bars with them); these defaults do nothing."""

    def epoch_start(self, epoch: int, epochs: int, batches: int) -> None: ...

    def batch_end(self, loss: float) -> None: ...

    def epoch_end(self, row: dict[str, float], best: bool) -> None: ...


@dataclass(frozen=True)
class Objective:
    """Cross-entropy on labels; with soft targets T²·KL(target ‖ model at temperature T).

    Soft targets are expected at the temperature already (see `soften`). Where a row also has
    a label, `hard_weight` of its loss is cross-entropy on that label.
    """

    temperature: float = 1.0
    hard_weight: float = 0.0

    def __call__(self, logits: Any, split: Split, rows: np.ndarray, reduction: str = "mean") -> Any:
        import torch
        import torch.nn.functional as F

        logits = logits.float()
        if split.soft is None:
            target = torch.from_numpy(split.labels[rows]).to(logits.device)
            return F.cross_entropy(logits, target, reduction=reduction)
        t = self.temperature
        soft = torch.from_numpy(split.soft[rows]).to(logits.device)
        loss = F.kl_div(F.log_softmax(logits / t, dim=-1), soft, reduction="none").sum(-1) * (t * t)
        labels = split.labels[rows]
        if self.hard_weight > 0 and (labels >= 0).any():
            known = torch.from_numpy(labels >= 0).to(logits.device)
            hard = F.cross_entropy(logits, torch.from_numpy(np.maximum(labels, 0)).to(logits.device), reduction="none")
            loss = torch.where(known, (1 - self.hard_weight) * loss + self.hard_weight * hard, loss)
        return loss.mean() if reduction == "mean" else loss.sum()


def soften(probs: np.ndarray, temperature: float) -> np.ndarray:
    """Probabilities at a temperature: softmax(log p / T), as float32."""
    logits = np.log(np.maximum(probs.astype(np.float64), 1e-12)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    out = np.exp(logits)
    return (out / out.sum(axis=1, keepdims=True)).astype(np.float32)


@dataclass
class Session:
    """A model being trained, on its device, with its optimizer and learning-rate schedule."""

    model: Any
    pad_id: int
    device: str
    autocast: Any
    optimizer: Any
    scheduler: Any
    objective: Objective
    val_tokens: int

    def logits(self, split: Split, rows: np.ndarray) -> Any:
        input_ids, mask = split.tokens.batch(rows, self.pad_id)
        with self.autocast:
            return self.model(input_ids=input_ids.to(self.device), attention_mask=mask.to(self.device)).logits


def open_session(model: Any, pad_id: int, cfg: FitSettings, steps_per_epoch: int, objective: Objective,
                 device: str, saved: dict[str, Any] | None = None) -> Session:
    """Move the model to the device and set up AdamW with linear warm-up and decay (or restore them)."""
    import torch
    from transformers import get_linear_schedule_with_warmup

    from emodraw_batch.inference.device import default_batch_tokens, resolve_precision

    bf16 = (cfg.precision if cfg.precision != "auto" else resolve_precision("auto", device)) == "bf16"
    autocast = torch.autocast("cuda" if device.startswith("cuda") else "cpu", dtype=torch.bfloat16, enabled=bf16)
    model.to(device)
    # No weight decay on biases and LayerNorm weights (the 1-d parameters), as usual for BERT-style models.
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr)
    total = cfg.epochs * steps_per_epoch
    scheduler = get_linear_schedule_with_warmup(optimizer, int(cfg.warmup_ratio * total), total)
    if saved is not None:
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
    return Session(model, pad_id, device, autocast, optimizer, scheduler, objective, default_batch_tokens(device))


def steps_per_epoch(n: int, batch_size: int) -> int:
    return math.ceil(n / batch_size)


def train_epoch(session: Session, train: Split, cfg: FitSettings, epoch: int, callbacks: TrainCallbacks) -> float:
    """One pass over `train` in bucketed batches; returns the mean training loss."""
    import torch

    torch.manual_seed(cfg.seed * 1_000_003 + epoch)  # dropout of epoch k depends only on (seed, k)
    batches = bucketed_batches(train.tokens.lengths, cfg.batch_size, np.random.default_rng([cfg.seed, epoch]))
    callbacks.epoch_start(epoch, cfg.epochs, len(batches))
    session.model.train()
    total = 0.0
    # enable_grad: an EmotionClassifier built earlier in this process switches gradients off globally.
    with torch.enable_grad():
        for rows in batches:
            loss = session.objective(session.logits(train, rows), train, rows)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(session.model.parameters(), 1.0)
            session.optimizer.step()
            session.scheduler.step()
            session.optimizer.zero_grad(set_to_none=True)
            total += loss.item() * len(rows)
            callbacks.batch_end(loss.item())
    return total / len(train)


def validate(session: Session, val: Split) -> tuple[float, np.ndarray]:
    """Mean loss and predicted classes on `val` (token-budget batches, as `run`)."""
    import torch

    session.model.eval()
    predicted = np.empty(len(val), dtype=np.int64)
    loss_sum = 0.0
    with torch.inference_mode():
        for rows in pack(val.tokens.lengths, session.val_tokens):
            logits = session.logits(val, rows).float()
            loss_sum += session.objective(logits, val, rows, reduction="sum").item()
            predicted[rows] = logits.argmax(-1).cpu().numpy()
    return loss_sum / len(val), predicted


def run_epoch(session: Session, train: Split, val: Split, labels: list[str], cfg: FitSettings, epoch: int,
              callbacks: TrainCallbacks) -> dict[str, float]:
    """Train one epoch and validate: the epoch's row of the history (see METRICS)."""
    started = time.perf_counter()
    train_loss = train_epoch(session, train, cfg, epoch, callbacks)
    val_loss, predicted = validate(session, val)
    scores = report(val.reference(), predicted, labels)
    return {
        "epoch": epoch,
        "train_loss": train_loss,
        "val_loss": val_loss,
        "val_accuracy": scores["accuracy"],
        "val_macro_f1": scores["macro_f1"],
        "lr": session.scheduler.get_last_lr()[0],
        "seconds": time.perf_counter() - started,
    }
