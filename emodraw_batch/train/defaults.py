"""Training defaults by starting point: one table, read by TrainConfig and by the CLI help.

Plain Python with no imports, so that `emodraw-batch --help` can show the table for free.
"""

from __future__ import annotations

from typing import Any

# The keys a flag may leave unset; each starting point gives a value for every one of them.
TUNED = ("epochs", "patience", "lr", "batch_size", "warmup_ratio", "weight_decay", "vocab_size")

# Fine-tuning a pretrained encoder keeps the usual protocol (2e-5, batch 64). A small model from
# scratch needs a higher rate and many small steps to leave the "always the majority class"
# plateau: on 4,000 emotion tweets x 3 epochs, tiny reached 0.61-0.65 validation accuracy with
# batch 8 and lr 5e-4..1e-3, but stayed near the majority share (0.35) with batch 32 or lr 3e-3
# (TRAINING.md). The bigger the model from scratch, the lower its rate; only tiny is measured.
# "fine-tune": --base CHECKPOINT; "scratch:SIZE": --from-scratch SIZE.
_SHARED: dict[str, Any] = dict(patience=3, warmup_ratio=0.1, weight_decay=0.01, vocab_size=8000)
DEFAULTS: dict[str, dict[str, Any]] = {
    "fine-tune": dict(_SHARED, epochs=20, lr=2e-5, batch_size=64),
    "scratch:tiny": dict(_SHARED, epochs=15, lr=1e-3, batch_size=8),
    "scratch:mini": dict(_SHARED, epochs=15, lr=5e-4, batch_size=16),
    "scratch:small": dict(_SHARED, epochs=15, lr=5e-4, batch_size=16),
    "scratch:base": dict(_SHARED, epochs=15, lr=2e-4, batch_size=32),
}


def start_key(base: str | None, from_scratch: str | None) -> str:
    """The DEFAULTS key of a starting point (fine-tuning when no from-scratch size is given)."""
    return f"scratch:{from_scratch}" if from_scratch is not None and base is None else "fine-tune"


def defaults_for(base: str | None, from_scratch: str | None) -> dict[str, Any]:
    """The default of every TUNED setting for this starting point (a copy: callers may change it)."""
    return dict(DEFAULTS[start_key(base, from_scratch)])


def describe(key: str) -> str:
    """One setting's defaults for the CLI help, e.g. `2e-05 fine-tuning; from scratch 0.003 tiny, 0.001 small`."""
    def show(value: Any) -> str:
        return f"{value:g}" if isinstance(value, float) else str(value)

    values = {start.removeprefix("scratch:"): table[key] for start, table in DEFAULTS.items()}
    if len(set(values.values())) == 1:
        return show(values["fine-tune"])
    scratch = {size: value for size, value in values.items() if size != "fine-tune"}
    if len(set(scratch.values())) == 1:
        tail = f"{show(next(iter(scratch.values())))} from scratch"
    else:
        tail = "from scratch " + ", ".join(f"{show(value)} {size}" for size, value in scratch.items())
    return f"{show(values['fine-tune'])} fine-tuning; {tail}"
