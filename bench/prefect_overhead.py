"""What Prefect costs a run: the same job without Prefect, with its temporary server, and with a running one.

    python bench/prefect_overhead.py                    # 711 rows, 8 shards, data/albert-emotion, 3 rounds
    python bench/prefect_overhead.py --rows 711 --rounds 3 --model DIR

Each round runs, one after the other (so all see the same machine load), in fresh processes:
  1. `runner.run` (the core, no Prefect) through `python -c`;
  2. `emodraw-batch run` with no PREFECT_API_URL: the CLI pre-starts Prefect's temporary server;
  3. `emodraw-batch run` with PREFECT_API_URL set to a `prefect server start` launched by this
     script before the rounds (and stopped after them).
Wall seconds from process start to exit. The corpus is made of the sentences of
../shared/data/emotion when present, else of a synthetic vocabulary.
"""

from __future__ import annotations

import argparse
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "emotion" / "train.txt"


def corpus(path: Path, rows: int, seed: int = 0) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = random.Random(seed)
    if SHARED.is_file():
        pool = [line.rsplit(";", 1)[0] for line in SHARED.read_text().splitlines() if line.strip()]
    else:
        words = "i feel happy sad angry afraid loved surprised today really so the my friend work home".split()
        pool = [" ".join(rng.choice(words) for _ in range(rng.randint(3, 30))) for _ in range(2000)]
    texts = [rng.choice(pool) for _ in range(rows)]
    pq.write_table(pa.table({"id": list(range(rows)), "text": texts}), path, row_group_size=max(1, rows // 8))
    return path


def timed(cmd: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"failed ({done.returncode}): {' '.join(cmd)}\n{done.stderr[-3000:]}")
    return wall


def server(env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    prefect = Path(sys.executable).with_name("prefect")
    proc = subprocess.Popen([str(prefect), "server", "start", "--host", "127.0.0.1", "--port", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/api"
    for _ in range(600):
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2):
                return proc, url
        except OSError:
            time.sleep(0.2)
    proc.kill()
    sys.exit("prefect server start did not answer within 120 s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=711)
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--model", default=str(ROOT / "data" / "albert-emotion"))
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="emodraw-prefect-bench-"))
    src = corpus(work / "in.parquet", args.rows)
    shard_rows = max(1, args.rows // args.shards)
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update(HF_HUB_OFFLINE="1", PREFECT_HOME=str(work / "prefect"))
    flags = ["--model", args.model, "--shard-rows", str(shard_rows), "--json", "--no-progress"]
    cli = [str(Path(sys.executable).with_name("emodraw-batch")), "run", str(src)]
    core = ("from emodraw_batch.job import runner; from emodraw_batch.config import RunConfig; "
            f"runner.run([{str(src)!r}], {{out!r}}, RunConfig(model={args.model!r}, shard_rows={shard_rows}))")
    timed([*cli, "-o", str(work / "warm"), *flags], env)  # the Prefect database and the ONNX export, once
    proc, url = server(env)
    walls: dict[str, list[float]] = {"no Prefect (runner.run)": [], "temporary server": [], "running server": []}
    load_before = " ".join(Path("/proc/loadavg").read_text().split()[:3]) if Path("/proc/loadavg").exists() else "?"
    try:
        for i in range(args.rounds):
            walls["no Prefect (runner.run)"].append(
                timed([sys.executable, "-c", core.format(out=str(work / f"core-{i}"))], env))
            walls["temporary server"].append(timed([*cli, "-o", str(work / f"temp-{i}"), *flags], env))
            walls["running server"].append(
                timed([*cli, "-o", str(work / f"server-{i}"), *flags], {**env, "PREFECT_API_URL": url}))
            print(f"round {i + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in walls.items()), flush=True)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    load_after = " ".join(Path("/proc/loadavg").read_text().split()[:3]) if Path("/proc/loadavg").exists() else "?"
    print(f"\n{args.rows} rows in {args.shards} shards, model {args.model}; load average {load_before} -> {load_after}\n")
    print("| run | median wall s | walls s | over no Prefect |")
    print("|---|---:|---|---:|")
    base = statistics.median(walls["no Prefect (runner.run)"])
    for name, values in walls.items():
        median = statistics.median(values)
        print(f"| {name} | {median:.2f} | {', '.join(f'{v:.2f}' for v in values)} | +{median - base:.2f} s |")


if __name__ == "__main__":
    main()
