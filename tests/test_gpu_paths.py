"""The GPU fast paths give the exact path's labels, and bench/gpu.py computes and reports right.

No GPU here: every fast path of `fast_paths.FAST_PATH_DEFAULTS` runs on the CPU through the same
code (the pinned staging ring with ordinary memory, torch.compile with the "eager" backend),
and is compared with the exact path. Exact paths to SAME_MATHS_ATOL (the same arithmetic on other
shapes); bf16 weights within a stated tolerance on the shipped trained checkpoint. Speed is
measured by bench/gpu.py on a GPU, never here; its arithmetic is tested on given numbers, and
the whole command is rehearsed on the CPU with a tiny model.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import SAME_MATHS_ATOL, make_texts, write_corpus
from emodraw_batch.inference import fast_paths as F
from emodraw_batch.errors import ConfigError
from emodraw_batch.inference.batcher import EncodedIds
from emodraw_batch.inference.classifier import EmotionClassifier

ROOT = Path(__file__).resolve().parents[1]
TRAINED = str(ROOT / "data" / "albert-emotion")
# Exact paths: the same arithmetic on other shapes (buckets pad more, eager vs sdpa attention, compiled
# graphs) is SAME_MATHS_ATOL (tests/conftest.py); measured max |dp| 7e-7 on the wild tiny model.
# bf16 weights (and bf16 autocast) vs fp32 on the trained checkpoint, 400 texts on this CPU: measured
# on the shipped model (issue 40) max |dp| 0.069 (one text; 99th percentile 0.028) and 99.75% agreement
# with bf16 weights, 0.026 and 100% with autocast; on the Emotions test split 0.020 and 99.85%. (The
# model shipped before measured 0.012-0.014 and 100%.) The issue asks >= 99.5% on the GPU.
BF16_ATOL, BF16_MIN_AGREEMENT = 0.1, 0.99


def load_gpu_bench():
    spec = importlib.util.spec_from_file_location("gpu_bench", ROOT / "bench" / "gpu.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return make_texts(200, seed=11, max_words=80)  # some longer than the tiny model's 64 positions: truncated


@pytest.fixture(scope="module")
def exact(tiny_model, texts):
    return EmotionClassifier(tiny_model, device="cpu", batch_tokens=700)(texts)


def assert_same_labels(fast, exact, atol: float) -> None:
    np.testing.assert_allclose(fast.probs, exact.probs, atol=atol, rtol=0)
    assert np.array_equal(fast.n_tokens, exact.n_tokens) and np.array_equal(fast.truncated, exact.truncated)
    # Top labels are equal wherever the exact top-2 margin exceeds what the tolerance can flip.
    top2 = np.sort(exact.probs, axis=1)[:, -2:]
    clear = (top2[:, 1] - top2[:, 0]) > 2 * atol
    assert clear.mean() > 0.9
    assert np.array_equal(fast.probs.argmax(1)[clear], exact.probs.argmax(1)[clear])


# -- exact fast paths ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fast",
    [
        {"staging": True},
        {"prepare_in_encode": True},
        {"staging": True, "prepare_in_encode": True},
    ],
    ids=["staging", "prepare_in_encode", "both"],
)
def test_staging_and_preparing_are_bit_identical(tiny_model, texts, exact, fast):
    clf = EmotionClassifier(tiny_model, device="cpu", batch_tokens=700, **fast)
    got = clf(texts)
    assert np.array_equal(got.probs, exact.probs)  # the same ids, mask and shapes: the same bits
    assert np.array_equal(got.n_tokens, exact.n_tokens) and np.array_equal(got.truncated, exact.truncated)
    assert clf.describe()["fast_paths"] == fast


@pytest.mark.parametrize(
    "fast",
    [
        {"pad_multiple": 8},
        {"pad_multiple": 32, "staging": True, "prepare_in_encode": True},
        {"attn_implementation": "eager"},
        {"attn_implementation": "sdpa", "pad_multiple": 16},
    ],
    ids=["buckets8", "buckets32-staged", "eager", "sdpa-buckets16"],
)
def test_buckets_and_attention_kernels_give_the_exact_labels(tiny_model, texts, exact, fast):
    got = EmotionClassifier(tiny_model, device="cpu", batch_tokens=700, **fast)(texts)
    assert_same_labels(got, exact, SAME_MATHS_ATOL)


def test_torch_compile_gives_the_exact_labels(tiny_model, texts, exact):
    # The "eager" backend runs Dynamo's capture without code generation (inductor needs minutes here);
    # the GPU benchmark measures inductor and CUDA graphs ("reduce-overhead").
    clf = EmotionClassifier(tiny_model, device="cpu", batch_tokens=700, compile="backend:eager", pad_multiple=16)
    assert clf.backend.model_call is not clf.model
    assert_same_labels(clf(texts[:80]), EmotionClassifier(tiny_model, device="cpu", batch_tokens=700)(texts[:80]), SAME_MATHS_ATOL)


def test_bucketed_batches_keep_every_row_once_within_the_budget(tiny_model, texts):
    clf = EmotionClassifier(tiny_model, device="cpu", batch_tokens=500, pad_multiple=16)
    ids, _ = clf.encode(texts)
    batches = list(clf.batcher.pack(ids))
    rows = np.concatenate([b for b, _, _ in batches])
    assert sorted(rows.tolist()) == list(range(len(texts)))
    for batch, input_ids, lengths in batches:
        assert input_ids.shape == (len(batch), input_ids.shape[1]) and input_ids.shape[1] % 16 == 0
        assert input_ids.size <= 500 or len(batch) == 1
        assert np.array_equal(lengths, [len(ids[i]) for i in batch])
        for row, i in enumerate(batch):  # the row's ids, then padding
            assert input_ids[row, : lengths[row]].tolist() == ids[i].tolist()
            assert (input_ids[row, lengths[row] :] == clf.batcher.pad_id).all()


def test_prepared_batches_are_redone_when_the_budget_changed(tiny_model, texts, exact):
    clf = EmotionClassifier(tiny_model, device="cpu", batch_tokens=700, prepare_in_encode=True)
    ids, _ = clf.encode(texts)
    assert isinstance(ids, EncodedIds) and ids.batches and ids == [list(x) for x in ids]
    clf.batch_tokens = 300  # prepared for 700: forward must pack again, not reuse
    used = []
    inner = clf.backend.run

    def spy(input_ids, lengths):
        used.append(input_ids.size)
        return inner(input_ids, lengths)

    clf.backend.run = spy
    probs = clf.forward(ids)
    assert max(used) <= 300  # packed for the new budget (the tiny model has 64 positions: no row alone exceeds it)
    np.testing.assert_allclose(probs, exact.probs, atol=SAME_MATHS_ATOL)


def test_staging_ring_reuses_its_buffers_and_waits_for_a_slots_copy():
    import torch

    class Event:
        def __init__(self):
            self.waited = 0

        def synchronize(self):
            self.waited += 1

    ring = F.Staging("cpu", slots=3)
    rng = np.random.default_rng(0)
    for k in range(30):
        rows, width = int(rng.integers(1, 9)), int(rng.integers(1, 17))
        ids = rng.integers(0, 1000, size=(rows, width))
        lengths = rng.integers(1, width + 1, size=rows)
        slot = ring.next
        event = ring.events[slot] = Event() if k >= 3 else None
        got_ids, got_lengths = ring.put(ids, lengths)
        assert got_ids.dtype == torch.int64 and got_ids.tolist() == ids.tolist() and got_lengths.tolist() == lengths.tolist()
        if event is not None:
            assert event.waited == 1  # a slot is refilled only after its last copy is done
    assert ring.allocations <= 3 * 4  # a slot grows (doubling) only when a batch outgrows it, never per batch


# -- bf16 weights (approximate) ------------------------------------------------------------------


def test_bf16_weights_stay_close_to_fp32_on_the_trained_checkpoint():
    import torch

    texts = make_texts(400, seed=21, max_words=60)
    exact = EmotionClassifier(TRAINED, device="cpu", precision="fp32")(texts)
    clf = EmotionClassifier(TRAINED, device="cpu", precision="bf16", half_weights=True)
    assert {p.dtype for p in clf.model.parameters()} == {torch.bfloat16} and clf.backend.autocast is None
    got = clf(texts)
    assert got.probs.dtype == np.float32 and not np.array_equal(got.probs, exact.probs)
    np.testing.assert_allclose(got.probs.sum(axis=1), 1.0, atol=SAME_MATHS_ATOL)  # softmax in fp32
    np.testing.assert_allclose(got.probs, exact.probs, atol=BF16_ATOL)
    assert (got.probs.argmax(1) == exact.probs.argmax(1)).mean() >= BF16_MIN_AGREEMENT
    autocast = EmotionClassifier(TRAINED, device="cpu", precision="bf16")(texts)
    assert (autocast.probs.argmax(1) == exact.probs.argmax(1)).mean() >= BF16_MIN_AGREEMENT
    assert clf.describe()["fast_paths"] == {"half_weights": True} and "fast_paths" not in EmotionClassifier(
        TRAINED, device="cpu", precision="bf16").describe()


def test_half_weights_leave_fp32_exact():
    texts = make_texts(50, seed=3)
    a = EmotionClassifier(TRAINED, device="cpu", precision="fp32")(texts)
    b = EmotionClassifier(TRAINED, device="cpu", precision="fp32", half_weights=True)(texts)
    assert np.array_equal(a.probs, b.probs)


# -- settings ----------------------------------------------------------------------------------


def test_fast_path_settings_parse_and_default_off():
    assert F.parse_fast_paths("half_weights=1, staging=true,pad_multiple=16,attn_implementation=eager,compile=0") == {
        "half_weights": True, "staging": True, "pad_multiple": 16, "attn_implementation": "eager", "compile": False}
    assert F.parse_fast_paths("compile=reduce-overhead,prepare_in_encode=no") == {
        "compile": "reduce-overhead", "prepare_in_encode": False}
    with pytest.raises(ConfigError, match="Unknown fast path 'cuda_graphs'"):
        F.parse_fast_paths("cuda_graphs=1")
    assert F.parse_fast_paths("half_weights=cuda") == {"half_weights": "cuda"}
    if not os.environ.get("EMODRAW_FAST_PATHS"):  # bf16 weights on CUDA only; the rest measured not to pay
        assert F.FAST_PATH_DEFAULTS == {"half_weights": "cuda", "staging": False, "prepare_in_encode": False,
                                        "pad_multiple": 1, "attn_implementation": None, "compile": False,
                                        "equal_lengths": 0.0}


def test_half_weights_default_is_on_for_cuda_only(tiny_model, monkeypatch):
    monkeypatch.setitem(F.FAST_PATH_DEFAULTS, "half_weights", "cuda")
    import torch

    clf = EmotionClassifier(tiny_model, device="cpu", precision="bf16")
    assert clf.fast["half_weights"] is False and clf.fast_paths_on() == {}  # the CPU keeps autocast, recorded as exact
    assert clf.model.dtype == torch.float32
    explicit = EmotionClassifier(tiny_model, device="cpu", precision="bf16", half_weights=True)
    assert explicit.model.dtype == torch.bfloat16 and explicit.fast_paths_on() == {"half_weights": True}


def test_environment_sets_the_defaults_of_every_classifier_in_a_process(tiny_model):
    code = ("from emodraw_batch.inference.classifier import EmotionClassifier as C; "
            f"print(C({tiny_model!r}, device='cpu', precision='bf16').describe()['fast_paths'])")
    env = {**os.environ, "EMODRAW_FAST_PATHS": "half_weights=1,pad_multiple=8", "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "{'half_weights': True, 'pad_multiple': 8}"


def test_unknown_attention_or_compile_setting_is_a_config_error(tiny_model):
    with pytest.raises(ConfigError, match="compile='fastest'"):
        EmotionClassifier(tiny_model, device="cpu", compile="fastest")
    with pytest.raises(ConfigError, match="not available"):
        EmotionClassifier(tiny_model, device="cpu", attn_implementation="no_such_kernel")


# -- the benchmark's arithmetic, on given numbers ---------------------------------------------------


def test_flops_per_token_of_albert_base_is_about_171_mflop_at_32_tokens():
    gpu = load_gpu_bench()
    base = {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "embedding_size": 128, "num_labels": 6}
    assert gpu.flops_per_token(base, 32) == pytest.approx(171e6, rel=0.01)
    # Longer rows cost more per token (attention), and 12 layers cost 12x one layer's projections.
    assert gpu.flops_per_token(base, 128) > gpu.flops_per_token(base, 32)
    one = {**base, "num_hidden_layers": 1}
    assert gpu.flops_per_token(base, 32) - gpu.flops_per_token(one, 32) == pytest.approx(11 * 2 * (4 * 768**2 + 2 * 768 * 3072 + 2 * 32 * 768))


def test_derive_computes_rates_and_peak_share_from_given_numbers():
    gpu = load_gpu_bench()
    raw = {"rows": 1_000_000, "wall_s": 20.0, "label_s": 16.0, "tokens": 35_000_000, "padded_tokens": 40_000_000}
    got = gpu.derive(raw, flops=171e6, peak_tflops=989.4)
    assert got["rows_per_s_e2e"] == 50_000 and got["rows_per_s_label"] == 62_500
    assert got["tokens_per_s"] == 35e6 / 16 and got["padded_tokens_per_s"] == 40e6 / 16
    assert got["tflops"] == pytest.approx(35e6 / 16 * 171e6 / 1e12)  # 374.1 TFLOP/s
    assert got["peak_share"] == pytest.approx(374.0625 / 989.4)
    assert got["padded_peak_share"] == pytest.approx(40e6 / 16 * 171e6 / 1e12 / 989.4)
    assert got["padding_share"] == pytest.approx(0.125)
    # Missing inputs give missing outputs, never zeros or guesses.
    assert gpu.derive({"rows": 10, "wall_s": 2.0}, None, None) == {"rows_per_s_e2e": 5.0}
    assert "peak_share" not in gpu.derive({"rows": 10, "label_s": 1.0, "tokens": 100}, 1e6, None)


def test_agreement_counts_top_labels_and_the_largest_probability_difference():
    gpu = load_gpu_bench()
    a = np.array([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [0.4, 0.35, 0.25], [0.2, 0.2, 0.6]])
    b = np.array([[0.69, 0.21, 0.1], [0.1, 0.3, 0.6], [0.4, 0.35, 0.25], [0.2, 0.25, 0.55]])
    got = gpu.agreement(a, b)
    assert got == {"rows": 4, "agreement": 0.75, "max_abs_dprob": pytest.approx(0.3)}
    assert gpu.agreement(np.zeros((0, 3)), np.zeros((0, 3)))["agreement"] is None
    with pytest.raises(ValueError, match="shape"):
        gpu.agreement(a, b[:3])


def test_compare_outputs_matches_rows_by_id_and_skips_unclassified(tmp_path):
    gpu = load_gpu_bench()

    def output(folder: Path, ids, probs, status):
        (folder / "labels").mkdir(parents=True)
        table = pa.table({"id": ids, "status": status,
                          **{f"prob_{k}": np.asarray(probs, dtype=np.float32)[:, k] for k in range(2)}})
        pq.write_table(table, folder / "labels" / "part-0.parquet")
        return folder

    a = output(tmp_path / "a", [0, 1, 2, 3], [[0.9, 0.1], [0.2, 0.8], [0.5, 0.5], [0.6, 0.4]], ["ok", "ok", "empty", "ok"])
    b = output(tmp_path / "b", [3, 1, 0], [[0.3, 0.7], [0.25, 0.75], [0.9, 0.1]], ["ok", "ok", "ok"])  # other order, a subset
    got = gpu.compare_outputs(a, b)
    assert got["rows"] == 3 and got["agreement"] == pytest.approx(2 / 3) and got["max_abs_dprob"] == pytest.approx(0.3, abs=1e-6)


def test_checks_read_only_measured_numbers():
    gpu = load_gpu_bench()
    assert all(v["status"] == "not measured" for v in gpu.checks({}).values())
    results = {
        "local": {"rows": 100, "rows_per_s_e2e": 45_000.0, "rows_per_s_steady": 48_000.0, "rss_ratio": 1.4},
        "dask": {"rows": 100, "vs_local": {"rows": 100, "agreement": 1.0, "max_abs_dprob": 0.0, "same_rows": True}},
        "baseline": {"rows_per_s_label": 4_000.0},
        "agree": {"models": {"trained": {"fp32": {}, "default": {"agreement": 0.999}},
                             "base-shape": {"fp32": {}, "default": {"agreement": 0.994}}},
                  "memory": {"activation_peak_mib": 900.0, "budget_mib": 1000.0}},
        "host": {"cores": 16, "runs": [{"rows_per_s": 60_000}, {"rows_per_s": 120_000}, {"failed": True}]},
        "startup": {"wall_s": 9.5},
    }
    status = [v["status"] for v in gpu.checks(results).values()]
    # steady 48k < 50k, e2e 45k >= 40k, 11.25x >= 10x, min agreement 99.4% < 99.5%, dask = local,
    # activations within budget, RSS x1.4 > x1.25, host alone 120k >= 100k (the best run), one row 9.5 s > 8 s
    assert status == ["fail", "pass", "pass", "fail", "pass", "pass", "fail", "pass", "fail"]
    assert "host alone >= 100,000 rows/s on 16 cores" in gpu.checks(results)
    results["dask"]["vs_local"]["max_abs_dprob"] = 1e-7  # one probability off is not "equal row by row"
    assert gpu.checks(results)["dask engine labels = local engine labels (every row)"]["status"] == "fail"
    results["dask"]["vs_local"].update(max_abs_dprob=0.0, same_rows=False)  # equal where both labelled, not the same rows
    assert gpu.checks(results)["dask engine labels = local engine labels (every row)"]["status"] == "fail"
    table = gpu.markdown(results)
    assert table.index("## Targets") < table.index("## emodraw-batch run") and "| fail | 1.4 |" in table


def test_corpus_size_puts_fixed_costs_under_their_share_when_two_runs_fit():
    gpu = load_gpu_bench()
    # 20 s fixed, 30k rows/s: 10% needs 20 * 30k * 9 = 5.4M rows (200 s of labelling per run).
    roomy = gpu.size_corpus(20.0, 30_000.0, seconds_left=1_000.0, fixed_share=0.10, floor=50_000, cap=20_000_000)
    assert roomy["rows"] == roomy["rows_for_fixed_share"] == 5_400_000
    assert roomy["expected_fixed_share"] == pytest.approx(0.10)
    # Two runs of N rows plus three fixed costs must fit 300 s: (300 - 60) * 30k / 2 = 3.6M rows.
    tight = gpu.size_corpus(20.0, 30_000.0, seconds_left=300.0, fixed_share=0.10, floor=50_000, cap=20_000_000)
    assert tight["rows"] == tight["rows_that_fit"] == 3_600_000 and tight["expected_fixed_share"] > 0.10
    assert gpu.size_corpus(20.0, 30_000.0, 10.0, 0.10, floor=50_000, cap=20_000_000)["rows"] == 50_000  # never below the slice
    assert gpu.size_corpus(20.0, 30_000.0, 1e6, 0.10, floor=1, cap=1_000_000)["rows"] == 1_000_000


def test_the_default_run_gets_two_million_rows_or_says_what_the_budget_allowed():
    gpu = load_gpu_bench()
    # Issue 39 item 4: 15 s fixed, 30k rows/s; fixed costs under 10% need 4.05M rows, 2M are the floor wanted.
    roomy = gpu.size_corpus(15.0, 30_000.0, 1_000.0, 0.10, floor=150_000, cap=20_000_000, min_rows=2_000_000, runs=1)
    assert roomy["rows"] == roomy["rows_wanted"] == 4_050_000 and not roomy["limited"]
    low_fixed = gpu.size_corpus(1.0, 30_000.0, 1_000.0, 0.10, floor=150_000, cap=20_000_000, min_rows=2_000_000, runs=1)
    assert low_fixed["rows"] == 2_000_000 and low_fixed["rows_for_fixed_share"] == 270_000
    # One run of N rows plus two fixed costs in 80 s: (80 - 30) * 30k = 1.5M rows, fewer than wanted: said.
    tight = gpu.size_corpus(15.0, 30_000.0, 80.0, 0.10, floor=150_000, cap=20_000_000, min_rows=2_000_000, runs=1)
    assert tight["rows"] == tight["rows_that_fit"] == 1_500_000 and tight["limited"]
    table = gpu.markdown({"sizing": {**tight, "fixed_share": 0.10}, "first_result": {"rows": 1, "wall_s": 15.0}})
    assert "the budget allowed only 1,500,000 of the 4,050,000 rows wanted" in table


def test_each_step_keeps_what_the_later_steps_need_at_least(tmp_path):
    gpu = load_gpu_bench()
    bench = gpu.Bench(gpu.parse(["--work", str(tmp_path), "--windows-rows", "300000", "--agree-seconds", "30",
                                 "--fastpaths-seconds", "60"]))
    bench.fixed, bench.rate = 15.0, 30_000.0
    windows = 2 * (0.5 * 15.0 + 300_000 / 30_000.0) + 10
    later = {"fastpaths": 60.0, "windows": windows, "startup": 2 * 15.0 + 10, "host": gpu.HOST_SECONDS, "agree": 45.0}
    assert bench.reserve("local") == pytest.approx(sum(later.values()))
    assert bench.reserve("host") == pytest.approx(45.0)  # agree; dask and baseline take only what is left
    assert bench.reserve("agree") == bench.reserve("baseline") == 0.0
    only = gpu.Bench(gpu.parse(["--work", str(tmp_path), "--steps", "imports,local,host"]))
    assert only.steps == ["imports", "setup", "size", "local", "host"] and only.reserve("local") == gpu.HOST_SECONDS


def test_steady_rate_leaves_out_the_first_shard_and_timelines_read_by_time():
    gpu = load_gpu_bench()
    outputs = [{"rows": 1000, "seconds": 2.0}, {"rows": 1000, "seconds": 1.0}, {"rows": 500, "seconds": 0.5}]
    got = gpu.steady(outputs)
    assert got["rows_per_s_steady"] == 1000.0 and got["rows_per_s_first_shard"] == 500.0 and got["shards"] == 3
    one = gpu.steady(outputs[:1])
    assert one["rows_per_s_steady"] == 500.0 and "only shard" in one["steady_from"]
    timeline = [(0.0, 10.0), (1.0, 20.0), (2.0, 30.0), (3.0, 40.0)]
    assert gpu.at(timeline, 1.5) == 20.0 and gpu.at(timeline, 9.0) == 40.0 and gpu.at(timeline, -1.0) is None
    assert gpu.window_mean(timeline, 1.0, 2.0) == 25.0 and gpu.window_mean(timeline, 5.0, 6.0) is None


def test_generated_corpus_is_the_same_on_any_number_of_workers(tmp_path):
    sys.path.insert(0, str(ROOT / "bench"))
    import gpu_corpus

    rows = gpu_corpus.PART_ROWS + 700  # two parts
    one = pq.read_table(gpu_corpus.generate(tmp_path / "one", rows, seed=3, workers=1))
    two = pq.read_table(gpu_corpus.generate(tmp_path / "two", rows, seed=3, workers=2))
    assert one.equals(two) and one.num_rows == rows
    assert one["id"].to_pylist() == list(range(rows))  # ids in file order, none twice
    texts = one["text"].to_pylist()
    words = np.array([len(t.split()) + t.count(".") for t in texts])
    assert words.max() <= 126 and 25 < words.mean() < 40  # within 128 word tokens; tweets and reviews
    assert len(set(texts)) > 0.99 * rows  # nearly every text distinct


# -- the whole command, rehearsed on the CPU ------------------------------------------------------


def test_gpu_bench_runs_every_step_in_order_on_cpu(tmp_path, prefect_api):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, str(ROOT / "bench" / "gpu.py"), "--device", "cpu", "--size", "tiny", "--slice-rows", "300",
           "--rows", "1200", "--variants", "default,staged", "--agree-rows", "300", "--in-process",
           "--windows-rows", "1200", "--window-sizes", "300,600",
           "--work", str(tmp_path / "work"), "--out", str(tmp_path / "out"), "--budget-seconds", "900"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:] + done.stdout[-3000:]
    results = json.loads((tmp_path / "out" / "gpu-results.json").read_text())
    assert list(results["steps_s"]) == ["imports", "peak", "setup", "size", "local", "fastpaths", "windows", "startup", "host",
                                        "agree", "dask", "baseline"]  # issue 39 item 4's order
    assert results["imports"]["prefect"] and results["imports"]["emodraw_cli.app"]
    assert results["first_result"]["rows"] == 1 and results["slice"]["rows"] == 300
    local, dask = results["local"], results["dask"]
    assert local["rows"] == dask["rows"] == results["sizing"]["rows"] == 1200  # rows in = rows out, both engines
    # Compared on the rows both labelled: the synthetic texts are random words, and a few are confidently
    # taken for another language (status `language`, by default) by both engines alike.
    assert dask["vs_local"]["agreement"] == 1.0 and dask["vs_local"]["max_abs_dprob"] == 0.0
    assert 1000 < dask["vs_local"]["rows"] <= 1200 and dask["vs_local"]["same_rows"]
    assert local["rss_quarter_mib"] > 0 and local["rss_end_mib"] > 0 and local["tokens"] > 1200
    assert results["baseline"]["rows"] >= 300 and results["baseline"]["vs_local"]["agreement"] >= 0.98
    for model in ("trained", "base-shape"):  # the CPU default is fp32: the same labels
        assert results["agree"]["models"][model]["default"]["agreement"] == 1.0
    fast = {f["name"]: f for f in results["fastpaths"]}
    assert fast["default"]["rows"] == fast["staged"]["rows"] == 300 and fast["staged"]["vs_default"]["agreement"] >= 0.98
    windows = results["windows"]["runs"]
    assert [w["window_rows"] for w in windows] == [300, 600] and all(w["rows"] == 1200 for w in windows)
    # Other windows, other batches: the same maths in another order (fp32 rounding only).
    assert windows[1]["vs_first"]["agreement"] == 1.0 and windows[1]["vs_first"]["max_abs_dprob"] <= SAME_MATHS_ATOL
    startup = results["startup"]
    assert startup["wall_s"] > 0 and startup["first_run_wall_s"] > 0 and not startup.get("failed")
    parts = startup["parts"]  # the configured test API: no temporary server to wait for; no CUDA on a CPU
    assert parts["model_load_s"] > 0 and parts["flow_body_s"] > 0 and parts["imports_s"] > 0
    assert parts["cuda_context_s"] is None and parts["prefect_server_waited_s"] is None
    host = results["host"]
    from emodraw_batch.inference.language_pool import auto_workers

    assert [r["language_workers"] for r in host["runs"]] == [0, auto_workers("cuda", os.cpu_count())]
    assert all(r["rows"] == 1200 for r in host["runs"]) and host["cores"] == os.cpu_count()
    checks = results["checks"]
    assert checks["dask engine labels = local engine labels (every row)"]["status"] == "pass"
    assert checks[f"host alone >= 100,000 rows/s on {os.cpu_count()} cores"]["status"] in ("pass", "fail")
    assert checks["one-row run <= 8 s"]["status"] in ("pass", "fail")
    assert "## Targets" in done.stdout and "## Start-up: a one-row run" in done.stdout and "## The host alone" in done.stdout


def test_sizing_rate_is_the_marginal_one_so_warm_up_does_not_shrink_the_corpus():
    gpu = load_gpu_bench()
    # The H200 run's shape: 16 s fixed (one row), a slice whose first window holds ~5 s of warm-up.
    # Its labelling rate (rows over shard seconds, warm-up included) understates the real one;
    # the difference of walls cancels what both runs pay.
    steady, warm_up, fixed, rows = 30_000.0, 5.0, 16.0, 150_000
    slice_wall = fixed + warm_up + rows / steady
    label_rate = rows / (warm_up + rows / steady)
    marginal = gpu.marginal_rate(rows, slice_wall, fixed, label_rate)
    assert marginal["rate"] == pytest.approx((rows - 1) / (warm_up + rows / steady))
    assert marginal["rate_from"] == "slice wall - one-row wall"
    # The one-row run also pays the warm-up, so the measured walls differ by labelling alone:
    one_row_wall = fixed + warm_up
    assert gpu.marginal_rate(rows, slice_wall, one_row_wall, label_rate)["rate"] == pytest.approx((rows - 1) / (rows / steady))
    # Walls that do not differ (a slice too small to measure) fall back to the slice's own rate.
    assert gpu.marginal_rate(rows, 10.0, 12.0, label_rate) == {"rate": label_rate, "rate_from": "slice labelling (walls too close)"}
