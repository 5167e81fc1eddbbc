"""Models side by side on this CPU: rows/s with `run`'s default settings, size on disk.

    python bench/models.py --model offline --rounds 3            # vs an ALBERT-base-shaped model
    python bench/models.py --model offline --model DIR --texts emotion/test.txt

ALBERT-base is built offline with random weights (bench/bench.py `checkpoint`: albert-base-v2's
shape, 12 layers, hidden 768, a 30,000-token vocabulary): the compute of the hub checkpoint,
which this machine cannot download. Every model labels the same texts (the test split of the
Emotions dataset by default, else bench/bench.py's synthetic sentences), with `run`'s defaults
in rounds that alternate the models so that all see the same machine load; medians are reported:

- labelling rows/s: the model loaded once, as `run` loads it (runtime auto: ONNX Runtime for fp32
  on the CPU), then timed over all the texts (`run`'s sort-by-length batching under its token
  budget): what a long run sustains once started; with --precision, other precisions as well;
- end to end rows/s: `emodraw-batch run` on a Parquet file of the texts, process start to exit
  (imports, Prefect, model load and export included: on 2,000 texts mostly fixed costs).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
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
    parser.add_argument("--precision", default="fp32", help="comma-separated precisions timed in-process (default: fp32)")
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
    precisions = args.precision.split(",")
    speed: dict[tuple[str, str], list[float]] = {(m, p): [] for m in models for p in precisions}
    walls: dict[str, list[float]] = {m: [] for m in models}
    for _ in range(args.rounds):
        for name, folder in models.items():
            for precision in precisions:
                speed[name, precision].append(labelling_rate(str(folder), texts, precision))
            done = run_emodraw(corpus, args.work / "models-out", folder, "cpu", "default", env)
            walls[name].append(done["rows"] / done["wall_s"])
    base = statistics.median(speed[next(iter(models)), precisions[0]])
    print(f"{len(texts):,} texts ({args.texts if args.texts.is_file() else source}), {args.rounds} rounds, medians\n")
    print("| model | MB on disk | precision | labelling rows/s | x ALBERT-base | end to end rows/s (`run`) |")
    print("|---|---:|---|---:|---:|---:|")
    results = []
    for (name, precision), rates in speed.items():
        row = {"model": name, "mb": round(disk_mb(models[name]), 2), "precision": precision,
               "rows_per_s": round(statistics.median(rates), 1), "x_base": round(statistics.median(rates) / base, 2),
               "end_to_end_rows_per_s": round(statistics.median(walls[name]), 1)}
        results.append(row)
        print(f"| {name} | {row['mb']} | {precision} | {row['rows_per_s']} | {row['x_base']} | {row['end_to_end_rows_per_s']} |")
    if args.json:
        args.json.write_text(json.dumps({"texts": len(texts), "rounds": args.rounds, "models": results}, indent=2))


def labelling_rate(model: str, texts: list[str], precision: str) -> float:
    """Rows/s of one pass over `texts` by a classifier loaded as `run` loads it (one warm-up batch first)."""
    from emodraw_batch.inference.classifier import EmotionClassifier

    clf = EmotionClassifier(model, device="cpu", precision=precision, runtime="auto")
    clf(texts[:32])
    started = time.perf_counter()
    clf(texts)
    rate = len(texts) / (time.perf_counter() - started)
    clf.close()
    return rate


if __name__ == "__main__":
    main()
