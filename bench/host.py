"""Host-only rate (issue 39 item 2): the real labelling pipeline with a forward pass that returns at once.

    python bench/host.py CORPUS --model MODEL [--cores 1,2,4,...] [--language-workers auto|N,M,...] [--window-rows 50000]

For each core count, a fresh process pinned to that many cores (sched_setaffinity; torch, OpenMP and
the Rust tokenizer get as many threads) runs `runner.label_shard` over every shard of CORPUS with
the model's own tokenizer, language detection, dedup, writer and Parquet output, but a stand-in
backend whose probabilities are uniform and ready immediately. What it reports is the rate the host
can feed a GPU: rows/s end to end, and each stage's busy seconds and rows/s if it ran alone (clean,
detect languages, dedup plan, tokenize, model wait, build the output table); reading and the Parquet
write are the rest. Which stages share a thread: clean + detect (one thread), dedup + tokenize (another),
the model loop, the writer (job/runner.py `label_windows`). With language workers, detection's fastText
calls run in that many processes (inference/language_pool.py), pinned to the same cores; `detect`
is then the time the thread waits for them. `--language-workers auto` is what a run on a GPU with
that many cores starts (`language_pool.auto_workers`); a list runs each count at each core count.
CPU seconds per 1,000 rows count this process and its workers. The GPU machine has 16
cores; the issue asks for >= 2x the GPU's steady rate there (>= 100,000 rows/s).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np


class InstantForward:
    """A backend that returns uniform probabilities at once: the host's stages alone remain."""

    def __init__(self, labels: int) -> None:
        self.labels = labels

    def run(self, input_ids: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        return np.full((len(lengths), self.labels), 1.0 / self.labels, dtype=np.float32)

    def pending(self, rows: int, order: np.ndarray, outputs: list[np.ndarray]) -> Any:
        from emodraw_batch.inference.backends import Pending

        return Pending(rows, order, np.concatenate(outputs) if outputs else np.zeros((0, self.labels), np.float32))


def timed(stats: dict[str, float], key: str, fn: Any) -> Any:
    def call(*args: Any, **kwargs: Any) -> Any:
        t = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            stats[key] += time.perf_counter() - t

    return call


def worker(spec: dict[str, Any]) -> dict[str, Any]:
    """One pinned process: label the corpus with the stand-in forward, time each stage."""
    os.sched_setaffinity(0, set(range(spec["cores"])))
    from emodraw_batch.config import RunConfig
    from emodraw_batch.inference.classifier import EmotionClassifier
    from emodraw_batch.job import runner

    clf = EmotionClassifier(spec["model"], device="cpu", precision="fp32", runtime="torch",
                            batch_tokens=spec["batch_tokens"])
    clf.backend = InstantForward(len(clf.labels))
    from emodraw_batch.job import dedup, windows

    stats = dict.fromkeys(("clean_s", "detect_s", "dedup_s", "tokenize_s", "model_s", "label_table_s"), 0.0)
    # Each stage where the pipeline calls it (module attributes, looked up at each call).
    windows.prepare = timed(stats, "clean_s", windows.prepare)
    windows.language.detect_rows = timed(stats, "detect_s", windows.language.detect_rows)
    dedup.Repeats.plan = timed(stats, "dedup_s", dedup.Repeats.plan)
    clf.encode = timed(stats, "tokenize_s", clf.encode)
    runner.label_table = timed(stats, "label_table_s", runner.label_table)
    clf.submit, clf.collect = timed(stats, "model_s", clf.submit), timed(stats, "model_s", clf.collect)
    config = RunConfig(model=spec["model"], device="cpu", precision="fp32", runtime="torch",
                       window_rows=spec["window_rows"], shard_rows=spec["shard_rows"], languages=spec["languages"],
                       batch_tokens=clf.batch_tokens, language_workers=spec["language_workers"])
    out = tempfile.mkdtemp(prefix="emodraw-host-")
    job = runner.plan(runner.validate([spec["corpus"]], out, config, overwrite=True))
    shards, rows_planned = [], 0
    for shard in job.todo:  # --max-rows: the first shards only
        if spec.get("max_rows") and rows_planned >= spec["max_rows"]:
            break
        shards.append(shard)
        rows_planned += shard.rows
    from emodraw_batch.inference import language_pool

    cpu = time.process_time()
    started = time.perf_counter()
    rows = sum(runner.label_shard(shard, config, out, None, clf).rows for shard in shards)
    wall = time.perf_counter() - started
    cpu = time.process_time() - cpu
    detected = sum(p.texts for p in language_pool._pools.values())
    language_pool.close_all()  # the workers end: their CPU time is in RUSAGE_CHILDREN now
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    workers_cpu = children.ru_utime + children.ru_stime
    stages = {k[:-2]: {"busy_s": round(v, 2), "rows_per_s_alone": round(rows / v) if v else None}
              for k, v in stats.items()}
    shutil.rmtree(out, ignore_errors=True)
    return {"cores": spec["cores"], "language_workers": spec["language_workers"], "rows": rows, "wall_s": round(wall, 2),
            "rows_per_s": round(rows / wall), "stages": stages, "texts_detected_by_workers": detected,
            "cpu_s_per_1000_rows": round(1000 * (cpu + workers_cpu) / rows, 3),
            "workers_cpu_s": round(workers_cpu, 2)}


def measure(corpus: str, model: str, cores: int, workers: int | None = None, window_rows: int = 50_000,
            shard_rows: int = 1_000_000, batch_tokens: int = 262_144, languages: str = "en", max_rows: int = 0,
            timeout: float | None = None, env: dict[str, str] | None = None) -> dict[str, Any]:
    """One pinned run in a fresh process (see the module's doc); `workers` None: what a GPU run with
    `cores` cores starts; `env` (default: this process's) must let it import the project.
    Raises RuntimeError with the worker's stderr if it fails."""
    from emodraw_batch.inference.language_pool import auto_workers

    workers = auto_workers("cuda", cores) if workers is None else workers
    spec = {"corpus": corpus, "model": model, "cores": cores, "window_rows": window_rows, "shard_rows": shard_rows,
            "batch_tokens": batch_tokens, "languages": languages, "language_workers": workers, "max_rows": max_rows}
    threads = {k: str(cores) for k in ("OMP_NUM_THREADS", "RAYON_NUM_THREADS", "MKL_NUM_THREADS")}
    try:
        done = subprocess.run([sys.executable, __file__, corpus, "--model", model, "--worker", json.dumps(spec)],
                              env={**(env or os.environ), **threads, "TOKENIZERS_PARALLELISM": "true", "HF_HUB_OFFLINE": "1"},
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"host-only run on {cores} cores timed out after {timeout:.0f} s") from None
    if done.returncode != 0:
        raise RuntimeError(f"host-only run on {cores} cores failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def summary(r: dict[str, Any]) -> str:
    """One line of a result."""
    return (f"{r['cores']:>3} core(s), {r['language_workers']} language worker(s): {r['rows']:,} rows in {r['wall_s']} s = "
            f"{r['rows_per_s']:,} rows/s ({r['cpu_s_per_1000_rows']} CPU s per 1,000 rows); "
            + ", ".join(f"{k} {v['busy_s']} s ({v['rows_per_s_alone'] or 0:,}/s alone)" for k, v in r["stages"].items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("corpus")
    parser.add_argument("--model", required=True)
    parser.add_argument("--cores", default=",".join(str(c) for c in (1, 2, 4, 8, 16) if c <= os.cpu_count()))
    parser.add_argument("--window-rows", type=int, default=50_000)
    parser.add_argument("--shard-rows", type=int, default=1_000_000)
    parser.add_argument("--batch-tokens", type=int, default=262_144)  # the GPU's budget: few, large batches
    parser.add_argument("--languages", default="en")
    parser.add_argument("--language-workers", default="auto",
                        help="auto (what a GPU run with that many cores starts) or a comma-separated list of counts.")
    parser.add_argument("--max-rows", type=int, default=0, help="Label only the first shards, up to this many rows (0: all).")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    results = []
    for cores in [int(c) for c in args.cores.split(",") if c]:
        counts = [None] if args.language_workers == "auto" else [int(w) for w in args.language_workers.split(",")]
        for workers in counts:
            results.append(measure(args.corpus, args.model, cores, workers, args.window_rows, args.shard_rows,
                                   args.batch_tokens, args.languages, args.max_rows))
            print(summary(results[-1]), flush=True)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
