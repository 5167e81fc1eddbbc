"""Models side by side on this CPU: `emodraw-batch run` rows/s with default settings, size on disk.

    python bench/models.py --model offline --rounds 3            # vs an ALBERT-base-shaped model
    python bench/models.py --model offline --model DIR --texts emotion/test.txt

ALBERT-base is built offline with random weights (bench/bench.py `checkpoint`: albert-base-v2's
shape, 12 layers, hidden 768, a 30,000-token vocabulary): the compute of the hub checkpoint,
which this machine cannot download. Every model labels the same texts (the test split of the
Emotions dataset by default, else bench/bench.py's synthetic sentences), with `run`'s defaults
(device and runtime left to `run`), in rounds that alternate the models so that both see the
same machine load; the medians are reported: rows/s while labelling (model loaded: what a long
run sustains) and end to end (process start to exit), and the ratio to ALBERT-base.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import SHARED, checkpoint, run_emodraw, sentences, write_corpus  # noqa: E402


def disk_mb(folder: Path) -> float:
    return sum(f.stat().st_size for f in folder.iterdir() if f.is_file()) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", required=True, help="a model for --model of `run` (repeatable)")
    parser.add_argument("--texts", type=Path, default=SHARED / "test.txt", help="`text;label` lines (default: the test split)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "emodraw-bench")
    parser.add_argument("--json", type=Path, help="write the results here too")
    args = parser.parse_args()

    from emodraw_batch.inference.loading import resolve_model

    pool, source = sentences("auto", SHARED, seed=0)
    texts = ([line.rsplit(";", 1)[0] for line in args.texts.read_text().splitlines() if line.strip()]
             if args.texts.is_file() else pool[:2000])
    corpus = write_corpus(args.work / "models-corpus.parquet", texts)
    models = {"albert-base (random weights)": checkpoint(args.work, "base", pool, source)}
    models.update({name: Path(resolve_model(name)[0]) for name in args.model})
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    runs: dict[str, list[dict]] = {name: [] for name in models}
    for _ in range(args.rounds):
        for name, folder in models.items():
            runs[name].append(run_emodraw(corpus, args.work / "models-out", folder, "cpu", "default", env))
    base = statistics.median(r["rows"] / r["label_s"] for r in runs[next(iter(models))])
    results = []
    print(f"{len(texts):,} texts ({args.texts if args.texts.is_file() else source}), {args.rounds} rounds, medians\n")
    print("| model | MB on disk | runtime | rows/s labelling | x ALBERT-base | rows/s end to end |")
    print("|---|---:|---|---:|---:|---:|")
    for name, folder in models.items():
        label = statistics.median(r["rows"] / r["label_s"] for r in runs[name])
        end = statistics.median(r["rows"] / r["wall_s"] for r in runs[name])
        row = {"model": name, "mb": round(disk_mb(folder), 2), "runtime": runs[name][0]["precision"],
               "label_rows_per_s": round(label, 1), "x_base": round(label / base, 2), "end_to_end_rows_per_s": round(end, 1)}
        results.append(row)
        print(f"| {name} | {row['mb']} | {row['runtime']} | {row['label_rows_per_s']} | {row['x_base']} | {row['end_to_end_rows_per_s']} |")
    if args.json:
        args.json.write_text(json.dumps({"texts": len(texts), "rounds": args.rounds, "models": results}, indent=2))


if __name__ == "__main__":
    main()
