"""The labelling loop never makes the device wait for the host (issue #20, part 2), checked on the CPU.

- One host synchronisation per window: the copy of its probabilities back. Every call that would
  make the host wait for a CUDA device (`bool(tensor)`, `.item()`, `.tolist()`, `.cpu()`,
  `.numpy()`) is counted while a window is submitted and collected; transformers' own
  `padding_mask.all()` check is one such call per padded batch, and the counter sees it.
- The masks handed to the model without that check give bit-identical probabilities to the 2D
  mask of before, for sdpa and eager attention, padded and unpadded batches, fp32 and bf16 weights.
- `label_shard` queues window k before it collects window k-1 when the device works
  asynchronously, and writes exactly what the sequential loop writes.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from conftest import make_texts, write_corpus

from emodraw_batch.inference import batcher as B
from emodraw_batch.job import runner
from emodraw_batch.config import RunConfig
from emodraw_batch.inference.backends import Pending
from emodraw_batch.inference.classifier import EmotionClassifier
from emodraw_batch.job.plan import plan
from emodraw_batch.job.validate import validate

SYNCS = ("__bool__", "item", "tolist", "cpu", "numpy")


@pytest.fixture
def syncs(monkeypatch) -> Counter:
    """Counts the tensor calls that synchronise the host with a CUDA device."""
    calls: Counter = Counter()
    for name in SYNCS:
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _original=original, _name=name, **kwargs):
            calls[_name] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    return calls


@pytest.fixture(scope="module")
def texts() -> list[str]:
    # Lengths 1..30 words: sorted batches under a small budget are partly padded, partly not.
    return make_texts(300, seed=4, max_words=30) + ["feel"] * 40


def reference(clf: EmotionClassifier, ids: list[list[int]]) -> np.ndarray:
    """Today's path before issue #20: every batch with its 2D int64 mask, transformers builds the rest."""
    probs = np.empty((len(ids), len(clf.labels)), dtype=np.float32)
    flat, starts, lengths = B.flatten(ids)
    with torch.inference_mode():
        for batch in B.pack(lengths, clf.batch_tokens):
            input_ids, mask = B.pad_batch(flat, starts[batch], lengths[batch], clf.batcher.pad_id)
            probs[batch] = clf.backend.forward_probs(torch.from_numpy(input_ids), torch.from_numpy(mask)).numpy()
    return probs


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_one_host_sync_per_window_and_the_same_probabilities(tiny_model, texts, syncs, attention, precision):
    clf = EmotionClassifier(tiny_model, device="cpu", precision=precision, batch_tokens=300,
                            attn_implementation=attention, half_weights=precision == "bf16")
    assert clf.backend.mask_kind == attention
    ids, _ = clf.encode(texts)
    batches = list(clf.batcher.batches(ids))
    widths = [input_ids.shape[1] for _, input_ids, _ in batches]
    padded = sum(int(lengths.min()) < input_ids.shape[1] for _, input_ids, lengths in batches)
    assert len(batches) > 5 and 0 < padded < len(batches), widths  # both kinds of batch occur

    expected = reference(clf, ids)
    assert syncs["__bool__"] >= padded  # the old path: transformers asks the device once per padded batch
    syncs.clear()
    pending = clf.submit(ids)
    probs = clf.collect(pending)
    assert sum(syncs.values()) == 1, dict(syncs)  # the one copy of the window's probabilities
    np.testing.assert_array_equal(probs, expected)  # bit-identical, not merely close


def test_label_shard_queues_the_next_window_before_collecting_the_last(tiny_model, tmp_path, monkeypatch):
    corpus = write_corpus(tmp_path / "in.parquet", make_texts(230, seed=9), row_group_size=20)
    config = RunConfig(model=tiny_model, device="cpu", window_rows=50, batch_tokens=400)
    job = plan(validate([str(corpus)], tmp_path / "seq", config, overwrite=False))
    runner.label_shard(job.todo[0], config, tmp_path / "seq")

    class Event:  # a stand-in for a CUDA event: the loop must treat the window as still running
        def synchronize(self) -> None:
            pass

    clf = runner.classifier_for(config)
    calls = []
    submit, collect = clf.submit, clf.collect

    def async_submit(ids):
        pending = submit(ids)
        calls.append(("submit", len(calls)))
        return Pending(pending.rows, pending.order, pending.probs, Event())

    def counted_collect(pending):
        calls.append(("collect", len(calls)))
        return collect(pending)

    monkeypatch.setattr(clf, "submit", async_submit)
    monkeypatch.setattr(clf, "collect", counted_collect)
    job = plan(validate([str(corpus)], tmp_path / "piped", config, overwrite=False))
    runner.label_shard(job.todo[0], config, tmp_path / "piped", classifier=clf)
    kinds = [kind for kind, _ in calls]
    assert kinds == ["submit", "submit", "collect", "submit", "collect", "submit", "collect", "submit", "collect", "collect"]
    seq = pq.read_table(tmp_path / "seq" / "labels")
    piped = pq.read_table(tmp_path / "piped" / "labels")
    assert piped.num_rows == 230 and piped.equals(seq)  # same rows, order and probabilities


def test_encoded_ids_hold_the_rows_back_to_back_and_read_like_lists():
    """EncodedIds (token_rows.py): one int32 array for a window's ids; the batcher pads straight from it."""
    from emodraw_batch.inference.token_rows import EncodedIds

    rng = np.random.default_rng(1)
    rows = [rng.integers(5, 30000, size=n).tolist() for n in rng.integers(0, 40, size=60)]
    ids = EncodedIds.from_rows(rows)
    assert len(ids) == 60 and ids.flat.dtype == np.int32 and ids.flat.nbytes == 4 * sum(map(len, rows))
    assert ids.tolist() == rows and ids == rows and ids[7].tolist() == rows[7]
    assert ids == EncodedIds.joined([EncodedIds.from_rows(rows[:25]), EncodedIds.from_rows(rows[25:])])
    assert not ids == rows[:-1] + [rows[-1] + [1]]
    flat, starts, lengths = B.flatten(ids)
    assert flat is ids.flat  # no copy
    list_flat, list_starts, list_lengths = B.flatten(rows)
    for batch in B.pack(lengths, 200):
        np.testing.assert_array_equal(B.pad_batch(flat, starts[batch], lengths[batch], 0)[0],
                                      B.pad_batch(list_flat, list_starts[batch], list_lengths[batch], 0)[0])
