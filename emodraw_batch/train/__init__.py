"""Fine-tune an ALBERT emotion classifier on labelled data, or train one from scratch.

The output folder is itself a checkpoint, so `emodraw-batch run --model DIR` works
(layout in checkpoints.py). By job:

    defaults.py     the training defaults by starting point (fine-tuning, from scratch per size)
    config.py       TrainConfig (and FitSettings, the part every trainer shares)
    data.py         token ids back to back, targets, bucketed batches
    start.py        the initial model: fresh ALBERT, base checkpoint (loaded once), DIR/last
    loop.py         optimizer, one epoch, validation, the loss
    checkpoints.py  DIR, DIR/last, metrics; reading them back to resume
    run.py          `fit` (any trainer's epochs, early stopping, saving) and `train`, make_config
    distill.py      `distill`: a teacher labels a corpus (job.runner.run), a student learns from it
    from_scratch.py a new ALBERT and a tokenizer trained offline (tests, benchmarks, --from-scratch)

Names are imported on first use, so reading the defaults (the CLI help) costs no numpy or torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "TrainConfig": "config", "FitSettings": "config", "make_config": "run",
    "defaults_for": "defaults", "DEFAULTS": "defaults",
    "bucketed_batches": "data", "BUCKET_BATCHES": "data",
    "TrainCallbacks": "loop", "METRICS": "loop",
    "LAST": "checkpoints", "STATE": "checkpoints", "OPTIMIZER": "checkpoints", "read_state": "checkpoints",
    "best_epoch": "checkpoints", "write_metrics": "checkpoints",
    "TrainResult": "run", "train": "run", "fit": "run",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
