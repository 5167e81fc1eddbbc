"""Issue 39 item 1, the kernels, on the CPU: mask-free batches and a compiled path that does not recompile per batch.

- `equal_lengths`: groups of rows of one length run in batches of their own, unpadded, with
  attention_mask=None (on CUDA SDPA may then pick its flash kernel). Rows in = rows out, order
  kept, every batch within the budget; probabilities equal the masked path's within
  SAME_MATHS_ATOL in fp32 and within the bf16 tolerance of tests/test_gpu_paths.py in bf16.
- `compile`: torch.compile with dynamic batch and sequence sizes, compiled by inductor for real
  (no mock): a window of many widths compiles a bounded number of graphs, counted by Dynamo's own
  counters, and gives the eager path's probabilities within SAME_MATHS_ATOL.
Speed is measured by bench/gpu.py on a GPU (and on this CPU in docs/performance.md), never here.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import SAME_MATHS_ATOL, make_texts

from emodraw_batch.errors import ConfigError
from emodraw_batch.inference import fast_paths as F
from emodraw_batch.inference.batching import equal_length_groups
from emodraw_batch.inference.classifier import EmotionClassifier
from test_gpu_paths import BF16_ATOL, BF16_MIN_AGREEMENT, ROOT, TRAINED, assert_same_labels


@pytest.fixture(scope="module")
def texts() -> list[str]:
    # Many rows of a few lengths (large groups) and a tail of scattered lengths (small groups, padded).
    words = make_texts(400, seed=5, max_words=12)
    return words + make_texts(60, seed=6, max_words=60) + ["i feel happy"] * 30


def masks_seen(clf: EmotionClassifier) -> list[bool]:
    """Record, per batch the model runs, whether it was given a mask."""
    seen: list[bool] = []
    inner = clf.backend.forward_probs

    def spy(input_ids, mask):
        seen.append(mask is not None)
        return inner(input_ids, mask)

    clf.backend.forward_probs = spy
    return seen


# -- mask-free batches -------------------------------------------------------------------------


def test_equal_length_groups_keep_every_row_once_within_the_budget():
    rng = np.random.default_rng(0)
    lengths = np.concatenate([np.full(500, 12), np.full(37, 30), rng.integers(1, 64, size=300)])
    rng.shuffle(lengths)
    budget, min_tokens = 1_000, 250
    equal, rest = equal_length_groups(lengths, budget, min_tokens)
    rows = np.concatenate(equal + [rest])
    assert sorted(rows.tolist()) == list(range(len(lengths)))  # every row exactly once
    for batch in equal:
        assert len(set(lengths[batch].tolist())) == 1  # one length: no padding, no mask
        assert lengths[batch].sum() <= budget and lengths[batch].sum() >= min_tokens
    widths = [int(lengths[b][0]) for b in equal]
    assert widths == sorted(widths, reverse=True)  # longest first
    assert 12 in widths and 30 in widths  # both large groups got batches of their own
    # A group too small for a batch of its own stays with the padded rest, whole.
    assert all(lengths[rest].tolist().count(v) * v < min_tokens or v in widths for v in set(lengths[rest].tolist()))


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_mask_free_batches_equal_the_masked_path_in_fp32(tiny_model, texts, attention):
    exact = EmotionClassifier(tiny_model, device="cpu", batch_tokens=600, attn_implementation=attention)
    clf = EmotionClassifier(tiny_model, device="cpu", batch_tokens=600, attn_implementation=attention, equal_lengths=0.25)
    before, after = masks_seen(exact), masks_seen(clf)
    want, got = exact(texts), clf(texts)
    assert len(got.probs) == len(texts)  # rows in = rows out, in the texts' order (compared row by row)
    assert_same_labels(got, want, SAME_MATHS_ATOL)
    unmasked = sum(not m for m in after)
    assert unmasked > sum(not m for m in before) and unmasked > len(after) / 3, (before, after)
    assert clf.describe()["fast_paths"]["equal_lengths"] == 0.25  # recorded with the labels
    ids, _ = clf.encode(texts)
    for batch, input_ids, lengths in clf.batcher.batches(ids):
        assert input_ids.size <= 600 or len(batch) == 1


def test_mask_free_batches_stay_within_the_bf16_tolerance(texts):
    exact = EmotionClassifier(TRAINED, device="cpu", precision="fp32")(texts)
    masked = EmotionClassifier(TRAINED, device="cpu", precision="bf16", half_weights=True, batch_tokens=1024)(texts)
    clf = EmotionClassifier(TRAINED, device="cpu", precision="bf16", half_weights=True, batch_tokens=1024, equal_lengths=0.25)
    seen = masks_seen(clf)
    got = clf(texts)
    assert not all(seen)
    np.testing.assert_allclose(got.probs, exact.probs, atol=BF16_ATOL)
    np.testing.assert_allclose(got.probs, masked.probs, atol=BF16_ATOL)
    assert (got.probs.argmax(1) == exact.probs.argmax(1)).mean() >= BF16_MIN_AGREEMENT


def test_mask_free_batches_are_not_rounded_up_to_a_bucket(tiny_model, texts):
    clf = EmotionClassifier(tiny_model, device="cpu", batch_tokens=600, pad_multiple=16, equal_lengths=0.25)
    ids, _ = clf.encode(texts)
    batches = list(clf.batcher.batches(ids))
    unpadded = [input_ids.shape[1] for _, input_ids, lengths in batches if int(lengths.min()) == input_ids.shape[1]]
    padded = [input_ids.shape[1] for _, input_ids, lengths in batches if int(lengths.min()) < input_ids.shape[1]]
    assert unpadded and padded and all(w % 16 == 0 for w in padded)
    assert any(w % 16 for w in unpadded)  # kept at their length: a bucket would bring the mask back


def test_equal_lengths_setting_parses_and_checks_its_range(tiny_model):
    assert F.parse_fast_paths("equal_lengths=0.125") == {"equal_lengths": 0.125}
    assert F.parse_fast_paths("equal_lengths=0") == {"equal_lengths": 0.0}
    with pytest.raises(ConfigError, match="equal_lengths"):
        EmotionClassifier(tiny_model, device="cpu", equal_lengths=2)
    code = "from emodraw_batch.inference import fast_paths as F; print(F.FAST_PATH_DEFAULTS['equal_lengths'])"
    env = {**os.environ, "EMODRAW_FAST_PATHS": "equal_lengths=0.0625", "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "0.0625"  # the benchmark's knob, read at import in every process of a run


# -- torch.compile without a recompile per batch -----------------------------------------------


def test_compiled_model_compiles_a_bounded_number_of_graphs_for_many_widths(tiny_model):
    """Inductor for real (C++ kernels on the CPU): tens of seconds for the tiny model on 2 cores."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    texts = make_texts(240, seed=8, max_words=50)
    eager = EmotionClassifier(tiny_model, device="cpu", batch_tokens=300)
    clf = EmotionClassifier(tiny_model, device="cpu", batch_tokens=300, compile=True, equal_lengths=0.25)
    assert clf.backend.model_call is not clf.model
    shapes: set[tuple[int, int]] = set()
    inner = clf.backend.forward_probs

    def spy(input_ids, mask):
        shapes.add((tuple(input_ids.shape), mask is None))
        return inner(input_ids, mask)

    clf.backend.forward_probs = spy
    got = clf(texts)
    first = counters["stats"]["unique_graphs"]
    again = clf(make_texts(120, seed=9, max_words=50))  # more windows, other widths: nothing new to compile
    one = clf(["i feel so happy today"])  # a one-row batch runs as two rows: no graph specialised to 1
    assert len({s for s, _ in shapes}) >= 10 and {m for _, m in shapes} == {True, False}, shapes
    # One graph per kind of batch (masked, mask-free), not one per shape.
    assert 1 <= first <= 2, dict(counters["stats"])
    assert counters["stats"]["unique_graphs"] == first, dict(counters["stats"])
    assert_same_labels(got, eager(texts), SAME_MATHS_ATOL)
    assert len(again.probs) == 120
    np.testing.assert_allclose(one.probs, eager(["i feel so happy today"]).probs, atol=SAME_MATHS_ATOL, rtol=0)
