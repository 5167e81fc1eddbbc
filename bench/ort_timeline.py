"""When the model works during a command: every ONNX Runtime `InferenceSession.run`, start and end.

    python bench/ort_timeline.py OUT.json -m emodraw_cli.app run CORPUS -o DIR --model M --device cpu
    python bench/ort_timeline.py OUT.json bench/onnx_baseline.py CORPUS OUT.parquet --model M
    python bench/ort_timeline.py --summary OUT.json [OUT2.json ...]

Runs the command in this process with `InferenceSession.run` wrapped, and writes each call's start
and end (seconds since this process started), batch shape and thread to OUT.json at exit
(`os._exit` included). The summary line per file: batches, padded tokens, seconds inside
ONNX Runtime, the first batch's start, the gaps between batches, and the tail after the last one
(to the process's end). Used to find where `emodraw-batch run` trailed the ONNX Runtime script
(docs/performance.md): not per row, but model-idle seconds at the start, between the head start
and the shard, and at the end.
"""

from __future__ import annotations

import atexit
import json
import os
import runpy
import sys
import threading
import time

STARTED = time.time()


def record(out: str) -> None:
    import onnxruntime as ort

    calls: list[tuple[float, float, list[int], str]] = []
    run = ort.InferenceSession.run

    def timed(self, names, feed, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003
        start = time.time()
        result = run(self, names, feed, *args, **kwargs)
        first = next(iter(feed.values()))
        calls.append((start - STARTED, time.time() - STARTED, list(first.shape), threading.current_thread().name))
        return result

    ort.InferenceSession.run = timed

    def dump() -> None:
        with open(out, "w") as f:
            json.dump({"end": time.time() - STARTED, "runs": calls}, f)

    atexit.register(dump)
    real_exit = os._exit

    def exit_now(code: int) -> None:  # the CLI ends with os._exit, which skips atexit
        dump()
        real_exit(code)

    os._exit = exit_now


def summary(path: str) -> str:
    data = json.load(open(path))
    runs = data["runs"]
    busy = sum(end - start for start, end, _, _ in runs)
    first, last = runs[0][0], runs[-1][1]
    tokens = sum(shape[0] * shape[1] for _, _, shape, _ in runs)
    return (f"{path}: {len(runs)} batches, {tokens} padded tokens, {busy:.2f} s in ONNX Runtime, first batch at "
            f"{first:.2f} s, gaps {last - first - busy:.2f} s, tail {data['end'] - last:.2f} s, end {data['end']:.2f} s")


def main() -> None:
    if sys.argv[1] == "--summary":
        print("\n".join(summary(p) for p in sys.argv[2:]))
        return
    record(sys.argv[1])
    if sys.argv[2] == "-m":
        sys.argv = [sys.argv[3], *sys.argv[4:]]
        runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
    else:
        sys.argv = sys.argv[2:]
        runpy.run_path(sys.argv[0], run_name="__main__")


if __name__ == "__main__":
    main()
