"""Peak RSS of `emodraw-batch run` as the corpus grows: one shard, and many shards.

    python bench/memory.py                                        # 100k, 400k, 2M rows; one shard and 50k-row shards
    python bench/memory.py --rows 100000,800000 --shard-rows 0    # one shard only
    python bench/memory.py --rows 100000,2000000 --shard-rows 0 --repeat 3   # medians of 3 runs each

A tiny ALBERT with random weights (built offline, cached under --work, as in bench/bench.py)
labels corpora of sentences from ../shared/data/emotion when present (else synthetic ones) on
the CPU, with the default settings (ONNX Runtime where installed). Each run is its own
process; its peak RSS is its own high-water mark (VmHWM, bench.py's `measure`), the statistics
step at the end included. Prints a Markdown table (peak RSS, x the smallest corpus of the same
layout) and writes WORK/memory.json with each run's RSS timeline. A peak varies by about
+-15 MiB from run to run (which stages allocate at the same moment), so with --repeat N every
size runs N times, alternated, and the table gives the median and every run's peak.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path
from statistics import median

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench import SHARED, checkpoint, emodraw_cmd, last_json, make_texts, measure, sentences  # noqa: E402

ONE_SHARD = 100_000_000  # --shard-rows above any corpus here: one shard


def write_corpus(path: Path, pool: list[str], tokenizer: object, rows: int, chunk: int = 100_000) -> Path:
    """bench.py's corpus (80% tweets, 20% reviews), written 100,000 rows at a time (another seed each):
    bench.py's `make_texts` holds every text and its token ids, several GiB at 2 million rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if path.is_file() and pq.ParquetFile(path).metadata.num_rows == rows:
        return path
    schema = pa.schema([("id", pa.int64()), ("text", pa.string())])
    with pq.ParquetWriter(path, schema) as writer:
        for start in range(0, rows, chunk):
            texts = make_texts(pool, min(chunk, rows - start), tokenizer, 0.2, 128, seed=1 + start // chunk)
            ids = pa.array(range(start, start + len(texts)), pa.int64())
            writer.write_table(pa.table({"id": ids, "text": texts}, schema=schema), row_group_size=10_000)
    return path


def run(corpus: Path, out: Path, model: Path, shard_rows: int, env: dict[str, str], window_rows: int | None = None) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    cmd = [*emodraw_cmd(), "run", str(corpus), "--output", str(out), "--model", str(model), "--device", "cpu"]
    cmd += ["--shard-rows", str(shard_rows), "--json", "--no-progress"]
    if window_rows:
        cmd += ["--window-rows", str(window_rows)]
    result = measure(cmd, env)
    summary = last_json(result["stdout"])
    shards = len(list((out / "labels").glob("*.parquet")))
    return {"rows": summary["rows"], "shards": shards, "peak_rss_mib": round(result["peak_rss_mib"], 1),
            "wall_s": round(result["wall_s"], 1), "rss_timeline": result["rss_timeline"]}


def table(results: list[dict]) -> str:
    """One line per layout and corpus size: the median peak of its runs (and each run's), x the smallest size."""
    lines = ["| layout | rows | shards | peak RSS MiB (median) | × smallest | runs, MiB | wall s (median) |",
             "|---|---:|---:|---:|---:|---|---:|"]
    for layout in dict.fromkeys(r["layout"] for r in results):
        sizes = [[r for r in results if r["layout"] == layout and r["rows"] == rows]
                 for rows in dict.fromkeys(r["rows"] for r in results if r["layout"] == layout)]
        first = median([r["peak_rss_mib"] for r in sizes[0]])
        for runs in sizes:
            peaks = [r["peak_rss_mib"] for r in runs]
            each = ", ".join(f"{p:.0f}" for p in peaks)
            lines.append(f"| {layout} | {runs[0]['rows']:,} | {runs[0]['shards']} | {median(peaks):,.0f} | "
                         f"{median(peaks) / first:.2f} | {each} | {median([r['wall_s'] for r in runs]):.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", default="100000,400000,2000000", help="Corpus sizes, smallest first.")
    parser.add_argument("--shard-rows", type=int, default=50_000, help="Rows per shard of the many-shards layout (0: skip it).")
    parser.add_argument("--repeat", type=int, default=1, help="Runs of every size and layout, alternated; the table gives medians.")
    parser.add_argument("--window-rows", type=int, default=None, help="--window-rows of every run (default: the CLI's).")
    parser.add_argument("--work", type=Path, default=Path("/tmp/emodraw-bench"), help="Cache for the model and corpora.")
    parser.add_argument("--data", type=Path, default=SHARED, help="Folder of *.txt sentences (text;label).")
    args = parser.parse_args()
    from transformers import AutoTokenizer

    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    pool, source = sentences("auto", args.data, seed=0)
    model = checkpoint(args.work, "tiny", pool, source)
    sizes = [int(r) for r in args.rows.split(",") if r]
    tokenizer = AutoTokenizer.from_pretrained(model)
    layouts = {"one shard": ONE_SHARD, **({f"{args.shard_rows:,}-row shards": args.shard_rows} if args.shard_rows else {})}
    results = []
    corpora = {rows: write_corpus(args.work / f"memory-{rows}.parquet", pool, tokenizer, rows) for rows in sizes}
    for _ in range(args.repeat):  # rounds of every size: a slow spell of the machine touches every size alike
        for rows, corpus in corpora.items():
            for layout, shard_rows in layouts.items():
                result = run(corpus, args.work / f"out-memory-{rows}-{shard_rows}", model, shard_rows, env, args.window_rows)
                results.append({"layout": layout, **result})
                print(f"  {layout}: {rows:,} rows, {result['shards']} shards -> peak RSS {result['peak_rss_mib']:.0f} MiB, "
                      f"{result['wall_s']:.0f} s", flush=True)
    results.sort(key=lambda r: (list(layouts).index(r["layout"]), r["rows"]))
    (args.work / "memory.json").write_text(json.dumps({"source": source, "runs": results}, indent=1))
    print(f"\n{source}, {os.cpu_count()} cores\n\n" + table(results))


if __name__ == "__main__":
    main()
