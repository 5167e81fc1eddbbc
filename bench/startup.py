"""Where the seconds of a one-row `emodraw-batch run` go, next to a one-row `transformers.pipeline` script.

    python bench/startup.py                                   # data/albert-emotion, 3 rounds
    python bench/startup.py --model DIR --rounds 5 --json out.json

Each round runs, one after the other (so both see the same machine load):
  1. bench/baseline.py on a one-row corpus (imports, pipeline(), classify, write);
  2. `emodraw-batch run` on the same one-row corpus, plain, for its wall time;
  3. the same command through an instrumented driver (this file with --drive), which records
     when each stage starts and ends: the first import of the heavy packages (exclusive
     seconds, nested imports counted once, under the package that asked first), the input
     checks (`validate`), the plan, Prefect's temporary API server until it answers, the model
     load (on a GPU: the CUDA context inside it), the first batch (warm-up: on a GPU, kernels
     loaded and handles made; torch.compile's compilation when it is on), the flow (its tasks: plan, label,
     finish) and the exit (atexit handlers: Prefect stops its server and flushes its logs and events).
The ratio of median walls is the start-up target of issue #14 (within 1.5x of the pipeline).
Stage times overlap where the stages run in parallel (the API server starts beside the
model load), so they do not add up to the wall time; the timeline shows the order, and
`breakdown` reads the issue's parts off it (bench/gpu.py's startup step prints the same on a GPU).
"""

from __future__ import annotations

import argparse
import builtins
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
BASELINE = Path(__file__).with_name("baseline.py")
HEAVY = ("typer", "rich", "numpy", "pyarrow", "pydantic", "polars", "torch", "transformers", "tokenizers",
         "prefect", "sqlalchemy", "fastapi", "dask", "distributed", "onnxruntime", "onnx", "emodraw_flows", "emodraw_batch",
         "emodraw_cli")

# -- the instrumented driver (runs inside the measured process) -------------------------------

EVENTS: list[tuple[str, float, float]] = []  # (what, start, end) in time.time()
IMPORTS: dict[str, float] = {}  # package -> exclusive seconds of its first import


def _record(what: str, fn: Any, first_only: bool = False) -> Any:
    """`fn` recording each call (or only the first: a per-batch call) as an event `what`."""
    seen: list[bool] = []

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if first_only and seen:
            return fn(*args, **kwargs)
        seen.append(True)
        start = time.time()
        try:
            return fn(*args, **kwargs)
        finally:
            EVENTS.append((what, start, time.time()))

    wrapper.__wrapped__ = fn  # type: ignore[attr-defined]
    return wrapper


FIRST_BATCH = "first batch queued (warm-up; torch.compile compiles here when on)"
CUDA = "CUDA context (torch.cuda's first init)"


def _patch_validate(m: Any) -> None:
    m.validate = _record("validate: inputs, options, output folder, model settings (validate)", m.validate)


def _patch_plan(m: Any) -> None:
    m.plan = _record("plan: run.json, finished shards (plan.plan)", m.plan)


def _patch_runner(m: Any) -> None:
    m.label_shard = _record("label the shard (runner.label_shard)", m.label_shard)
    m.finish = _record("finish: manifest + stats (runner.finish)", m.finish)


def _patch_model(m: Any) -> None:
    cls = m.EmotionClassifier
    cls.__init__ = _record("model load (EmotionClassifier)", cls.__init__)


def _patch_forward(m: Any) -> None:  # either backend: whichever runs the first batch (the head start's thread, often)
    for name in ("TorchForward", "OnnxForward"):
        cls = getattr(m, name, None)
        if cls is not None:
            cls.run = _record(FIRST_BATCH, cls.run, first_only=True)


def _patch_cuda(m: Any) -> None:  # torch.cuda: its first _lazy_init creates the context (model.to() calls it from C++)
    m._lazy_init = _record(CUDA, m._lazy_init, first_only=True)


def _patch_label(m: Any) -> None:
    if hasattr(m, "start_api"):
        m.start_api = _record("Prefect API server start until ready", m.start_api)
    if hasattr(m, "execute"):
        m.execute = _record("emodraw_flows.label.execute (server wait + flow)", m.execute)
    if hasattr(m, "run"):  # before emodraw_flows/run.py (kept so that --trees can compare with older trees)
        m.run = _record("emodraw_flows.label.run (server wait + model + flow)", m.run)
    if hasattr(m, "label_corpus") and hasattr(m.label_corpus, "fn"):
        m.label_corpus.fn = _record("flow body (label_corpus)", m.label_corpus.fn)


def _patch_run(m: Any) -> None:
    m.run = _record("emodraw_flows.run.run (lock + model + Prefect import + flow)", m.run)


