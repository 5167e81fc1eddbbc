"""Side-by-side benchmark: a `transformers.pipeline` loop vs `emodraw-batch run` (vs an ONNX Runtime script).

Same machine, same checkpoint, same Parquet corpus, same torch thread count; each tool
runs in its own process, so peak memory is its own:

    python bench/bench.py                                  # ALBERT-base shape, 2000 rows, CPU, fp32 + int8
    python bench/bench.py --rows 500 --size tiny           # a quick look
    python bench/bench.py --device cuda --rows 200000      # on a GPU: bf16 (emodraw's default there)

It builds (offline, cached under --work) an ALBERT checkpoint of the chosen size with
random weights (the compute of the real model) unless --model is given, and a corpus with
a realistic length mix: mostly tweet-length texts, --review-share multi-sentence reviews.
Sentences come from ../shared/data/emotion when present (never copied into the project),
else from a synthetic vocabulary. Reviews are capped at --max-length tokens, so neither
tool truncates and the fp32 labels can be compared exactly.

Reported per tool: rows/s end to end (process start to exit, Parquet in to Parquet out)
and while labelling (model loaded), the ratio to the baseline, label agreement with the
baseline, time to first result (the same command on a one-row corpus: imports, model
load, Prefect start), model load alone, peak RSS. A second, cheap part runs
`emodraw-batch run` with a tiny model on two corpus sizes to show that peak RSS stays
flat as the corpus grows. The table is printed as Markdown; all numbers go to
WORK/results.json.

On the CPU, when onnxruntime is installed, the peer rows of bench/onnx_baseline.py (the ONNX
Runtime script a speed-conscious user writes: same sorted token-budget batching, fp32 and ORT
dynamic int8) join the table; its one-off export is made before any timed run. `--reference onnx`
makes the fp32 script the reference of every ratio and agreement and skips the (slow) pipeline. With --repeat N
every contender runs N times, alternated in one order per round, and medians are reported.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import platform
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "emotion"
BASELINE = Path(__file__).with_name("baseline.py")
ONNX_BASELINE = Path(__file__).with_name("onnx_baseline.py")

# The synthetic fallback: everyday words, drawn with Zipf-like weights into sentences.
VOCAB = (
    "i im feel feeling felt so really very just still not too a the this that my me it is was be been have had "
    "day today night week morning work home school friend friends family mom dad people life time love hate "
    "happy sad angry afraid scared nervous excited glad proud lonely tired bored hurt calm grateful amazed "
    "shocked curious hopeful anxious furious upset lost weird strange good bad great awful lovely terrible "
    "little bit much more about when like because after before again never always know think want need "
    "going get got make made see saw go went come back new old first last long way thing things something "
    "everything nothing someone everyone book movie song phone coffee rain sun city train car dog cat food "
    "product service order delivery price quality recommend buy bought return box arrived broken worked"
).split()


# -- inputs -----------------------------------------------------------------------------------


def sentences(kind: str, data: Path, seed: int) -> tuple[list[str], str]:
    """Source sentences: the public Emotions dataset if present (auto/shared), else synthetic."""
    files = sorted(data.glob("*.txt")) if data.is_dir() else []
    if kind == "shared" and not files:
        sys.exit(f"--corpus shared: no *.txt files in {data}; pass --data DIR or --corpus synthetic.")
    if kind in ("auto", "shared") and files:
        texts = [line.rsplit(";", 1)[0].strip() for f in files for line in f.read_text().splitlines()]
        return [t for t in texts if t], f"sentences of {data}"
    rng = random.Random(seed)
    weights = [1 / (rank + 1) for rank in range(len(VOCAB))]
    made = [" ".join(rng.choices(VOCAB, weights, k=rng.randint(4, 32))) for _ in range(20_000)]
    return made, "synthetic sentences"


def make_texts(pool: list[str], rows: int, tokenizer: Any, review_share: float, max_length: int, seed: int) -> list[str]:
    """Tweets are single sentences; reviews join 3-6 sentences, cut to fit `max_length` tokens."""
    rng = random.Random(seed)
    counts = [len(ids) for ids in tokenizer(pool, add_special_tokens=False)["input_ids"]]
    budget = max_length - 2  # [CLS] and [SEP]
    texts = []
    for _ in range(rows):
        if rng.random() >= review_share:
            i = rng.randrange(len(pool))
            while counts[i] > budget:
                i = rng.randrange(len(pool))
            texts.append(pool[i])
            continue
        picked, used = [], 0
        for i in rng.sample(range(len(pool)), rng.randint(3, 6)):
            if used + counts[i] + 1 > budget:  # +1: the full stop after each sentence
                break
            picked.append(pool[i])
            used += counts[i] + 1
        texts.append(". ".join(picked or [pool[0]]) + ".")
    longest = max(len(ids) for ids in tokenizer(texts)["input_ids"])
    assert longest <= max_length, f"corpus text of {longest} tokens would be truncated"
    return texts


def write_corpus(path: Path, texts: list[str]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.table({"id": pa.array(range(len(texts)), pa.int64()), "text": pa.array(texts, pa.string())})
    pq.write_table(table, path, row_group_size=10_000)
    return path


def checkpoint(work: Path, size: str, pool: list[str], source: str) -> Path:
    """An ALBERT of `size` with random weights and a tokenizer trained on the pool (cached)."""
    from emodraw_batch.train.from_scratch import build_albert, train_tokenizer

    folder = work / f"albert-{size}-{'shared' if 'synthetic' not in source else 'synthetic'}"
    if not (folder / "config.json").is_file():
        tokenizer = train_tokenizer(pool, vocab_size=30_000 if size == "base" else 4_000)
        build_albert(folder, tokenizer, size=size, seed=0)
    return folder


# -- measuring a process ----------------------------------------------------------------------


class GpuSampler:
    """Mean GPU utilization and peak used GPU memory while a process runs, sampled with nvidia-smi
    every 0.2 s (CUDA runs only). Memory is the whole GPU's, as nvidia-smi sees it (all processes)."""

    def __init__(self, enabled: bool) -> None:
        self.samples: list[float] = []
        self.memory: list[float] = []
        self.times: list[float] = []  # perf_counter() of each sample, for timelines (bench/gpu.py)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True) if enabled else None

    def _sample(self) -> None:
        query = ["nvidia-smi", "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits", "--id=0"]
        while not self._stop.wait(0.2):
            try:
                util, used = subprocess.run(query, capture_output=True, text=True).stdout.strip().split(",")[:2]
                self.samples.append(float(util))
                self.memory.append(float(used))
                self.times.append(time.perf_counter())
            except (OSError, ValueError, IndexError):
                return

    def __enter__(self) -> GpuSampler:
        if self._thread:
            self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()

    @property
    def mean(self) -> float | None:
        return round(sum(self.samples) / len(self.samples), 1) if self.samples else None

    @property
    def peak_memory_mib(self) -> float | None:
        return max(self.memory) if self.memory else None


