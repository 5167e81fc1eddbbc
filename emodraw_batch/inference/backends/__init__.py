"""Forward backends: one batch of padded ids in, its probabilities out, behind one small interface.

    run(input_ids, lengths) -> handle     one batch (a device tensor, or a Future), without waiting for it
    pending(rows, order, handles) -> Pending   a window's handles on their way back to the host

`collect(pending)` then waits (the window's one host synchronisation) and puts the rows back in
order. torch_forward.py runs transformers on torch (CPU or CUDA, every precision and GPU fast path);
onnx_forward.py runs an ONNX Runtime export (fp32 on the CPU, batches in parallel on a thread pool). A new backend is one more module here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np


@dataclass(frozen=True)
class Pending:
    """A window whose batches are queued on the device; `collect` waits for it.

    `order`: the row index of each output row; `probs`: the probabilities in that order, a numpy
    array, or (CUDA) a pinned host tensor that an asynchronous copy is filling; `done`: the CUDA
    event recorded behind that copy, the window's one host synchronisation (None elsewhere).
    """

    rows: int
    order: np.ndarray
    probs: Any
    done: Any = None


class Forward(Protocol):
    """What the classifier needs of a backend."""

    def run(self, input_ids: np.ndarray, lengths: np.ndarray) -> Any: ...

    def pending(self, rows: int, order: np.ndarray, outputs: list[Any]) -> Pending: ...


def collect(pending: Pending, labels: int) -> np.ndarray:
    """The probabilities of a submitted window, back in the rows' order (waits for its copy)."""
    if pending.done is not None:
        pending.done.synchronize()
    probs = np.empty((pending.rows, labels), dtype=np.float32)
    probs[pending.order] = pending.probs if isinstance(pending.probs, np.ndarray) else pending.probs.numpy()
    return probs


def lengths_mask(input_ids: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The 2D int64 attention mask of a batch from its rows' lengths (host side)."""
    return (np.arange(input_ids.shape[1])[None, :] < lengths[:, None]).astype(np.int64)