def _patch_api(m: Any) -> None:  # the Prefect server the CLI pre-starts (emodraw_flows/api.py)
    m.prestart = _record("launch the pre-started Prefect server (emodraw_flows.api.prestart)", m.prestart)
    m.url = _record("wait until the pre-started server answers (emodraw_flows.api.url)", m.url)


def _patch_cli(m: Any) -> None:
    m.print_summary = _record("print the summary", m.print_summary)


PATCHES = {
    "emodraw_batch.job.validate": _patch_validate,
    "emodraw_batch.job.plan": _patch_plan,
    "emodraw_batch.job.runner": _patch_runner,
    "emodraw_batch.inference.classifier": _patch_model,
    "emodraw_flows.label": _patch_label,
    "emodraw_flows.run": _patch_run,
    "emodraw_cli.app": _patch_cli,
    "emodraw_flows.api": _patch_api,
    "emodraw_batch.inference.backends.torch_forward": _patch_forward,
    "emodraw_batch.inference.backends.onnx_forward": _patch_forward,
    "torch.cuda": _patch_cuda,
}


def _install_import_timer() -> None:
    """Time the first import of each HEAVY package (exclusive of nested HEAVY imports) and apply PATCHES."""
    real_import = builtins.__import__
    stack: list[list[float]] = []  # per open timed import: [start, seconds of nested timed imports]

    def timed_import(name: str, globals: Any = None, locals: Any = None, fromlist: Any = (), level: int = 0) -> Any:
        top = name.split(".")[0] if level == 0 else ""
        timed = top in HEAVY and top not in sys.modules and top not in IMPORTS
        if timed:
            IMPORTS[top] = 0.0
            stack.append([time.perf_counter(), 0.0])
        try:
            return real_import(name, globals, locals, fromlist, level)
        finally:
            if timed:
                start, nested = stack.pop()
                total = time.perf_counter() - start
                IMPORTS[top] = total - nested
                if stack:
                    stack[-1][1] += total
            for module, patch in list(PATCHES.items()):
                if module in sys.modules and getattr(sys.modules[module], "__spec__", None) is not None:
                    mod = sys.modules[module]
                    if not getattr(mod, "_startup_patched", False) and _fully_loaded(mod):
                        mod._startup_patched = True
                        patch(mod)

    builtins.__import__ = timed_import


def _fully_loaded(module: Any) -> bool:
    spec = getattr(module, "__spec__", None)
    return not getattr(spec, "_initializing", False)


def drive(argv: list[str], report: Path) -> None:
    import atexit

    begun = time.time()
    _install_import_timer()
    exit_started: list[float] = []

    def write_report() -> None:
        # Registered first, so it runs last among the atexit handlers (LIFO): after Prefect's.
        # (A CLI that calls the exit handlers itself, then os._exit, never reaches drive's finally.)
        start = exit_started[0] if exit_started else max(end for _, _, end in EVENTS)
        EVENTS.append(("exit handlers (Prefect server stop, log/event flush)", start, time.time()))
        report.write_text(json.dumps({"begun": begun, "events": EVENTS, "imports": IMPORTS}))

    atexit.register(write_report)
    sys.argv = ["emodraw-batch", *argv]
    from emodraw_cli.app import main

    try:
        main()
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise
    finally:
        exit_started.append(time.time())
        # Handlers registered after ours (Prefect's) run before ours.


# -- the measuring side ---------------------------------------------------------------------


def one_row_corpus(path: Path) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"id": [0], "text": ["i feel so happy that the sun came out today"]}), path)
    return path