def _tree(pid: int) -> list[int]:
    """`pid` and its descendants (Linux /proc)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                todo += [int(c) for c in open(f"/proc/{p}/task/{task}/children").read().split()]
        except OSError:
            pass
    return out


def _status_mib(pid: int, field: str) -> float:
    """A memory field of /proc/PID/status (VmHWM: peak RSS, VmRSS: current) in MiB; 0 once the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith(field)) / 1024
    except (OSError, StopIteration, ValueError):
        return 0.0


def _hwm_mib(pid: int) -> float:
    return _status_mib(pid, "VmHWM")


def _rss_mib(pid: int) -> float:
    return _status_mib(pid, "VmRSS")


def measure(cmd: list[str], env: dict[str, str], gpu: bool = False, timeout: float | None = None) -> dict[str, Any]:
    """Run `cmd`; return wall seconds, peak RSS of its biggest process (MiB) and its stdout.

    Peak RSS is each process's own high-water mark (VmHWM), polled every 50 ms. Not
    `wait4`'s ru_maxrss: on Linux that also counts the memory of the parent at the moment
    it spawned the child (this benchmark, holding its corpus), which would inflate it.
    """
    peaks: dict[int, float] = {}
    rss: list[tuple[float, float]] = []  # (seconds since start, summed VmRSS of the tree in MiB), every ~0.5 s
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err, GpuSampler(gpu) as sampler:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, text=True)
        while True:
            tree = _tree(proc.pid)
            for pid in tree:
                peaks[pid] = max(peaks.get(pid, 0.0), _hwm_mib(pid))
            now = time.perf_counter() - started
            total = sum(_rss_mib(pid) for pid in tree)
            if total > 0 and (not rss or now - rss[-1][0] >= 0.5):  # 0: the process has just exited
                rss.append((round(now, 2), round(total, 1)))
            if proc.poll() is not None:  # a zombie until polled: its last VmHWM was read above
                break
            if timeout is not None and time.perf_counter() - started > timeout:
                for pid in reversed(_tree(proc.pid)):  # children first: Dask workers, Prefect's server
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except OSError:
                        pass
                proc.wait()
                break
            time.sleep(0.05)
        wall = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    result = {
        "wall_s": wall,
        "peak_rss_mib": max(peaks.values(), default=0.0),
        "stdout": stdout,
        "gpu_util": sampler.mean,
        "gpu_mem_peak_mib": sampler.peak_memory_mib,
        "rss_timeline": rss,
        "gpu_timeline": [(round(t - started, 2), u, m) for t, u, m in zip(sampler.times, sampler.samples, sampler.memory)],
    }
    if proc.returncode != 0:
        if timeout is not None:  # the caller records the failure and goes on (bench/gpu.py)
            return {**result, "failed": proc.returncode, "stderr": stderr[-4000:]}
        sys.exit(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{stderr[-4000:]}")
    return result


def last_json(stdout: str) -> dict[str, Any]:
    return json.loads(stdout.strip().splitlines()[-1])


def emodraw_cmd() -> list[str]:
    """The `emodraw-batch` command: $EMODRAW_CMD if set (e.g. "python -m emodraw_batch.cli"), else the script."""
    if os.environ.get("EMODRAW_CMD"):
        return os.environ["EMODRAW_CMD"].split()
    script = Path(sys.executable).with_name("emodraw-batch")
    return [str(script)] if script.exists() else [sys.executable, "-m", "emodraw_cli.app"]


def run_emodraw(corpus: Path, out: Path, model: Path, device: str, precision: str, env: dict[str, str]) -> dict[str, Any]:
    """`precision` is PRECISION or PRECISION:RUNTIME (e.g. fp32:torch adds --runtime torch); `default` passes neither."""
    shutil.rmtree(out, ignore_errors=True)
    cmd = [*emodraw_cmd(), "run", str(corpus), "--output", str(out), "--model", str(model), "--device", device]
    precision, _, runtime = precision.partition(":")
    if precision != "default":
        cmd += ["--precision", precision]
    if runtime:
        cmd += ["--runtime", runtime]
    result = measure([*cmd, "--json", "--no-progress"], env, gpu=device.startswith("cuda"))
    manifest = json.loads((out / "manifest.json").read_text())
    result["label_s"] = sum(o["seconds"] for o in manifest["outputs"])  # model loaded, windows streaming
    result["rows"] = last_json(result["stdout"])["rows"]
    result["precision"] = manifest["model"]["precision"]
    if manifest["model"].get("runtime"):  # recorded since the optional ONNX Runtime forward pass
        result["precision"] += f" ({manifest['model']['runtime']})"
    result["asked"] = precision + (f":{runtime}" if runtime else "")
    result["batch_tokens"] = manifest["model"]["batch_tokens"]
    return result


def run_baseline(corpus: Path, out: Path, model: Path, device: str, threads: int, env: dict[str, str]) -> dict[str, Any]:
    cmd = [sys.executable, str(BASELINE), str(corpus), str(out), "--model", str(model), "--device", device]
    result = measure([*cmd, "--threads", str(threads)], env, gpu=device.startswith("cuda"))
    result.update(last_json(result["stdout"]))
    return result


def run_onnx(corpus: Path, out: Path, model: Path, int8: bool, threads: int, cache: Path, env: dict[str, str]) -> dict[str, Any]:
    """bench/onnx_baseline.py: the ONNX Runtime script (export cached in `cache`, made before the first timed run)."""
    cmd = [sys.executable, str(ONNX_BASELINE), str(corpus), str(out), "--model", str(model), "--cache", str(cache)]
    result = measure([*cmd, "--threads", str(threads), *(["--int8"] if int8 else [])], env)
    result.update(last_json(result["stdout"]))
    result["precision"] = "int8 (ORT dynamic)" if int8 else "fp32"
    return result


def model_load_s(model: Path, device: str, precision: str, env: dict[str, str]) -> float:
    """Seconds to import torch + transformers and build the classifier (no Prefect, no data)."""
    precision, _, runtime = precision.partition(":")
    precision = "auto" if precision == "default" else precision
    # As `run` loads it: its default runtime is auto (ONNX Runtime for fp32 on the CPU when installed),
    # where EmotionClassifier's own default is torch. A warm run (cached ONNX export) is measured.
    runtime = runtime or "auto"
    accepts = "runtime" in inspect.signature(__import__("emodraw_batch.inference.classifier", fromlist=["EmotionClassifier"]).EmotionClassifier).parameters
    extra = f", runtime={runtime!r}" if accepts else ""
    code = (
        "import time; t = time.perf_counter(); from emodraw_batch.inference.classifier import EmotionClassifier; "
        f"EmotionClassifier({str(model)!r}, device={device!r}, precision={precision!r}{extra}); "
        "print(time.perf_counter() - t)"
    )
    return float(measure([sys.executable, "-c", code], env)["stdout"].strip().splitlines()[-1])


def agreement(baseline_out: Path, other_out: Path) -> dict[str, float]:
    """Share of rows with the same top label, and the largest probability difference, over the rows both labelled.

    `other_out` is an emodraw output folder (its labels/*.parquet) or one Parquet file. Rows that
    emodraw kept but did not label (status other than ok: a text taken for another language under
    the default `--languages en`, say) have no label to compare; they are counted in `unlabelled`.
    """
    import numpy as np
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    base = pq.read_table(baseline_out)
    ours = pq.read_table(sorted((other_out / "labels").glob("*.parquet")) if other_out.is_dir() else other_out)
    base, ours = base.sort_by("id"), ours.sort_by("id")
    if "status" in ours.column_names:
        labelled = pc.equal(ours["status"], "ok")
        base, ours = base.filter(labelled), ours.filter(labelled)
    probs = [c for c in base.column_names if c.startswith("prob_")]
    diff = max(float(np.max(np.abs(base[c].to_numpy() - ours[c].to_numpy()))) for c in probs)
    same = np.asarray(base["emotion"].to_pylist()) == np.asarray(ours["emotion"].to_pylist())
    unlabelled = pq.read_metadata(baseline_out).num_rows - len(same)
    return {"agreement": float(same.mean()), "max_abs_dprob": diff, "unlabelled": unlabelled}


# -- the run ----------------------------------------------------------------------------------


def machine(device: str, threads: int) -> dict[str, Any]:
    import torch

    from emodraw_batch.inference.device import cpu_has_bf16

    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    info = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "threads": threads,
        "cpu_bf16": cpu_has_bf16(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


def memory_part(args: argparse.Namespace, work: Path, pool: list[str], source: str, env: dict[str, str]) -> list[dict]:
    """emodraw-batch run on growing corpora with a tiny model: peak RSS must stay flat (streaming)."""
    from transformers import AutoTokenizer

    model = checkpoint(work, "tiny", pool, source)
    tokenizer = AutoTokenizer.from_pretrained(model)
    rows_list = [int(r) for r in args.memory_rows.split(",") if r]
    texts = make_texts(pool, max(rows_list), tokenizer, args.review_share, args.max_length, seed=1)
    out = []
    for rows in rows_list:
        corpus = write_corpus(work / f"memory-{rows}.parquet", texts[:rows])
        result = run_emodraw(corpus, work / f"out-memory-{rows}", model, args.device, "default", env)
        out.append({"rows": rows, "peak_rss_mib": result["peak_rss_mib"], "wall_s": result["wall_s"]})
        print(f"  memory check: {rows:,} rows -> peak RSS {result['peak_rss_mib']:.0f} MiB", flush=True)
    return out


def table(results: dict[str, Any]) -> str:
    base = results["baseline"]
    b_e2e, b_lab = base["rows"] / base["wall_s"], base["rows"] / base["label_s"]
    ref = "baseline" if results.get("reference", "pipeline") == "pipeline" else "script"
    lines = [
        f"| tool | precision | rows/s end to end | × {ref} | rows/s labelling | × {ref} "
        f"| labels = {ref} | max \\|Δp\\| | first result s | model load s | peak RSS MiB |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in [base, *results["emodraw"], *results.get("onnx", [])]:
        e2e, lab = r["rows"] / r["wall_s"], r["rows"] / r["label_s"]
        tool = r.get("tool", "transformers.pipeline, batch 32" if r is base else "emodraw-batch run")
        agree = "-" if r is base else f"{r['agreement']:.2%}" + (f" ({r['unlabelled']} not labelled)" if r.get("unlabelled") else "")
        diff = "-" if r is base else f"{r['max_abs_dprob']:.1e}"
        lines.append(
            f"| {tool} | {r['precision']} | {e2e:,.1f} | {e2e / b_e2e:.2f}x | {lab:,.1f} | {lab / b_lab:.2f}x "
            f"| {agree} | {diff} | {r['first_result_s']:.1f} | {r['model_load_s']:.1f} | {r['peak_rss_mib']:,.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description="transformers.pipeline vs emodraw-batch run, side by side.")
    parser.add_argument("--rows", type=int, default=2000, help="Rows in the corpus (default: 2000).")
    parser.add_argument("--size", choices=("tiny", "small", "base"), default="base", help="ALBERT size built (default: base).")
    parser.add_argument("--model", type=Path, help="Use this checkpoint folder instead of building one (e.g. a fine-tuned model).")
    parser.add_argument("--precision", default=None, help="emodraw precisions, comma-separated, each PRECISION or PRECISION:RUNTIME (e.g. fp32:torch,fp32:onnx,fast) (default: fp32,int8 on CPU [+bf16 if the CPU has it]; bf16 on CUDA).")
    parser.add_argument("--onnx", default=None, help="Peer rows of bench/onnx_baseline.py (ONNX Runtime): fp32,int8 (default on CPU when onnxruntime is installed; '' skips).")
    parser.add_argument("--reference", choices=("pipeline", "onnx"), default="pipeline", help="What the ratios and agreement compare to: the transformers.pipeline script, or (onnx) the fp32 ONNX Runtime script, and then the pipeline is not run (default: pipeline).")
    parser.add_argument("--repeat", type=int, default=1, help="Runs of every contender, alternated (baseline, emodraw..., onnx...); medians are reported (default: 1).")
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N, for both tools (default: cpu).")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads for both tools (default: all cores).")
    parser.add_argument("--corpus", choices=("auto", "shared", "synthetic"), default="auto", help="Sentence source (default: shared data if present).")
    parser.add_argument("--data", type=Path, default=SHARED, help=f"Folder of the Emotions dataset (default: {SHARED}).")
    parser.add_argument("--review-share", type=float, default=0.2, help="Share of multi-sentence reviews (default: 0.2).")
    parser.add_argument("--max-length", type=int, default=128, help="Longest text in tokens (emodraw's default max length).")
    parser.add_argument("--memory-rows", default="200000,800000,1600000", help="Corpus sizes of the memory check ('' skips it).")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "emodraw-bench", help="Cache and outputs.")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    from emodraw_batch.inference.device import cpu_has_bf16

    hf_logging.set_verbosity_error()
    cuda = args.device.startswith("cuda")
    precisions = (args.precision or ("bf16" if cuda else "fp32,int8" + (",bf16" if cpu_has_bf16() else ""))).split(",")
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(args.threads),
        "MKL_NUM_THREADS": str(args.threads),
        "HF_HUB_OFFLINE": "1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
    }
    load_before = os.getloadavg()
    pool, source = sentences(args.corpus, args.data, args.seed)
    model = args.model or checkpoint(work, args.size, pool, source)
    tokenizer = AutoTokenizer.from_pretrained(model)
    texts = make_texts(pool, args.rows, tokenizer, args.review_share, args.max_length, args.seed)
    corpus = write_corpus(work / f"corpus-{args.rows}.parquet", texts)
    one_row = write_corpus(work / "corpus-1.parquet", texts[:1])
    lengths = [len(ids) for ids in tokenizer(texts)["input_ids"]]
    print(f"corpus: {args.rows:,} rows from {source}, mean {sum(lengths) / len(lengths):.1f} tokens, longest {max(lengths)}")
    print(f"model: {model}  device: {args.device}  threads: {args.threads}  load average: {load_before}", flush=True)

    import importlib.util

    onnx = args.onnx if args.onnx is not None else ("" if cuda or not importlib.util.find_spec("onnxruntime") else "fp32,int8")
    onnx_kinds = [k for k in onnx.split(",") if k]
    cache = work / f"onnx-{model.name}"
    for kind in onnx_kinds:  # the one-off export (and quantization), outside every timed run
        run_onnx(one_row, work / "out-onnx-warm.parquet", model, kind == "int8", args.threads, cache, env)
    if not cuda:  # emodraw's own one-off ONNX export of the checkpoint (cached), outside the timed runs alike
        for precision in precisions:
            run_emodraw(one_row, work / f"out-emodraw-warm-{precision}", model, args.device, precision, env)

    # Every contender runs once per round, in the same order, so a change in load hits all of them.
    started = time.perf_counter()
    runs: dict[str, list[dict[str, Any]]] = {}
    pipeline = args.reference == "pipeline"
    if not pipeline and "fp32" not in onnx_kinds:
        sys.exit("--reference onnx needs the fp32 ONNX Runtime script among --onnx.")
    reference_out = work / ("out-baseline.parquet" if pipeline else "out-onnx-fp32.parquet")
    for _round in range(args.repeat):
        if pipeline:
            runs.setdefault("baseline", []).append(
                run_baseline(corpus, work / "out-baseline.parquet", model, args.device, args.threads, env))
        for precision in precisions:
            runs.setdefault(precision, []).append(
                run_emodraw(corpus, work / f"out-emodraw-{precision}", model, args.device, precision, env))
        for kind in onnx_kinds:
            runs.setdefault(f"onnx-{kind}", []).append(
                run_onnx(corpus, work / f"out-onnx-{kind}.parquet", model, kind == "int8", args.threads, cache, env))

    def median_of(key: str) -> dict[str, Any]:
        done = runs[key]
        merged = dict(done[0])
        for field in ("wall_s", "label_s", "peak_rss_mib"):
            merged[field] = statistics.median(r[field] for r in done)
        merged["walls_s"] = [round(r["wall_s"], 2) for r in done]
        return merged

    if pipeline:
        base = median_of("baseline")
        base["first_result_s"] = run_baseline(one_row, work / "out-baseline-1.parquet", model, args.device, args.threads, env)["wall_s"]
        base["model_load_s"] = base["startup_s"]
        base["precision"] = "fp32"
    else:  # the ONNX Runtime script is the reference: its row comes first, and comparisons are to it
        onnx_kinds.remove("fp32")
        base = median_of("onnx-fp32")
        base["first_result_s"] = run_onnx(one_row, work / "out-onnx-fp32-1.parquet", model, False, args.threads, cache, env)["wall_s"]
        base["model_load_s"] = base["startup_s"]
        base["precision"] = "fp32"
        base["tool"] = "ONNX Runtime script (bench/onnx_baseline.py)"
    print(f"  {'baseline' if pipeline else 'onnx fp32 (reference)'}: {base['rows'] / base['wall_s']:.1f} rows/s end to end", flush=True)
    ours = []
    for precision in precisions:
        r = median_of(precision)
        r["first_result_s"] = run_emodraw(one_row, work / f"out-emodraw-{precision}-1", model, args.device, precision, env)["wall_s"]
        r["model_load_s"] = model_load_s(model, args.device, precision, env)
        r.update(agreement(reference_out, work / f"out-emodraw-{precision}"))
        ours.append(r)
        print(f"  emodraw {r['precision']}: {r['rows'] / r['wall_s']:.1f} rows/s end to end", flush=True)
    peers = []
    for kind in onnx_kinds:
        r = median_of(f"onnx-{kind}")
        r["tool"] = "ONNX Runtime script (bench/onnx_baseline.py)"
        r["first_result_s"] = run_onnx(one_row, work / f"out-onnx-{kind}-1.parquet", model, kind == "int8", args.threads, cache, env)["wall_s"]
        r["model_load_s"] = r["startup_s"]
        r.update(agreement(reference_out, work / f"out-onnx-{kind}.parquet"))
        peers.append(r)
        print(f"  onnx {kind}: {r['rows'] / r['wall_s']:.1f} rows/s end to end", flush=True)
    benchmark_s = time.perf_counter() - started
    memory = memory_part(args, work, pool, source, env) if args.memory_rows else []

    results = {
        "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "machine": machine(args.device, args.threads),
        "load_average": {"before": load_before, "after": os.getloadavg()},
        "corpus": {"rows": args.rows, "source": source, "mean_tokens": sum(lengths) / len(lengths), "longest": max(lengths)},
        "model": str(model),
        "benchmark_s": benchmark_s,
        "baseline": {k: v for k, v in base.items() if k != "stdout"},
        "emodraw": [{k: v for k, v in r.items() if k != "stdout"} for r in ours],
        "onnx": [{k: v for k, v in r.items() if k != "stdout"} for r in peers],
        "repeat": args.repeat,
        "reference": args.reference,
        "memory": memory,
    }
    (work / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print()
    print(table(results))
    if cuda:
        print(f"\nGPU utilization (mean while running): baseline {base['gpu_util']}%, "
              + ", ".join(f"emodraw {r['precision']} {r['gpu_util']}%" for r in ours))
    if memory:
        print("\nPeak RSS of emodraw-batch run (tiny model) as the corpus grows: "
              + ", ".join(f"{m['rows']:,} rows {m['peak_rss_mib']:.0f} MiB" for m in memory))
    print(f"\nload average before/after: {load_before} / {os.getloadavg()}; "
          f"benchmark {benchmark_s:.0f}s; all numbers: {work / 'results.json'}")


if __name__ == "__main__":
    main()
