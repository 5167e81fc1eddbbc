"""Repeated texts labelled once: `emodraw-batch run` with dedup on and off, on corpora with 0%, 30%, 60% repeats.

    python bench/dedup.py                                   # the shipped offline model, 60,000 rows
    python bench/dedup.py --model base --rows 600           # ALBERT-base shape (random weights), fewer rows
    python bench/dedup.py --shares 0,0.6 --repeat 3

Every corpus has the same rows: distinct sentences of ../shared/data/emotion (train, val, test;
never copied into the project; shuffled), and for a share r of repeated rows, (1 - r) x rows
distinct texts plus r x rows copies drawn at random from them, shuffled (beyond the dataset's
~20,000 distinct sentences, distinct pairs of two sentences fill the pool). Its repeated rows are the
rows a dedup run serves from an earlier copy, so the ideal speed-up is 1 / (1 - r) (2.5x at 60%).
Each run is a fresh process (`--json --no-progress`); on and off alternate per corpus and round,
and the medians are reported: rows/s end to end (process start to exit, Prefect included) and
labelling (the shards' own seconds in the manifest: model loaded, windows streaming), the rows
served by a repeat, and the largest probability difference between the two outputs.
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench as b  # noqa: E402  (the corpus, checkpoint and process-measuring helpers of bench/bench.py)


def distinct_pool(data: Path, rows: int, seed: int) -> list[str]:
    """`rows` distinct texts: the dataset's distinct sentences, shuffled; two joined sentences beyond them."""
    pool, source = b.sentences("auto", data, seed)
    rng = random.Random(seed)
    texts = list(dict.fromkeys(pool))
    rng.shuffle(texts)
    seen = set(texts)
    while len(texts) < rows:  # more rows than distinct sentences: pairs, still distinct
        pair = f"{rng.choice(pool)} {rng.choice(pool)}"
        if pair not in seen:
            seen.add(pair)
            texts.append(pair)
    texts = texts[:rows]
    rng.shuffle(texts)  # every corpus's distinct texts (a prefix) are a sample of the same mix
    print(f"texts: {source}: {min(rows, len(set(pool))):,} distinct sentences, {max(0, rows - len(set(pool))):,} pairs", flush=True)
    return texts


def corpus(pool: list[str], share: float, seed: int) -> list[str]:
    """len(pool) rows of which `share` repeat an earlier distinct text."""
    rng = random.Random(seed)
    rows = len(pool)
    distinct = pool[: round(rows * (1 - share))]
    texts = distinct + [rng.choice(distinct) for _ in range(rows - len(distinct))]
    rng.shuffle(texts)
    return texts


def run(corpus_path: Path, out: Path, model: str, dedup: bool, env: dict[str, str]) -> dict[str, Any]:
    shutil.rmtree(out, ignore_errors=True)
    cmd = [*b.emodraw_cmd(), "run", str(corpus_path), "--output", str(out), "--model", model, "--device", "cpu",
           "--json", "--no-progress", "--dedup" if dedup else "--no-dedup"]
    result = b.measure(cmd, env)
    summary = b.last_json(result["stdout"])
    manifest = b.json.loads((out / "manifest.json").read_text())
    label_s = sum(o["seconds"] for o in manifest["outputs"])
    return {"wall_s": result["wall_s"], "label_s": label_s, "rows": summary["rows"], "repeats": summary["repeats"]}


def compare(a: Path, c: Path) -> tuple[float, float]:
    """Share of rows with the same label, and the largest probability difference, between two outputs."""
    import numpy as np
    import pyarrow.parquet as pq

    x = pq.read_table(sorted((a / "labels").glob("*.parquet")))
    y = pq.read_table(sorted((c / "labels").glob("*.parquet")))
    same = float(np.mean(np.asarray(x["emotion"].to_pylist()) == np.asarray(y["emotion"].to_pylist())))
    probs = [n for n in x.column_names if n.startswith("prob_")]
    return same, max(float(np.nanmax(np.abs(x[n].to_numpy() - y[n].to_numpy()))) for n in probs)


def main() -> None:
    parser = argparse.ArgumentParser(description="emodraw-batch run with dedup on and off, on corpora with repeats.")
    parser.add_argument("--rows", type=int, default=60_000, help="Rows per corpus (default: 60,000).")
    parser.add_argument("--shares", default="0,0.3,0.6", help="Shares of repeated rows (default: 0,0.3,0.6).")
    parser.add_argument("--model", default="offline", help="offline (the shipped model), base (ALBERT-base shape, random weights) or a checkpoint.")
    parser.add_argument("--repeat", type=int, default=1, help="Rounds; medians are reported (default: 1).")
    parser.add_argument("--data", type=Path, default=b.SHARED, help=f"Folder of the Emotions dataset (default: {b.SHARED}).")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "emodraw-bench-dedup")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    env = {**b.os.environ, "HF_HUB_OFFLINE": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"}
    pool = distinct_pool(args.data, args.rows, args.seed)
    model = str(b.checkpoint(work, "base", *b.sentences("auto", args.data, args.seed))) if args.model == "base" else args.model
    shares = [float(s) for s in args.shares.split(",")]
    paths = {s: b.write_corpus(work / f"corpus-{s:g}.parquet", corpus(pool, s, args.seed)) for s in shares}
    run(paths[shares[0]], work / "warm", model, True, env)  # one-off costs (ONNX export, caches) outside the timings
    print(f"model: {model}  rows: {args.rows:,}  load average before: {b.os.getloadavg()}", flush=True)
    runs: dict[tuple[float, bool], list[dict[str, Any]]] = {}
    for _round in range(args.repeat):
        for s in shares:
            for dedup in (True, False):
                runs.setdefault((s, dedup), []).append(run(paths[s], work / f"out-{s:g}-{dedup}", model, dedup, env))
    print("\n| repeated rows | dedup | rows served by a repeat | rows/s end to end | × off | rows/s labelling | × off | ideal | labels = off | max \\|Δp\\| |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for s in shares:
        med = {d: {k: statistics.median(r[k] for r in runs[(s, d)]) for k in ("wall_s", "label_s")} for d in (True, False)}
        same, diff = compare(work / f"out-{s:g}-True", work / f"out-{s:g}-False")
        for d in (False, True):
            e2e, lab = args.rows / med[d]["wall_s"], args.rows / med[d]["label_s"]
            x_e2e, x_lab = med[False]["wall_s"] / med[d]["wall_s"], med[False]["label_s"] / med[d]["label_s"]
            print(f"| {s:.0%} | {'on' if d else 'off'} | {runs[(s, d)][-1]['repeats']:,} | {e2e:,.0f} | {x_e2e:.2f}x "
                  f"| {lab:,.0f} | {x_lab:.2f}x | {1 / (1 - s):.2f}x | {same:.2%} | {diff:.1e} |")
    print(f"\nload average after: {b.os.getloadavg()}")


if __name__ == "__main__":
    main()
