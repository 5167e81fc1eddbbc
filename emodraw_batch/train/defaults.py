"""Training defaults by starting point: one table, read by TrainConfig and by the CLI help.

Plain Python with no imports, so that `emodraw-batch --help` can show the table for free.
"""

from __future__ import annotations

from typing import Any

# The keys a flag may leave unset; each starting point gives a value for every one of them.
TUNED = ("epochs", "patience", "lr", "batch_size", "warmup_ratio", "weight_decay", "vocab_size")

_COMMON: dict[str, Any] = dict(epochs=20, patience=3, lr=2e-5, batch_size=64, warmup_ratio=0.1,
                               weight_decay=0.01, vocab_size=8000)

# "fine-tune": --base CHECKPOINT; "scratch:SIZE": --from-scratch SIZE.
DEFAULTS: dict[str, dict[str, Any]] = {
    "fine-tune": dict(_COMMON),
    "scratch:tiny": dict(_COMMON),
    "scratch:small": dict(_COMMON),
    "scratch:base": dict(_COMMON),
}


def start_key(base: str | None, from_scratch: str | None) -> str:
    """The DEFAULTS key of a starting point (fine-tuning when no from-scratch size is given)."""
    return f"scratch:{from_scratch}" if from_scratch is not None and base is None else "fine-tune"


def defaults_for(base: str | None, from_scratch: str | None) -> dict[str, Any]:
    """The default of every TUNED setting for this starting point (a copy: callers may change it)."""
    return dict(DEFAULTS[start_key(base, from_scratch)])


def describe(key: str) -> str:
    """One setting's defaults for the CLI help, e.g. `2e-05 fine-tuning; 0.003 from scratch (tiny)`."""
    values: dict[Any, list[str]] = {}
    for start, table in DEFAULTS.items():
        values.setdefault(table[key], []).append(start.removeprefix("scratch:"))
    if len(values) == 1:
        return f"{next(iter(values))}"
    parts = []
    for value, starts in values.items():
        sizes = [s for s in starts if s != "fine-tune"]
        where = (["fine-tuning"] if "fine-tune" in starts else []) + ([f"from scratch ({', '.join(sizes)})"] if sizes else [])
        parts.append(f"{value:g} {' and '.join(where)}" if isinstance(value, float) else f"{value} {' and '.join(where)}")
    return "; ".join(parts)
