"""GPU benchmark of emodraw-batch (issue #11), one command on a bare CUDA machine.

    bash bench/gpu_wheels.sh            # once, on a machine with PyPI: the wheels the CUDA image lacks -> .whl/
    # on the GPU machine, from the repository root (see bench/GPU.md):
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site
    python3 bench/gpu.py --work /tmp/gpu --rows 1000000 --out $OUT                         # every stage
    python3 bench/gpu.py --work /tmp/gpu --rows 1000000 --out $OUT --stages label,agree    # or in two halves,
    python3 bench/gpu.py --work /tmp/gpu --rows 1000000 --out $OUT --stages baseline,run   # ~9 min each
    python3 bench/gpu.py --report A/gpu-results.json B/gpu-results.json --out DIR          # merge the halves

Stages (each process is measured from outside: wall time, peak RSS, GPU utilization and used
GPU memory sampled with nvidia-smi):

- setup: an ALBERT-base-v2-shaped checkpoint with random weights and a tokenizer trained on
  the sentences (built offline, cached in --work), and a corpus of --rows texts, tweets and
  --review-share multi-sentence reviews as in bench/bench.py (synthetic sentences: the shared
  Emotions data is not on a GPU machine). Also its first --subset-rows rows and a one-row corpus.
- tokenize: the package's tokenizer (EmotionClassifier.encode) alone, rows/s on all cores and on one.
- label: the labelling path through the package without Prefect (EmotionClassifier +
  runner.plan + runner.label_shard, Parquet in to Parquet out), one process per variant:
  fp32 (on the subset: the reference), bf16 autocast (today's GPU default), and each fast path
  of fast_paths.FAST_PATH_DEFAULTS stacked on top. Agreement and max |dp| against fp32 on the subset.
- baseline: transformers.pipeline(..., device=cuda, batch_size=64) in fp32 and with
  dtype=torch.bfloat16 over the subset's text column (bench/baseline.py).
- run: the full `emodraw-batch run` (Prefect) with --engine local and --engine dask (one
  worker per GPU via dask-cuda), labels compared row by row; time to first result (one-row
  corpus); peak RSS on a quarter of the corpus and on all of it (flat as the corpus grows).
- agree: the trained checkpoint data/albert-mini-emotion in fp32 vs bf16 autocast vs bf16
  weights over the corpus: label agreement and max |dp|.

Everything goes to OUT/gpu-results.json (rewritten after every measurement, so a run cut off
keeps what it measured) and OUT/gpu-results.md, which is also printed. --budget-seconds
skips what would not finish in time (listed under "skipped"); nothing is ever estimated
or invented: a number that was not measured is absent.

On a CPU (tests/test_gpu_paths.py): --device cpu --size tiny --rows 300 runs the same stages.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

STARTED = time.perf_counter()
HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(ROOT))

import bench as B  # noqa: E402  (bench/bench.py: corpus, checkpoint and process measurement)

TRAINED = ROOT / "data" / "albert-mini-emotion"
BASELINE = HERE / "baseline.py"
RESULTS = "gpu-results.json"
TABLE = "gpu-results.md"

# Dense bf16 tensor-core peak (TFLOP/s, no sparsity) by GPU name, most specific first.
PEAK_BF16_TFLOPS = (
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("GH200", 989.4),
    ("H200", 989.4),
    ("H100", 989.4),  # SXM ("NVIDIA H100 80GB HBM3")
    ("A100", 312.0),
    ("L40S", 362.1),
    ("L4", 121.0),
)

# The issue's targets on an H100; reported as pass / fail / not measured, never asserted.
TARGET_E2E_ROWS_S = 50_000
TARGET_X_BF16_PIPELINE = 20.0
TARGET_TRAINED_AGREEMENT = 0.995
RSS_FLAT_RATIO = 1.25  # peak RSS on the whole corpus vs a quarter of it

# The label stage's variants: each adds one fast path to the one before (see fast_paths.FAST_PATH_DEFAULTS).
# "subset": runs on the --subset-rows corpus only (fp32 is the slow reference).
STAGED = {"half_weights": True, "staging": True, "prepare_in_encode": True}
VARIANTS: dict[str, dict[str, Any]] = {
    "fp32": {"precision": "fp32", "fast": {}, "subset": True},
    "autocast": {"precision": "bf16", "fast": {}},
    "weights": {"precision": "bf16", "fast": {"half_weights": True}},
    "staged": {"precision": "bf16", "fast": STAGED},
    "overlap2": {"precision": "bf16", "fast": STAGED, "overlap": 2},
    "eager": {"precision": "bf16", "fast": {**STAGED, "attn_implementation": "eager"}},
    "buckets": {"precision": "bf16", "fast": {**STAGED, "pad_multiple": 16}},
    "compile": {"precision": "bf16", "fast": {**STAGED, "pad_multiple": 16, "compile": True}},
    "graphs": {"precision": "bf16", "fast": {**STAGED, "pad_multiple": 16, "compile": "reduce-overhead"}},
    "flex": {"precision": "bf16", "fast": {**STAGED, "attn_implementation": "flex_attention"}},
}
AGREE_VARIANTS: dict[str, dict[str, Any]] = {
    "fp32": {"precision": "fp32", "fast": {}},
    "autocast": {"precision": "bf16", "fast": {}},
    "weights": {"precision": "bf16", "fast": {"half_weights": True}},
    "staged": {"precision": "bf16", "fast": {**STAGED, "pad_multiple": 16}},
}


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


def peak_bf16_tflops(gpu_name: str | None) -> float | None:
    if not gpu_name:
        return None
    return next((peak for key, peak in PEAK_BF16_TFLOPS if key.lower() in gpu_name.lower()), None)


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
    return {k: v for k, v in out.items() if v is not None}


def checks(results: dict[str, Any]) -> dict[str, Any]:
    """The issue's targets, each pass / fail / not measured, from the measured numbers only."""

    def verdict(ok: bool | None, value: Any) -> dict[str, Any]:
        return {"status": "not measured" if ok is None else ("pass" if ok else "fail"), "value": value}

    runs = {r["name"]: r for r in results.get("run", []) if not r.get("failed")}
    local = runs.get("local")
    e2e = local.get("rows_per_s_e2e") if local else None
    bf16 = next((b for b in results.get("baseline", []) if b.get("dtype") == "bf16" and not b.get("failed")), None)
    base_rate = bf16.get("rows_per_s_e2e") if bf16 else None
    labels = [v for v in results.get("label", []) if not v.get("failed")]
    best_label = max((v.get("rows_per_s_label") or 0 for v in labels if v["name"] != "fp32"), default=None) or None
    trained = {a["name"]: a for a in results.get("agree", []) if not a.get("failed")}
    default_bf16 = trained.get("autocast", {}).get("vs_fp32", {}).get("agreement")
    dask = runs.get("dask", {}).get("vs_local", {})
    within = [v["activation_peak_mib"] <= v["budget_mib"] for v in labels if v.get("budget_mib") and "activation_peak_mib" in v]
    rss = results.get("rss", {})
    return {
        f"end to end (emodraw-batch run, local) >= {TARGET_E2E_ROWS_S:,} rows/s": verdict(
            None if e2e is None else e2e >= TARGET_E2E_ROWS_S, e2e),
        f"end to end >= {TARGET_X_BF16_PIPELINE:g}x the bf16 pipeline": verdict(
            None if e2e is None or not base_rate else e2e / base_rate >= TARGET_X_BF16_PIPELINE,
            e2e / base_rate if e2e and base_rate else None),
        "best labelling rate (label stage), rows/s": {"status": "measured" if best_label else "not measured", "value": best_label},
        f"trained checkpoint: bf16 autocast agrees with fp32 >= {TARGET_TRAINED_AGREEMENT:.1%}": verdict(
            None if default_bf16 is None else default_bf16 >= TARGET_TRAINED_AGREEMENT, default_bf16),
        "dask engine labels = local engine labels (100%)": verdict(
            None if dask.get("agreement") is None else dask["agreement"] == 1.0 and dask.get("rows") == local.get("rows"),
            dask.get("agreement")),
        "GPU activation memory within the computed budget": verdict(None if not within else all(within), within or None),
        f"host RSS flat as the corpus grows (x{RSS_FLAT_RATIO} at most)": verdict(
            None if not rss.get("ratio") else rss["ratio"] <= RSS_FLAT_RATIO, rss.get("ratio")),
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
    """Agreement of two labelled outputs on the rows (ids) both hold."""
    import numpy as np

    ids_a, probs_a = read_probs(a)
    ids_b, probs_b = read_probs(b)
    _, ia, ib = np.intersect1d(ids_a, ids_b, assume_unique=True, return_indices=True)
    return agreement(probs_a[ia], probs_b[ib]) if len(ia) else {"rows": 0, "agreement": None, "max_abs_dprob": None}


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
    """The results as Markdown tables (what the command prints)."""
    m = results.get("machine", {})
    c = results.get("corpus", {})
    lines = [
        f"# emodraw-batch GPU benchmark: {m.get('gpu') or m.get('device', '?')}",
        "",
        f"- machine: {m.get('gpu', '-')} ({fmt(m.get('peak_bf16_tflops'), ',.1f')} TFLOP/s bf16 peak), "
        f"{m.get('cores', '?')} CPU cores, torch {m.get('versions', {}).get('torch', '?')}, "
        f"transformers {m.get('versions', {}).get('transformers', '?')}",
        f"- corpus: {fmt(c.get('rows'))} rows ({c.get('source', '?')}, {fmt(c.get('review_share'), '.0%')} reviews), "
        f"mean {fmt(c.get('mean_tokens'), '.1f')} tokens, longest {fmt(c.get('longest'))}; subset {fmt(c.get('subset_rows'))} rows",
        f"- model: {results.get('model', {}).get('size', '?')} ALBERT, "
        f"{fmt((results.get('model', {}).get('flops_per_token') or 0) / 1e6, '.4g')} MFLOP/token at the mean length",
        "",
    ]
    tok = results.get("tokenizer")
    if tok:
        lines += [
            "## Tokenizer alone (EmotionClassifier.encode)",
            "",
            "| cores | rows | rows/s | tokens/s |",
            "|---:|---:|---:|---:|",
            *[f"| {t.get('threads', '-')} | {fmt(t.get('rows'))} | {fmt(t.get('rows_per_s'))} | {fmt(t.get('tokens_per_s'))} |"
              for t in tok if not t.get("failed")],
            "",
        ]
    if results.get("label"):
        lines += [
            "## Labelling path through the package (no Prefect), one process per variant",
            "",
            "| variant | fast paths | rows | rows/s labelling | rows/s process | tokens/s | TFLOP/s | % bf16 peak "
            "| GPU util % | peak GPU alloc MiB | activations / budget MiB | first window s | waiting for input s "
            "| = fp32 labels | max \\|Δp\\| |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for v in results["label"]:
            if v.get("failed"):
                lines.append(f"| {v['name']} | failed: {v.get('error', '')[:80]} |" + " |" * 13)
                continue
            vs = v.get("vs_fp32", {})
            settings = {**(v.get("fast_paths") or {}), **({"overlap": v["overlap"]} if v.get("overlap", 1) != 1 else {})}
            lines.append(
                f"| {v['name']} | {v.get('precision')} {json.dumps(settings)} | {fmt(v.get('rows'))} "
                f"| {fmt(v.get('rows_per_s_label'))} | {fmt(v.get('rows_per_s_e2e'))} | {fmt(v.get('tokens_per_s'))} "
                f"| {fmt(v.get('tflops'), ',.1f')} | {fmt(v.get('peak_share'), '.1%')} | {fmt(v.get('gpu_util'), '.0f')} "
                f"| {fmt(v.get('peak_alloc_mib'))} | {fmt(v.get('activation_peak_mib'))} / {fmt(v.get('budget_mib'))} "
                f"| {fmt(v.get('first_window_s'), '.2f')} | {fmt(v.get('input_wait_s'), '.2f')} "
                f"| {fmt(vs.get('agreement'), '.3%')} | {fmt(vs.get('max_abs_dprob'), '.1e')} |"
            )
        lines.append("")
    if results.get("baseline"):
        lines += [
            "## Baseline: transformers.pipeline, same GPU, same text column",
            "",
            "| dtype | batch | rows | rows/s end to end | rows/s labelling | peak GPU alloc MiB | GPU util % | = emodraw fp32 labels |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
            *[
                f"| {b.get('dtype')} | {b.get('batch_size')} | {fmt(b.get('rows'))} | {fmt(b.get('rows_per_s_e2e'))} "
                f"| {fmt(b.get('rows_per_s_label'))} | {fmt(b.get('peak_gpu_mib'))} | {fmt(b.get('gpu_util'), '.0f')} "
                f"| {fmt(b.get('vs_fp32', {}).get('agreement'), '.3%')} |"
                for b in results["baseline"] if not b.get("failed")
            ],
            "",
        ]
    if results.get("run"):
        lines += [
            "## emodraw-batch run (Prefect), Parquet in to Parquet out",
            "",
            "| engine | rows | rows/s end to end | × bf16 pipeline | rows/s labelling | tokens/s | % bf16 peak "
            "| first result s | peak RSS MiB | peak GPU used MiB | GPU util % | = local labels |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        bf16 = next((b for b in results.get("baseline", []) if b.get("dtype") == "bf16" and b.get("rows_per_s_e2e")), None)
        for r in results["run"]:
            if r.get("failed"):
                lines.append(f"| {r['name']} | failed: {r.get('error', '')[:80]} |" + " |" * 10)
                continue
            times = r["rows_per_s_e2e"] / bf16["rows_per_s_e2e"] if bf16 and r.get("rows_per_s_e2e") else None
            vs = r.get("vs_local", {})
            lines.append(
                f"| {r['name']} | {fmt(r.get('rows'))} | {fmt(r.get('rows_per_s_e2e'))} | {fmt(times, '.1f')} "
                f"| {fmt(r.get('rows_per_s_label'))} | {fmt(r.get('tokens_per_s'))} | {fmt(r.get('peak_share'), '.1%')} "
                f"| {fmt(r.get('first_result_s'), '.1f')} | {fmt(r.get('peak_rss_mib'))} | {fmt(r.get('gpu_mem_peak_mib'))} "
                f"| {fmt(r.get('gpu_util'), '.0f')} | {fmt(vs.get('agreement'), '.3%') if vs else '-'} |"
            )
        rss = results.get("rss")
        if rss:
            lines += ["", f"Peak RSS, emodraw-batch run --engine local: {fmt(rss.get('quarter_rows'))} rows "
                          f"{fmt(rss.get('quarter_mib'))} MiB, {fmt(rss.get('full_rows'))} rows {fmt(rss.get('full_mib'))} MiB "
                          f"(x{fmt(rss.get('ratio'), '.2f')})"]
        lines.append("")
    if results.get("agree"):
        lines += [
            "## Trained checkpoint (data/albert-mini-emotion): precision vs fp32 on the same device",
            "",
            "| variant | fast paths | rows | = fp32 labels | max \\|Δp\\| | rows/s labelling |",
            "|---|---|---:|---:|---:|---:|",
            *[
                f"| {a['name']} | {a.get('precision')} {json.dumps(a.get('fast_paths') or {})} | {fmt(a.get('rows'))} "
                f"| {fmt(a.get('vs_fp32', {}).get('agreement'), '.3%')} | {fmt(a.get('vs_fp32', {}).get('max_abs_dprob'), '.1e')} "
                f"| {fmt(a.get('rows_per_s_label'))} |"
                for a in results["agree"] if not a.get("failed")
            ],
            "",
        ]
    verdicts = checks(results)
    lines += ["## The issue's targets", "", "| target | status | value |", "|---|---|---:|"]
    for name, v in verdicts.items():
        value = v["value"]
        shown = fmt(value, ",.4g") if isinstance(value, float) else ("-" if value is None else str(value))
        lines.append(f"| {name} | {v['status']} | {shown} |")
    if results.get("skipped"):
        lines += ["", "Skipped (time budget or missing packages): " + "; ".join(results["skipped"])]
    return "\n".join(lines) + "\n"


# -- the driver ---------------------------------------------------------------------------------


class Budget:
    """Seconds left of --budget-seconds; what would not finish is skipped, and recorded as such."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def left(self) -> float:
        return self.seconds - (time.perf_counter() - STARTED)

    def allows(self, estimate: float) -> bool:
        return self.left() > estimate


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.cuda = args.device.startswith("cuda")
        self.work: Path = args.work
        self.out: Path = args.out
        self.budget = Budget(args.budget_seconds)
        self.results: dict[str, Any] = {"command": " ".join(["bench/gpu.py", *sys.argv[1:]]), "skipped": []}
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
        if args.threads:
            self.env.update(OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
        self.rate: float | None = None  # last measured labelling rate, for the time estimates

    # - bookkeeping -

    def save(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / RESULTS).write_text(json.dumps(self.results, indent=2, default=str) + "\n")
        (self.out / TABLE).write_text(markdown(self.results))

    def skip(self, what: str, why: str) -> None:
        self.results["skipped"].append(f"{what} ({why})")
        print(f"  skipped {what}: {why}", flush=True)
        self.save()

    def worker(self, spec: dict[str, Any], extra_env: dict[str, str] | None = None) -> dict[str, Any]:
        """Run one measured worker process (this file, --worker); its last stdout line is its JSON.

        --in-process (tests) calls the worker function here instead: the same code and numbers,
        without the per-process start-up, RSS, GPU sampling or environment of its own.
        """
        if self.args.in_process:
            try:
                started = time.perf_counter()
                result = run_worker(spec, started)
                return {**result, "wall_s": time.perf_counter() - started}
            except Exception as exc:  # noqa: BLE001 - recorded like a failed process
                return {"failed": True, "error": f"{type(exc).__name__}: {exc}"}
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)]
        return self.process(cmd, extra_env)

    def process(self, cmd: list[str], extra_env: dict[str, str] | None = None) -> dict[str, Any]:
        timeout = max(self.budget.left() - 10, 5)
        result = B.measure(cmd, {**self.env, **(extra_env or {})}, gpu=self.cuda, timeout=timeout)
        if result.get("failed") is not None or not result["stdout"].strip():
            stderr = result.get("stderr", "")
            why = "timed out" if result["wall_s"] >= timeout else (stderr.strip().splitlines() or ["no output"])[-1]
            return {"failed": True, "error": why, "stderr": stderr[-3000:], "wall_s": result["wall_s"]}
        out = B.last_json(result["stdout"])
        out.update({k: v for k, v in result.items() if k not in ("stdout",) and v is not None})
        return out

    # - stages -

    def setup(self) -> None:
        """Checkpoint, corpus, subset and one-row corpora (cached in --work between commands)."""
        from transformers import AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        a = self.args
        self.work.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        pool, source = B.sentences(a.corpus, a.data, a.seed)
        self.model = a.model or B.checkpoint(self.work, a.size, pool, source)
        tag = f"{a.rows}-{a.size}-{a.corpus}-{a.review_share}"
        self.corpus = self.work / f"corpus-{tag}.parquet"
        self.subset = self.work / f"corpus-{tag}-first{a.subset_rows}.parquet"
        self.one_row = self.work / f"corpus-{tag}-1.parquet"
        self.quarter = self.work / f"corpus-{tag}-quarter.parquet"
        meta_file = self.work / f"corpus-{tag}.json"
        self.outdir = self.work / f"out-{tag}"
        if not (self.corpus.is_file() and meta_file.is_file()):
            import numpy as np
            import pyarrow.parquet as pq

            tokenizer = AutoTokenizer.from_pretrained(self.model)
            texts = B.make_texts(pool, a.rows, tokenizer, a.review_share, a.max_length, a.seed)
            B.write_corpus(self.corpus, texts)
            B.write_corpus(self.subset, texts[: a.subset_rows])
            B.write_corpus(self.one_row, texts[:1])
            B.write_corpus(self.quarter, texts[: max(a.rows // 4, 1)])
            lengths = np.array([len(e.ids) for e in tokenizer.backend_tokenizer.encode_batch(texts)])
            meta = {"rows": a.rows, "source": source, "review_share": a.review_share, "mean_tokens": float(lengths.mean()),
                    "longest": int(lengths.max()), "subset_rows": pq.read_metadata(self.subset).num_rows,
                    "quarter_rows": pq.read_metadata(self.quarter).num_rows, "path": str(self.corpus)}
            meta_file.write_text(json.dumps(meta))
        meta = json.loads(meta_file.read_text())
        config = json.loads((Path(self.model) / "config.json").read_text())
        flops = flops_per_token(config, meta["mean_tokens"])
        self.results["corpus"] = meta
        self.results["model"] = {"path": str(self.model), "size": a.size, "flops_per_token": flops,
                                 "flops_per_token_at_32": flops_per_token(config, 32.0),
                                 "config": {k: config.get(k) for k in ("hidden_size", "intermediate_size", "num_hidden_layers",
                                                                       "num_attention_heads", "embedding_size", "vocab_size")}}
        self.results["setup_s"] = time.perf_counter() - started
        self.results["machine"] = machine(a.device)
        self.flops = flops
        self.peak = a.peak_tflops or self.results["machine"].get("peak_bf16_tflops")
        print(f"corpus: {meta['rows']:,} rows ({meta['source']}), mean {meta['mean_tokens']:.1f} tokens, "
              f"longest {meta['longest']}; model {self.model}; setup {self.results['setup_s']:.0f}s", flush=True)
        self.save()

    def spec(self, name: str, variant: dict[str, Any], model: Path | str, corpus: Path, out: Path) -> dict[str, Any]:
        a = self.args
        return {
            "mode": "label", "name": name, "model": str(model), "corpus": str(corpus), "out": str(out),
            "device": a.device, "precision": variant["precision"], "fast": variant.get("fast", {}),
            "overlap": variant.get("overlap", a.overlap), "window_rows": variant.get("window_rows", a.window_rows),
            "shard_rows": a.shard_rows, "batch_tokens": a.batch_tokens, "max_length": a.max_length,
        }

    def estimate(self, rows: int, fp32: bool = False) -> float:
        """Seconds a labelling process of `rows` rows should take, from the last measured rate."""
        start = 15.0 if self.cuda else 5.0  # imports, model load
        if self.rate is None:
            return start
        return start + rows / (self.rate / (4.0 if fp32 else 1.0))

    def finish_label(self, name: str, r: dict[str, Any], out: Path) -> dict[str, Any]:
        r["name"] = name
        if not r.get("failed"):
            r.update(derive(r, self.flops, self.peak))
            self.rate = r.get("rows_per_s_label") or self.rate
        return r

    def tokenize(self) -> None:
        a = self.args
        rows = self.results["corpus"]["rows"]
        out = []
        runs = ((None, self.corpus, rows), (1, self.subset, self.results["corpus"]["subset_rows"]))
        for threads, corpus, n in runs[:1] if a.in_process else runs:  # a thread pool's size is fixed per process
            label = f"tokenizer ({'all cores' if threads is None else f'{threads} thread'})"
            if not self.budget.allows(20):
                self.skip(label, "time budget")
                continue
            env = {"RAYON_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false"} if threads else {"TOKENIZERS_PARALLELISM": "true"}
            r = self.worker({"mode": "tokenize", "model": str(self.model), "corpus": str(corpus), "max_length": a.max_length}, env)
            r["threads"] = threads or os.cpu_count()
            out.append(r)
            print(f"  {label}: {fmt(r.get('rows_per_s'))} rows/s" if not r.get("failed") else f"  {label}: failed {r['error']}", flush=True)
            self.results["tokenizer"] = out
            self.save()

    def label(self) -> None:
        a = self.args
        rows, sub = self.results["corpus"]["rows"], self.results["corpus"]["subset_rows"]
        names = [n for n in a.variants.split(",") if n]
        unknown = [n for n in names if n not in VARIANTS]
        if unknown:
            sys.exit(f"unknown --variants {unknown}; known: {', '.join(VARIANTS)}")
        self.results["label"] = done = []
        # fp32 from an earlier command on this corpus (the label stage split across commands) still counts.
        fp32_out = self.outdir / "label-fp32" if (self.outdir / "label-fp32" / "labels").is_dir() else None
        for name in names:
            variant = VARIANTS[name]
            on_subset = variant.get("subset", False)
            corpus, n = (self.subset, sub) if on_subset else (self.corpus, rows)
            if not self.budget.allows(self.estimate(n, fp32=variant["precision"] == "fp32")):
                self.skip(f"label {name}", "time budget")
                continue
            out = self.outdir / f"label-{name}"
            r = self.finish_label(name, self.worker(self.spec(name, variant, self.model, corpus, out)), out)
            if not r.get("failed"):
                if name == "fp32":
                    fp32_out = out
                elif fp32_out is not None:
                    r["vs_fp32"] = compare_outputs(fp32_out, out)
                if not a.keep_outputs and name != "fp32":
                    shutil.rmtree(out, ignore_errors=True)
            done.append(r)
            print(f"  label {name}: " + (f"{fmt(r.get('rows_per_s_label'))} rows/s labelling, {fmt(r.get('peak_share'), '.1%')} of bf16 peak"
                                         if not r.get("failed") else f"failed: {r['error']}"), flush=True)
            self.save()

    def baseline(self) -> None:
        a = self.args
        sub = self.results["corpus"]["subset_rows"]
        fp32_out = self.outdir / "label-fp32"
        self.results["baseline"] = done = []
        for dtype in a.baseline_dtypes.split(","):
            if not self.budget.allows(30 + sub / 1000):
                self.skip(f"baseline {dtype}", "time budget")
                continue
            out = self.outdir / f"baseline-{dtype}.parquet"
            device = "cuda:0" if self.cuda else a.device
            cmd = [sys.executable, str(BASELINE), str(self.subset), str(out), "--model", str(self.model), "--device", device,
                   "--batch-size", str(a.baseline_batch), "--dtype", dtype]
            if a.threads:
                cmd += ["--threads", str(a.threads)]
            r = self.process(cmd)
            r["name"] = f"pipeline {dtype}"
            if not r.get("failed"):
                r.update(derive(r, self.flops, self.peak))
                if (fp32_out / "labels").is_dir():
                    r["vs_fp32"] = compare_outputs(fp32_out, out)
            done.append(r)
            print(f"  baseline pipeline {dtype}: " + (f"{fmt(r.get('rows_per_s_e2e'))} rows/s end to end"
                                                     if not r.get("failed") else f"failed: {r['error']}"), flush=True)
            self.save()

    def cli(self, name: str, corpus: Path, engine: str) -> dict[str, Any]:
        a = self.args
        out = self.outdir / f"run-{name}"
        shutil.rmtree(out, ignore_errors=True)
        cmd = [*cli_cmd(), "run", str(corpus), "--output", str(out), "--model", str(self.model),
               "--device", "cuda" if self.cuda else a.device, "--engine", engine, "--json", "--no-progress"]
        if engine == "dask" and not self.cuda:
            cmd += ["--workers", "1"]
        if a.batch_tokens:
            cmd += ["--batch-tokens", str(a.batch_tokens)]
        env = {"EMODRAW_FAST_PATHS": a.run_fast} if a.run_fast else {}
        r = self.process(cmd, env)
        r["name"], r["engine"], r["out"] = name, engine, str(out)
        if r.get("failed"):
            return r
        manifest = json.loads((out / "manifest.json").read_text())
        r["label_s"] = max((o["seconds"] for o in manifest["outputs"]), default=0.0) if engine == "dask" else \
            sum(o["seconds"] for o in manifest["outputs"])
        r["rows"], r["tokens"] = output_rows_tokens(out)
        r["model"] = manifest.get("model")
        r["fast_paths_env"] = a.run_fast or None
        r.update(derive(r, self.flops, self.peak))
        return r

    def run(self) -> None:
        a = self.args
        rows = self.results["corpus"]["rows"]
        self.results["run"] = done = []
        local_out = None
        for engine in a.engines.split(","):
            if engine == "dask" and self.cuda and not has("dask_cuda"):
                self.skip("run --engine dask", "dask_cuda is not importable (carry the wheels: bench/gpu_wheels.sh)")
                continue
            if not self.budget.allows(self.estimate(rows) + 30):
                self.skip(f"run --engine {engine}", "time budget")
                continue
            r = self.cli(engine, self.corpus, engine)
            if not r.get("failed"):
                if engine == "local":
                    local_out = Path(r["out"])
                elif local_out is not None:
                    r["vs_local"] = compare_outputs(local_out, Path(r["out"]))
                if a.first_result and self.budget.allows(60):
                    one = self.cli(f"{engine}-1row", self.one_row, engine)
                    r["first_result_s"] = one.get("wall_s") if not one.get("failed") else None
            done.append(r)
            print(f"  run --engine {engine}: " + (f"{fmt(r.get('rows_per_s_e2e'))} rows/s end to end"
                                                 if not r.get("failed") else f"failed: {r['error']}"), flush=True)
            self.save()
        full = next((r for r in done if r["name"] == "local" and not r.get("failed")), None)
        if full and a.rss_check:
            if self.budget.allows(self.estimate(rows // 4) + 30):
                quarter = self.cli("local-quarter", self.quarter, "local")
                if not quarter.get("failed"):
                    self.results["rss"] = {"quarter_rows": quarter["rows"], "quarter_mib": quarter["peak_rss_mib"],
                                           "full_rows": full["rows"], "full_mib": full["peak_rss_mib"],
                                           "ratio": full["peak_rss_mib"] / quarter["peak_rss_mib"]}
            else:
                self.skip("RSS check (run on a quarter of the corpus)", "time budget")
        if not a.keep_outputs:
            for r in done:
                shutil.rmtree(r.get("out", ""), ignore_errors=True) if r.get("out") else None
        self.save()

    def agree(self) -> None:
        a = self.args
        model = a.trained
        if not (Path(model) / "config.json").is_file():
            self.skip("agree", f"no trained checkpoint at {model}")
            return
        corpus, n = (self.corpus, self.results["corpus"]["rows"]) if a.agree_corpus == "full" else \
            (self.subset, self.results["corpus"]["subset_rows"])
        self.results["agree"] = done = []
        fp32_out = None
        for name in [n_ for n_ in a.agree_variants.split(",") if n_]:
            if not self.budget.allows(20 + n / 20_000):
                self.skip(f"agree {name}", "time budget")
                continue
            out = self.outdir / f"agree-{name}"
            r = self.worker(self.spec(name, AGREE_VARIANTS[name], model, corpus, out))
            r["name"] = name
            if not r.get("failed"):
                r.update(derive(r, None, None))
                if name == "fp32":
                    fp32_out = out
                elif fp32_out is not None:
                    r["vs_fp32"] = compare_outputs(fp32_out, out)
            done.append(r)
            vs = r.get("vs_fp32", {})
            print(f"  agree {name}: " + (f"= fp32 {fmt(vs.get('agreement'), '.3%')}, max |dp| {fmt(vs.get('max_abs_dprob'), '.1e')}"
                                         if not r.get("failed") else f"failed: {r['error']}"), flush=True)
            self.save()


def cli_cmd() -> list[str]:
    """`emodraw-batch` of this checkout (not a console script installed from another one)."""
    module = "emodraw_cli.app" if (ROOT / "emodraw_cli" / "app.py").is_file() else "emodraw_batch.cli"
    return [sys.executable, "-m", module]


def has(module: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


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
            info.update(gpu=name, gpu_memory_mib=float(memory), driver=driver, peak_bf16_tflops=peak_bf16_tflops(name))
        except (OSError, ValueError):
            info["gpu"] = "unknown (nvidia-smi failed)"
    return info


# -- worker processes ---------------------------------------------------------------------------


def run_worker(spec: dict[str, Any], t0: float = STARTED) -> dict[str, Any]:
    return worker_tokenize(spec) if spec["mode"] == "tokenize" else worker_label(spec, t0)


def worker_tokenize(spec: dict[str, Any]) -> dict[str, Any]:
    import pyarrow.parquet as pq

    from emodraw_batch.model import EmotionClassifier

    texts = pq.read_table(spec["corpus"], columns=["text"])["text"].to_pylist()
    clf = EmotionClassifier(spec["model"], device="cpu", precision="fp32", max_length=spec["max_length"])
    clf.encode(texts[:1000])  # warm-up: the Rust thread pool starts
    started = time.perf_counter()
    ids, _ = clf.encode(texts)
    seconds = time.perf_counter() - started
    tokens = sum(map(len, ids))
    return {"rows": len(texts), "tokens": tokens, "seconds": seconds, "rows_per_s": len(texts) / seconds,
            "tokens_per_s": tokens / seconds}


def worker_label(spec: dict[str, Any], t0: float = STARTED) -> dict[str, Any]:
    """One labelling process: the package path (no Prefect), instrumented from outside the package.

    t0: when the process started (first_window_s and import_s count from it).
    """
    import torch

    from emodraw_batch import device as D
    from emodraw_batch import model as M
    from emodraw_batch import runner
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
    stats = {"padded_tokens": 0, "batches": 0, "forward_s": 0.0, "input_wait_s": 0.0, "write_wait_s": 0.0}
    first: list[float] = []

    inner_probs = clf._forward_probs

    def counting(input_ids: Any, mask: Any) -> Any:
        stats["padded_tokens"] += int(input_ids.numel())
        stats["batches"] += 1
        return inner_probs(input_ids, mask)

    inner_forward = clf.forward

    def timed_forward(ids: Any) -> Any:
        t = time.perf_counter()
        try:
            return inner_forward(ids)
        finally:
            stats["forward_s"] += time.perf_counter() - t

    clf._forward_probs, clf.forward = counting, timed_forward
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
    staging = getattr(clf, "_staging", None)
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


def merge(files: list[Path]) -> dict[str, Any]:
    """Merge the result files of several commands (later files win per section; lists are joined)."""
    merged: dict[str, Any] = {"skipped": []}
    for f in files:
        part = json.loads(f.read_text())
        for key, value in part.items():
            if isinstance(value, list) and isinstance(merged.get(key), list):
                seen = {item.get("name") for item in value if isinstance(item, dict)}
                merged[key] = [i for i in merged[key] if not (isinstance(i, dict) and i.get("name") in seen)] + value
            else:
                merged[key] = value
    return merged


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="GPU benchmark of emodraw-batch (issue #11).")
    parser.add_argument("--work", type=Path, default=Path("/tmp/emodraw-gpu"), help="Cache (checkpoint, corpus) and outputs.")
    parser.add_argument("--out", type=Path, default=None, help="Where gpu-results.json and .md go (default: --work).")
    parser.add_argument("--rows", type=int, default=1_000_000, help="Corpus rows (default: 1,000,000).")
    parser.add_argument("--subset-rows", type=int, default=100_000, help="First rows used for fp32 and the pipeline baselines.")
    parser.add_argument("--size", choices=("tiny", "small", "base"), default="base", help="ALBERT size built (default: base).")
    parser.add_argument("--model", type=Path, help="Benchmark this checkpoint folder instead of building one.")
    parser.add_argument("--trained", type=Path, default=TRAINED, help="Trained checkpoint of the agree stage.")
    parser.add_argument("--device", default="cuda", help="cuda (default) | cpu (a rehearsal, tests).")
    parser.add_argument("--stages", default="setup,tokenize,label,agree,baseline,run",
                        help="Comma-separated; setup always runs (cached). Default: all.")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"Label-stage variants (default: all: {', '.join(VARIANTS)}).")
    parser.add_argument("--agree-variants", default=",".join(AGREE_VARIANTS), help="Agree-stage variants.")
    parser.add_argument("--agree-corpus", choices=("full", "subset"), default="full")
    parser.add_argument("--engines", default="local,dask", help="Engines of the run stage (default: local,dask).")
    parser.add_argument("--run-fast", default="", help="EMODRAW_FAST_PATHS for the run stage (default: the module defaults).")
    parser.add_argument("--baseline-dtypes", default="fp32,bf16")
    parser.add_argument("--baseline-batch", type=int, default=64)
    parser.add_argument("--first-result", action=argparse.BooleanOptionalAction, default=True, help="Time a one-row run per engine.")
    parser.add_argument("--rss-check", action=argparse.BooleanOptionalAction, default=True, help="Also run on a quarter of the corpus.")
    parser.add_argument("--keep-outputs", action="store_true", help="Keep every labelled output under --work/out.")
    parser.add_argument("--corpus", choices=("auto", "shared", "synthetic"), default="synthetic")
    parser.add_argument("--data", type=Path, default=B.SHARED)
    parser.add_argument("--review-share", type=float, default=0.2)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--window-rows", type=int, default=50_000)
    parser.add_argument("--shard-rows", type=int, default=1_000_000)
    parser.add_argument("--batch-tokens", type=int, default=None, help="Default: sized by the package from free GPU memory.")
    parser.add_argument("--overlap", type=int, default=1, help="runner.OVERLAP_WINDOWS of the label stage (default: 1, as shipped).")
    parser.add_argument("--threads", type=int, default=None, help="OMP/MKL threads of the measured processes.")
    parser.add_argument("--peak-tflops", type=float, default=None, help="bf16 peak, if the GPU's name is not in the table.")
    parser.add_argument("--budget-seconds", type=float, default=540.0, help="Skip what would not finish in this time (default: 540).")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--report", type=Path, nargs="+", help="Merge these result files into --out and print the table.")
    parser.add_argument("--in-process", action="store_true", help="Run the tokenize/label/agree measurements in this process (tests).")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.out = args.out or args.work
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    if args.worker:
        print(json.dumps(run_worker(json.loads(args.worker)), default=str))
        return
    if args.report:
        merged = merge(args.report)
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / RESULTS).write_text(json.dumps(merged, indent=2, default=str) + "\n")
        (args.out / TABLE).write_text(markdown(merged))
        print(markdown(merged))
        return
    stages = [s for s in args.stages.split(",") if s]
    known = ("setup", "tokenize", "label", "agree", "baseline", "run")
    if any(s not in known for s in stages):
        sys.exit(f"unknown --stages {stages}; known: {', '.join(known)}")
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            sys.exit(f"--device {args.device}: torch {torch.__version__} sees no CUDA GPU (use --device cpu for a rehearsal).")
    missing = [m for m in ("pydantic",) + (("prefect", "polars", "dask", "distributed", "prefect_dask") if "run" in stages else ())
               if not has(m)]
    if missing:
        sys.exit(f"missing Python packages {missing}: carry the wheels (bash bench/gpu_wheels.sh, see bench/GPU.md).")
    bench = Bench(args)
    bench.setup()
    for stage in ("tokenize", "label", "agree", "baseline", "run"):
        if stage in stages:
            print(f"{stage} ({bench.budget.left():.0f}s of budget left)", flush=True)
            getattr(bench, stage)()
    bench.results["checks"] = checks(bench.results)
    bench.results["total_s"] = time.perf_counter() - STARTED
    bench.save()
    print()
    print(markdown(bench.results))
    print(f"all numbers: {args.out / RESULTS}")


if __name__ == "__main__":
    main()
