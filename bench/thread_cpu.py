"""Where a command's CPU time goes: per process and per thread of its whole process tree (Linux /proc).

    python bench/thread_cpu.py [--json FILE] -- COMMAND [ARGS...]

Samples /proc/PID/task/TID/stat of the command and all its descendants every 0.1 s and keeps each
thread's last user+system CPU seconds (a thread's time up to its last sample: a thread that lives
less than 0.1 s may be missed). Prints the wall time, the CPU seconds of each process (by command
line) and of its threads (name and id; Python 3.11 and ONNX Runtime leave most unnamed), largest first. Used to find the
per-row cost of `emodraw-batch run` against bench/onnx_baseline.py (docs/performance.md).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for task in os.listdir(f"/proc/{pid}/task")
                for c in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
    except OSError:
        return []


def _threads(pid: int) -> dict[int, tuple[str, float]]:
    """tid -> (thread name, user+system CPU seconds)."""
    out = {}
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tasks:
        try:
            stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        out[int(tid)] = (name, (int(fields[11]) + int(fields[12])) / TICK)  # utime, stime
    return out


def _cmdline(pid: int) -> str:
    try:
        parts = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    words = [p.decode(errors="replace") for p in parts if p]
    return " ".join(Path(w).name if i < 2 else w for i, w in enumerate(words))[:90]


def profile(cmd: list[str]) -> dict:
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    last: dict[tuple[int, int], tuple[str, float]] = {}
    names: dict[int, str] = {}
    while proc.poll() is None:
        todo, seen = [proc.pid], []
        while todo:
            pid = todo.pop()
            seen.append(pid)
            todo += _children(pid)
        for pid in seen:
            if pid not in names:
                names[pid] = _cmdline(pid)
            for tid, value in _threads(pid).items():
                last[(pid, tid)] = value
        time.sleep(0.1)
    wall = time.perf_counter() - started
    per_process: dict[int, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for (pid, tid), (name, seconds) in last.items():
        per_process[pid][f"{name} {tid}"] += seconds  # Python 3.11 and ONNX Runtime leave most threads unnamed
    return {
        "wall_s": round(wall, 2),
        "returncode": proc.returncode,
        "processes": [
            {"pid": pid, "command": names.get(pid, "?"), "cpu_s": round(sum(groups.values()), 2),
             "threads": {k: round(v, 2) for k, v in sorted(groups.items(), key=lambda kv: -kv[1])}}
            for pid, groups in sorted(per_process.items(), key=lambda kv: -sum(kv[1].values()))
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="Also write the numbers to this file.")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    cmd = args.command[1:] if args.command[:1] == ["--"] else args.command
    result = profile(cmd)
    print(f"wall {result['wall_s']:.1f} s, exit {result['returncode']}")
    for p in result["processes"]:
        print(f"  {p['cpu_s']:7.1f} s CPU  {p['command']}")
        for name, seconds in p["threads"].items():
            if seconds >= 0.05:
                print(f"      {seconds:7.2f}  {name}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    sys.exit(result["returncode"])


if __name__ == "__main__":
    main()