def timed(cmd: list[str], env: dict[str, str], cwd: Path | None = None) -> tuple[float, float, str]:
    """Wall seconds until the process exits (output to files, as bench.py's measure: no wait on pipes)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started_epoch, started = time.time(), time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=err, text=True, cwd=cwd)
        proc.wait()
        wall = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if proc.returncode != 0:
        sys.exit(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{stderr[-4000:]}")
    return wall, started_epoch, stdout


def driven_run(run_args: list[str], env: dict[str, str], cwd: Path, report: Path,
               timeout: float | None = None) -> dict[str, Any]:
    """One instrumented `emodraw-batch run` (this file with --drive): its report, wall and start time.

    Raises RuntimeError (its stderr's end) if the run fails or times out.
    """
    with tempfile.TemporaryFile("w+") as err:
        started_epoch, started = time.time(), time.perf_counter()
        proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--report", str(report), "--drive",
                                 *run_args], env=env, stdout=subprocess.DEVNULL, stderr=err, text=True, cwd=cwd)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        wall = time.perf_counter() - started
        err.seek(0)
        stderr = err.read()
    if proc.returncode != 0 or not report.is_file():
        raise RuntimeError(f"instrumented run failed ({proc.returncode}): {stderr[-2000:]}")
    data = json.loads(report.read_text())
    data.update(wall=wall, started=started_epoch)
    return data


def _span(d: dict[str, Any], prefix: str) -> tuple[float, float] | None:
    """(start, end) in seconds since the command started of the first event named `prefix`..."""
    found = sorted((s, e) for what, s, e in d["events"] if what.startswith(prefix))
    return (found[0][0] - d["started"], found[0][1] - d["started"]) if found else None


def breakdown(d: dict[str, Any]) -> dict[str, Any]:
    """The parts of a one-row run's wall (issue 39 item 3) from an instrumented run: seconds each, None if absent.

    They overlap (the server starts beside the model; imports happen inside the other parts), so they
    do not add up: `critical` lists what the run's main thread did one after the other.
    """
    def span(prefix: str) -> tuple[float, float] | None:
        return _span(d, prefix)

    def length(s: tuple[float, float] | None) -> float | None:
        return None if s is None else s[1] - s[0]

    run, server, wait = span("emodraw_flows.run.run"), span("launch the pre-started"), span("wait until the pre-started")
    body, model, cuda = span("flow body"), span("model load"), span(CUDA)
    first, exit_ = span(FIRST_BATCH), span("exit handlers")
    imports = d.get("imports", {})
    top = sorted(imports.items(), key=lambda kv: -kv[1])[:4]
    parts = {
        "wall_s": d["wall"],
        "imports_s": sum(imports.values()),
        "imports_top": {k: round(v, 2) for k, v in top},
        "prefect_server_start_s": (wait[1] - server[0]) if server and wait else None,
        "prefect_server_waited_s": length(wait),
        "cuda_context_s": length(cuda),
        "model_load_s": length(model),
        "model_load_without_cuda_s": (length(model) - length(cuda)) if model and cuda else length(model),
        "first_batch_s": length(first),
        "flow_engine_s": (body[0] - (wait[1] if wait else run[0])) if body and run else None,
        "flow_body_s": length(body),
        "exit_s": length(exit_),
    }
    # The main thread, in order: the CLI until the run, the model load, Prefect's import (until execute),
    # the wait for the server, the flow engine, the flow, the exit.
    execute = span("emodraw_flows.label.execute")
    parts["critical"] = {
        "until the run starts (interpreter, CLI imports, validate)": run[0] if run else None,
        "model load (CUDA context included)": length(model),
        "Prefect's import, while the model's head start runs": (execute[0] - model[1]) if execute and model else None,
        "waiting for Prefect's server": length(wait),
        "flow engine until the flow body": parts["flow_engine_s"],
        "flow body (plan, label, finish)": length(body),
        "exit handlers": length(exit_),
    }
    return parts


def print_breakdown(d: dict[str, Any]) -> None:
    p = breakdown(d)

    def show(v: float | None) -> str:
        return "-" if v is None else f"{v:.2f}"

    print("\nThe one-row run's parts (issue 39 item 3; they overlap, see the timeline):\n")
    print("| part | seconds |")
    print("|---|---:|")
    for label, key in (("wall (the caller's)", "wall_s"), ("imports (first import of each package, all threads)", "imports_s"),
                       ("Prefect's temporary server: launch until it answers", "prefect_server_start_s"),
                       ("  of which the run waited for it", "prefect_server_waited_s"),
                       ("CUDA context", "cuda_context_s"), ("model load (CUDA context excluded)", "model_load_without_cuda_s"),
                       ("first batch queued (warm-up, compile)", "first_batch_s"),
                       ("flow engine: server answered until the flow body", "flow_engine_s"),
                       ("flow body (plan, label, finish)", "flow_body_s"), ("exit handlers", "exit_s")):
        print(f"| {label} | {show(p[key])} |")
    print("\nThe main thread, one part after the other:\n")
    print("| part | seconds |")
    print("|---|---:|")
    for label, v in p["critical"].items():
        print(f"| {label} | {show(v)} |")


def print_timeline(label: str, d: dict[str, Any]) -> None:
    t0 = d["started"]
    print(f"\nTimeline of the median instrumented run, {label} ({d['wall']:.2f} s wall; seconds since the command started):\n")
    print("| stage | start | end | seconds |")
    print("|---|---:|---:|---:|")
    print(f"| interpreter start until the driver runs | 0.00 | {d['begun'] - t0:.2f} | {d['begun'] - t0:.2f} |")
    for what, start, end in sorted(d["events"], key=lambda ev: ev[1]):
        print(f"| {what} | {start - t0:.2f} | {end - t0:.2f} | {end - start:.2f} |")
    print(f"| process end (as seen by the caller) | | {d['wall']:.2f} | |")
    print("\nFirst import of each package (exclusive seconds; a package imported by another counts under its own name):\n")
    print("| package | seconds |")
    print("|---|---:|")
    for name, seconds in sorted(d["imports"].items(), key=lambda kv: -kv[1]):
        if seconds >= 0.01:
            print(f"| {name} | {seconds:.2f} |")
    print(f"| all timed imports | {sum(d['imports'].values()):.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(ROOT / "data" / "albert-emotion"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--extra", default="", help="Extra flags for emodraw-batch run (e.g. '--device cpu').")
    parser.add_argument("--trees", default=str(ROOT),
                        help="Comma-separated source trees to compare (each put first on PYTHONPATH; default: this one).")
    parser.add_argument("--no-driver", action="store_true", help="Skip the instrumented runs (wall times only).")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "emodraw-startup")
    parser.add_argument("--json", type=Path, help="Also write all numbers here.")
    parser.add_argument("--drive", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    parser.add_argument("--report", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.drive is not None:
        return drive(args.drive, args.report)

    from bench import emodraw_cmd

    work = args.work
    corpus = one_row_corpus(work / "one-row.parquet")
    trees = [Path(t).resolve() for t in args.trees.split(",") if t]
    envs = {t: {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": os.pathsep.join(
        [str(t), *filter(None, [os.environ.get("PYTHONPATH")])])} for t in trees}
    names = {t: t.name if len(trees) > 1 else "emodraw-batch run" for t in trees}
    cli = emodraw_cmd()
    run_args = ["run", str(corpus), "--output", str(work / "out"), "--model", str(Path(args.model).resolve()),
                "--overwrite", "--json", *args.extra.split()]
    load_before = Path("/proc/loadavg").read_text().split()[:3]
    print(f"one-row start-up, model {args.model}, {args.rounds} rounds, trees {', '.join(map(str, trees))}; "
          f"command {' '.join(cli)}; load average before: {' '.join(load_before)}", flush=True)

    # Every round runs every contender once, in the same order; cwd is the work folder so that
    # `python -m` does not put a source tree of its own first on sys.path.
    walls: dict[str, list[float]] = {"pipeline": []}
    driven: dict[Path, list[dict[str, Any]]] = {t: [] for t in trees}
    for i in range(args.rounds):
        wall, _, _ = timed([sys.executable, str(BASELINE), str(corpus), str(work / "pipeline.parquet"),
                            "--model", str(Path(args.model).resolve())], envs[trees[0]], cwd=work)
        walls["pipeline"].append(wall)
        line = [f"pipeline {wall:.2f} s"]
        for t in trees:
            wall, _, _ = timed([*cli, *run_args], envs[t], cwd=work)
            walls.setdefault(str(t), []).append(wall)
            line.append(f"{names[t]} {wall:.2f} s")
        if not args.no_driver:
            for t in trees:
                try:
                    data = driven_run(run_args, envs[t], work, work / f"driver-{t.name}-{i}.json")
                except RuntimeError as exc:
                    sys.exit(str(exc))
                driven[t].append(data)
                line.append(f"instrumented {names[t]} {data['wall']:.2f} s")
        print(f"  round {i + 1}: " + ", ".join(line), flush=True)
    load_after = Path("/proc/loadavg").read_text().split()[:3]

    p = statistics.median(walls["pipeline"])
    print()
    print("| one-row run | median wall s | walls s | × pipeline |")
    print("|---|---:|---|---:|")
    print(f"| transformers.pipeline script (bench/baseline.py) | {p:.2f} | "
          f"{', '.join(f'{w:.2f}' for w in walls['pipeline'])} | 1.00x |")
    for t in trees:
        e = statistics.median(walls[str(t)])
        print(f"| emodraw-batch run ({names[t]}) | {e:.2f} | {', '.join(f'{w:.2f}' for w in walls[str(t)])} | {e / p:.2f}x |")
    for t in trees:
        if driven[t]:
            median = sorted(driven[t], key=lambda r: r["wall"])[len(driven[t]) // 2]
            print_timeline(names[t], median)
            print_breakdown(median)
    print(f"\nload average before/after: {' '.join(load_before)} / {' '.join(load_after)}")
    if args.json:
        args.json.write_text(json.dumps({
            "model": args.model, "walls": walls, "driven": {str(t): d for t, d in driven.items()},
            "load_before": load_before, "load_after": load_after,
        }, indent=2))


if __name__ == "__main__":
    main()
