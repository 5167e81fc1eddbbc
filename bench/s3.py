"""What writing the output to S3-compatible object storage costs, against a local folder.

    python bench/s3.py                          # run: 16,000 rows in 8 shards; write: 8 shards of 100,000 rows
    python bench/s3.py --rows 200000 --write-rows 1000000 --repeat 5

Same machine, same corpus (data/sample.parquet's texts repeated, with ids), same shipped model
(data/albert-emotion). The S3 server is moto's (`python -m moto.server`, from `pip install 'moto[server]'`)
in its own process on 127.0.0.1, so it does not share this process's GIL; it keeps objects in
memory, and torch gets one thread (OMP_NUM_THREADS=1) so that the server has a core; this measures
the protocol and the atomic-write scheme (upload to a hidden temporary
key, then a server-side CopyObject + DeleteObject), not a real network or disk.

Two parts, each run --repeat times, medians reported:

  write   the labelled rows of one output, tiled to --write-rows rows per shard file, written through
          `AtomicParquetWriter` into a local folder and into s3:// (the writing code path alone, no model);
  run     `runner.run` end to end (validate, plan, label, manifest, statistics; no Prefect) with
          the output in a local folder and in s3://, inputs local.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# One torch thread: the S3 server runs on this machine too and needs a core of its own, or the
# model's OpenMP threads and the server fight over the CPUs and the timings measure that fight.
os.environ.setdefault("OMP_NUM_THREADS", "1")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server() -> subprocess.Popen:
    port = free_port()
    # This Python's moto (another `moto_server` on PATH may be an older one that the AWS SDK in pyarrow rejects).
    command = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.environ.update(
        AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}", AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench",
        AWS_REGION="us-east-1", AWS_EC2_METADATA_DISABLED="true",
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("moto_server did not start")


def make_texts(rows: int, seed: int) -> list[str]:
    """Tweet-like texts (4 to 40 words) drawn from data/sample.parquet's vocabulary: distinct, so they
    compress like real text rather than like 41 sentences repeated."""
    import random

    import pyarrow.parquet as pq

    sample = pq.read_table(ROOT / "data" / "sample.parquet", columns=["text"])["text"].to_pylist()
    words = sorted({w for t in sample if t for w in t.split()})
    rng = random.Random(seed)
    return [" ".join(rng.choices(words, k=rng.randint(4, 40))) for _ in range(rows)]


def make_corpus(path: Path, rows: int, row_group: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"id": pa.array(range(rows), pa.int64()), "text": make_texts(rows, seed=0)})
    pq.write_table(table, path, row_group_size=row_group)


def median(values: list[float]) -> float:
    return statistics.median(values)


def main() -> None:
    parser = argparse.ArgumentParser(description="Output to a local folder vs to a local S3 server.")
    parser.add_argument("--rows", type=int, default=16_000, help="Rows labelled end to end (default: 16,000).")
    parser.add_argument("--shards", type=int, default=8, help="Shards (output files) (default: 8).")
    parser.add_argument("--write-rows", type=int, default=100_000, help="Rows per shard file in the write part (default: 100,000).")
    parser.add_argument("--repeat", type=int, default=3, help="Runs of each part and kind; medians are reported (default: 3).")
    args = parser.parse_args()

    import boto3
    import pyarrow as pa
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq

    from emodraw_batch.job import runner
    from emodraw_batch.config import load_config
    from emodraw_batch.files.layout import layout
    from emodraw_batch.files.writer import AtomicParquetWriter

    server = start_server()
    work = Path(tempfile.mkdtemp(prefix="emodraw-s3-bench-"))
    try:
        boto3.client("s3").create_bucket(Bucket="bench")
        shard_rows = args.rows // args.shards
        corpus = work / "corpus.parquet"
        make_corpus(corpus, args.rows, min(shard_rows, 5_000))
        cfg = load_config(model=str(ROOT / "data" / "albert-emotion"), device="cpu", shard_rows=shard_rows)

        runner.run([str(corpus)], str(work / "warm-up"), cfg)  # model load and first passes, not timed
        # run: end to end, local folder vs s3:// (alternating which goes first)
        runs: dict[str, list[float]] = {"local": [], "s3": []}
        for i in range(args.repeat):
            for kind in ("local", "s3") if i % 2 == 0 else ("s3", "local"):
                out = str(work / f"run-{i}") if kind == "local" else f"s3://bench/run-{i}"
                started = time.perf_counter()
                summary = runner.run([str(corpus)], out, cfg)
                runs[kind].append(time.perf_counter() - started)
                assert summary.rows == args.rows and summary.outputs == args.shards

        # write: the labelled shard files only, rewritten through the atomic writer
        shards = sorted((work / "run-0" / "labels").glob("*.parquet"))
        labelled = pq.read_table(shards[0])
        tile = pa.concat_tables([labelled] * (args.write_rows // labelled.num_rows + 1)).slice(0, args.write_rows)
        tables = []
        for k in range(len(shards)):  # the label columns tiled; distinct ids and texts in every file
            table = tile.set_column(0, "id", pa.array(range(k * args.write_rows, (k + 1) * args.write_rows), pa.int64()))
            tables.append(table.set_column(1, "text", pa.array(make_texts(args.write_rows, seed=k + 1))).combine_chunks())
        writes: dict[str, list[float]] = {"local": [], "s3": []}
        for i in range(args.repeat):
            for kind in ("local", "s3") if i % 2 == 0 else ("s3", "local"):
                out = layout(str(work / f"write-{i}") if kind == "local" else f"s3://bench/write-{i}")
                if not out.remote:
                    out.fs.create_dir(out.labels)
                started = time.perf_counter()
                for path, table in zip(shards, tables):
                    with AtomicParquetWriter(out.labels, path.name, table.schema, out.fs) as writer:
                        writer.write(table)
                writes[kind].append(time.perf_counter() - started)
        s3fs = pafs.S3FileSystem(endpoint_override=os.environ["AWS_ENDPOINT_URL"], region="us-east-1")
        written = [f for f in s3fs.get_file_info(pafs.FileSelector("bench/write-0/labels")) if f.is_file]
        assert len(written) == args.shards
        size_mb = sum(f.size for f in written) / 1e6
        local_mb = sum(p.stat().st_size for p in (work / "write-0" / "labels").glob("*.parquet")) / 1e6
        assert abs(size_mb - local_mb) < 1e-6

        print(f"run: {args.rows:,} rows in {args.shards} shards; write: {args.shards} x {args.write_rows:,} rows "
              f"({size_mb:.1f} MB); median of {args.repeat}; {os.cpu_count()} CPU(s); S3 = moto server on 127.0.0.1\n")
        print("| part | local folder s | s3:// s | s3 - local s | s3 / local |")
        print("|---|---|---|---|---|")
        for name, data in (("write (shard files only)", writes), ("run (end to end, no Prefect)", runs)):
            local, s3 = median(data["local"]), median(data["s3"])
            print(f"| {name} | {local:.3f} | {s3:.3f} | {s3 - local:+.3f} | {s3 / local:.2f}x |")
        per_shard = (median(writes["s3"]) - median(writes["local"])) / args.shards
        print(f"\nwriting to S3 adds {1000 * per_shard:.0f} ms per shard file of {size_mb / args.shards:.1f} MB "
              f"(upload to the temporary key, CopyObject, DeleteObject)")
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
