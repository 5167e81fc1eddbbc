"""The commands of `emodraw-batch`: parse the options, call one function below, show the result.

torch, transformers, pyarrow and Prefect load inside the commands, so `--help` is instant.
An EmodrawError becomes one clean paragraph on stderr and exit code 1, never a traceback.
Defaults shown in the help are read from the settings models, never written here.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

import typer

from emodraw_batch.config import RunConfig, default
from emodraw_batch.errors import ConfigError, EmodrawError
# The training defaults depend on the starting point; the help shows the table (no torch is imported).
from emodraw_batch.train.defaults import describe as train_default
from emodraw_flows.settings import EngineConfig

from emodraw_cli.display import DistillProgress, RowProgress, TrainProgress, err, print_distill, print_json, print_report
from emodraw_cli.display import print_summary

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Label the emotion of every text in Parquet corpora with an ALBERT classifier.",
)
run_default = functools.partial(default, RunConfig)
engine_default = functools.partial(default, EngineConfig)


def friendly(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn EmodrawError into a one-paragraph message and exit code 1."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except EmodrawError as exc:
            err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None

    return wrapper


@app.callback()
def _group() -> None:
    """Label the emotion of every text in Parquet corpora with an ALBERT classifier."""


@app.command()
@friendly
def run(
    inputs: list[str] = typer.Argument(..., help="Parquet files, folders or quoted globs (local or s3://, gs://...)."),
    output: str = typer.Option(..., "--output", "-o", help="Output folder (local, or s3://bucket/prefix; credentials from AWS_* env vars): labels/, manifest.json, stats/."),
    model: Optional[str] = typer.Option(None, help=f"Hub id, local checkpoint folder, or `offline` (the distilled model shipped with emodraw-batch) (default: {run_default('model')})."),
    revision: Optional[str] = typer.Option(None, help="Hub revision (branch, tag or commit)."),
    text_column: Optional[str] = typer.Option(None, help=f"Column holding the text (default: {run_default('text_column')})."),
    id_column: Optional[str] = typer.Option(None, help="Optional id column (checked for duplicates)."),
    device: Optional[str] = typer.Option(None, help=f"auto | cpu | cuda | cuda:N (default: {run_default('device')})."),
    precision: Optional[str] = typer.Option(None, help=f"auto | fast | fp32 | bf16 | fp16 | int8 (default: {run_default('precision')} = fp32 on CPU, bf16 on CUDA; fast = the fastest with >= 99% of fp32's labels: bf16 where native, else fp32; int8 = dynamic int8 quantization, CPU only)."),
    runtime: Optional[str] = typer.Option(None, help=f"auto | torch | onnx: what runs the forward pass (default: {run_default('runtime')} = ONNX Runtime for fp32 on the CPU, else torch)."),
    max_length: Optional[int] = typer.Option(None, help=f"Max tokens per text (one model input); longer texts are truncated and flagged, or chunked (default: {run_default('max_length')})."),
    long_texts: Optional[str] = typer.Option(None, help=f"truncate | chunk: texts longer than --max-length: label their first window, or every window and aggregate (default: {run_default('long_texts')})."),
    chunk_overlap: Optional[int] = typer.Option(None, help="Tokens shared by consecutive windows of a chunked text, at most half of --max-length (default: a quarter of --max-length, 32 at 128)."),
    max_chunks: Optional[int] = typer.Option(None, help=f"Windows per text at most; the rest is truncated and flagged (default: {run_default('max_chunks')})."),
    batch_tokens: Optional[int] = typer.Option(None, help="Token budget of one forward pass (rows x longest row) (default: by device)."),
    window_rows: Optional[int] = typer.Option(None, help=f"Rows sorted by length together; bounds memory (default: {run_default('window_rows')})."),
    shard_rows: Optional[int] = typer.Option(None, help=f"Rows per shard (one output file each) (default: {run_default('shard_rows')})."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="TOML config (e.g. configs/default.toml); flags override it."),
    allow_pickle: bool = typer.Option(False, "--allow-pickle", help="Allow pickle-based (.bin) weights. Only for checkpoints you trust."),
    cast_text: bool = typer.Option(False, "--cast-text", help="Cast a non-string text column to string."),
    skip_bad_files: bool = typer.Option(False, "--skip-bad-files", help="Skip unreadable Parquet files (listed in the manifest)."),
    dedup: Optional[bool] = typer.Option(None, "--dedup/--no-dedup", help=f"Label each distinct text once per shard; its repeats get the same result (default: {'--dedup' if run_default('dedup') else '--no-dedup'})."),
    dedup_texts: Optional[int] = typer.Option(None, help=f"Distinct texts a shard remembers for --dedup, about 50 bytes each: a copy of one of the last half of them is always served, an older one runs again (default: {run_default('dedup_texts')})."),
    languages: Optional[str] = typer.Option(None, "--languages", help=f"Label only texts in these languages (ISO 639-1, comma-separated, e.g. en,es); texts confidently detected in another get status `language` and no emotion; `any` labels every row and detects nothing (default: {run_default('languages')})."),
    language_column: Optional[str] = typer.Option(None, "--language-column", help=f"The input's own language column (BCP 47 such as en, pt-BR; Mastodon: language): where it names a language, that decides the row; und, empty and null rows are detected; `none` detects every row (default: {run_default('language_column')})."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Delete an earlier output in DIR and redo everything."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON on stdout."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show the progress bar."),
    group_by: list[str] = typer.Option([], "--group-by", help="Column to break the statistics down by (repeatable)."),
    time_column: Optional[str] = typer.Option(None, help="Timestamp/date column for statistics over time."),
    every: Optional[str] = typer.Option(None, help=f"Time bucket as a polars duration: 1h, 1d, 1w, 1mo (default: {run_default('every')})."),
    report: bool = typer.Option(False, "--report", help="Also draw the charts and HTML page under DIR/charts/ (or --charts)."),
    charts: Optional[Path] = typer.Option(None, "--charts", help="Local folder for --report's charts (needed when --output is s3://...)."),
    engine: Optional[str] = typer.Option(None, help=f"local (this process, one device) | dask (worker processes) (default: {engine_default('engine')})."),
    workers: Optional[int] = typer.Option(None, help="Dask worker processes (default: one per GPU, else cores/4)."),
    address: Optional[str] = typer.Option(None, help="Scheduler of an existing Dask cluster, e.g. tcp://10.0.0.5:8786 (with --engine dask)."),
    retries: Optional[int] = typer.Option(None, help=f"Retries of a failing shard task before the run fails (default: {engine_default('retries')})."),
    verbose: bool = typer.Option(False, "--verbose", help="Also show Prefect's logs of failures the run explains (with their tracebacks)."),
) -> None:
    """Label every text in INPUTS and write labelled Parquet, a manifest and statistics."""
    from emodraw_flows import api

    api.prestart()  # Prefect's temporary server starts on the other core while this process checks and loads
    from emodraw_batch.job.validate import validate
    from emodraw_flows.settings import load_settings  # the run's settings and the engine's, from one TOML file

    cfg, engine_cfg = load_settings(
        config,
        model=model,
        revision=revision,
        text_column=text_column,
        id_column=id_column,
        device=device,
        precision=precision,
        runtime=runtime,
        max_length=max_length,
        long_texts=long_texts,
        chunk_overlap=chunk_overlap,
        max_chunks=max_chunks,
        batch_tokens=batch_tokens,
        window_rows=window_rows,
        shard_rows=shard_rows,
        allow_pickle=allow_pickle or None,
        cast_text=cast_text or None,
        skip_bad_files=skip_bad_files or None,
        dedup=dedup,
        dedup_texts=dedup_texts,
        languages=languages,
        language_column=language_column,
        group_by=tuple(group_by) or None,
        time_column=time_column,
        every=every,
        engine=engine,
        workers=workers,
        address=address,
        retries=retries,
    )
    if report and charts is None:
        from emodraw_batch.files.storage import is_uri

        if is_uri(output):  # fail now, not after the labelling
            raise ConfigError(f"--report draws charts to a local folder, and the output {output!r} is not one. Pass --charts DIR too.")
    job = validate(inputs, output, cfg, overwrite)  # every check, before Prefect starts; writes nothing
    if job.advice:
        import warnings

        from emodraw_batch.inference.device import PrecisionWarning

        err.print(f"[yellow]warning:[/] {job.advice}", highlight=False, soft_wrap=True)
        warnings.filterwarnings("ignore", category=PrecisionWarning)  # said once, not again at the model load
    from emodraw_flows.run import run as run_flow  # Prefect is imported once the model is at work

    with RowProgress(progress and not as_json and sys.stderr.isatty()) as bar:
        bar.start(job.rows, job.finished_rows)
        summary = run_flow(job, engine_cfg, on_rows=bar.update, verbose=verbose)
    print_summary(summary, as_json)
    if report:
        from emodraw_batch.analysis.report import build

        err.print(f"report: {build(job.out, charts)}")


@app.command()
@friendly
def stats(
    output: str = typer.Argument(..., help="Output folder of a finished run (the --output DIR, local or s3://...)."),
    group_by: list[str] = typer.Option([], "--group-by", help="Column to break the statistics down by (repeatable; default: the run's)."),
    time_column: Optional[str] = typer.Option(None, help="Timestamp/date column for statistics over time (default: the run's)."),
    every: Optional[str] = typer.Option(None, help="Time bucket as a polars duration: 1h, 1d, 1w, 1mo (default: the run's, else 1d)."),
    as_json: bool = typer.Option(False, "--json", help="Print the statistics as JSON on stdout."),
) -> None:
    """Recompute DIR/stats/ from DIR/labels and print it (options not given are the run's)."""
    from rich.console import Console

    from emodraw_batch.analysis import stats as st
    from emodraw_batch.files.layout import layout
    from emodraw_batch.analysis.report import console_tables

    out = layout(output)
    options = st.run_options(out)
    if group_by or time_column:  # an explicit breakdown replaces the run's, it is not merged with it
        options = {"group_by": tuple(group_by), "time_column": time_column, "every": options["every"]}
    if every:
        options["every"] = every
    result = st.compute(out, **options)
    summary = st.write(result, out)
    if as_json:
        tables = {c: f.to_dicts() for c, f in result.groups.items()}
        over_time = result.over_time.to_dicts() if result.over_time is not None else None
        print_json({**summary, "groups": tables, "over_time": over_time})
        return
    console = Console()
    for table in console_tables(result):
        console.print(table)
    err.print(f"written: {out.show(out.stats)}")


@app.command()
@friendly
def trend(
    outputs: list[str] = typer.Argument(..., help="Output folders, or a glob of them in the last path part ('out/*'), local or s3://..."),
    as_json: bool = typer.Option(False, "--json", help="Print the runs as JSON on stdout."),
    chart: Optional[Path] = typer.Option(None, "--chart", help="Also draw the shares over the runs as a PNG at this local path."),
    min_change: float = typer.Option(2.0, "--min-change", help="Smallest change of a share, in percentage points, worth flagging."),
    window: int = typer.Option(7, "--window", min=1, help="Runs before the newest pooled as its trailing reference."),
    fail_on_shift: bool = typer.Option(False, "--fail-on-shift", help="Exit with code 3 when an emotion shifted."),
) -> None:
    """Each run's emotion shares and rows, ordered by its date; unfinished runs are listed too.

    The newest run is checked for shifts against the previous one and the trailing window: a share
    that moved both significantly (two-proportion test, Bonferroni over the emotions) and by at
    least --min-change points is flagged."""
    from emodraw_batch.analysis import shift as sh
    from emodraw_batch.analysis import trend as tr

    runs = tr.trend(outputs)
    found = sh.shifts(runs, window=window, min_change=min_change)
    if chart is not None:
        err.print(f"chart: {tr.chart(runs, chart)}")
    if as_json:
        print_json({"runs": tr.to_dicts(runs), "shifts": [s.to_dict() for s in found],
                    "shift_summary": sh.describe(runs, found, window)})
    else:
        _print_trend(runs)
        err.print(sh.describe(runs, found, window), highlight=False, soft_wrap=True)
    if fail_on_shift and any(s.flagged for s in found):
        raise typer.Exit(3)


def _print_trend(runs: list[Any]) -> None:
    from emodraw_batch.analysis import trend as tr
    from rich.console import Console
    from rich.table import Table

    labels = tr.labels_of(runs)
    table = Table("date", "output", "rows", *labels, title="Emotion shares by run")
    for r in runs:
        shares = [f"{r.shares[e]:.1%}" if e in r.shares else "-" for e in labels]
        table.add_row(r.date or "-", r.output, f"{r.rows:,}" if r.rows is not None else "unfinished", *shares)
    Console().print(table)


@app.command()
@friendly
def report(
    output: str = typer.Argument(..., help="Output folder of a finished run (the --output DIR, local or s3://...)."),
    charts: Optional[Path] = typer.Option(None, "--charts", help="Local folder for the charts (default DIR/charts; needed when DIR is s3://...)."),
) -> None:
    """Draw charts (PNG) and an HTML page under DIR/charts/ (or --charts) from DIR/stats/ (computed if missing)."""
    from emodraw_batch.analysis.report import build

    err.print(f"report: {build(output, charts)}")




@app.command()
@friendly
def train(
    output: Path = typer.Option(..., "--output", "-o", help="Folder for the checkpoints: DIR (best), DIR/last, metrics."),
    train_file: Optional[Path] = typer.Option(None, "--train", help="Training data: Parquet, CSV or `text;label` lines."),
    val_file: Optional[Path] = typer.Option(None, "--val", help="Validation data (same formats); picks the best epoch."),
    base: Optional[str] = typer.Option(None, help="Checkpoint to fine-tune: hub id (albert-base-v2) or local folder."),
    from_scratch: Optional[str] = typer.Option(None, "--from-scratch", help="tiny | mini | small | base: a new ALBERT + a tokenizer trained on --train."),
    text_column: Optional[str] = typer.Option(None, help="Text column in Parquet/CSV (default: text)."),
    label_column: Optional[str] = typer.Option(None, help="Label column in Parquet/CSV (default: label)."),
    epochs: Optional[int] = typer.Option(None, help=f"Maximum epochs (default: {train_default('epochs')})."),
    patience: Optional[int] = typer.Option(None, help=f"Stop after this many epochs without a lower val loss (default: {train_default('patience')})."),
    lr: Optional[float] = typer.Option(None, help=f"Peak learning rate of AdamW (default: {train_default('lr')})."),
    batch_size: Optional[int] = typer.Option(None, help=f"Texts per training batch (default: {train_default('batch_size')})."),
    max_length: Optional[int] = typer.Option(None, help="Max tokens per text (default: 128)."),
    seed: Optional[int] = typer.Option(None, help="Seed: the same seed and data give the same model (default: 42)."),
    device: Optional[str] = typer.Option(None, help="auto | cpu | cuda | cuda:N (default: auto)."),
    precision: Optional[str] = typer.Option(None, help="auto | fp32 | bf16 (default: auto = bf16 autocast on CUDA, fp32 on CPU)."),
    warmup_ratio: Optional[float] = typer.Option(None, help=f"Share of the steps with linear warm-up (default: {train_default('warmup_ratio')})."),
    weight_decay: Optional[float] = typer.Option(None, help=f"AdamW weight decay (default: {train_default('weight_decay')})."),
    vocab_size: Optional[int] = typer.Option(None, help=f"Tokenizer vocabulary for --from-scratch (default: {train_default('vocab_size')})."),
    allow_pickle: bool = typer.Option(False, "--allow-pickle", help="Allow a --base with pickle (.bin) weights. Only if you trust it."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in DIR from DIR/last (its settings are reused)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Delete an earlier training run in DIR and start again."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show the progress bars."),
) -> None:
    """Fine-tune (--base) or train from scratch (--from-scratch) an emotion classifier on labelled data.

    Unset options take the defaults of the starting point (fine-tuning, or from scratch by size);
    the values used are recorded in DIR/metrics.json and DIR/last/trainer_state.json.
    """
    from emodraw_batch.train import make_config
    from emodraw_batch.train import train as train_model

    cfg = make_config(
        output, resume, train=str(train_file) if train_file else None, val=str(val_file) if val_file else None,
        base=base, from_scratch=from_scratch, text_column=text_column, label_column=label_column, epochs=epochs,
        patience=patience, lr=lr, batch_size=batch_size, max_length=max_length, seed=seed, device=device,
        precision=precision, warmup_ratio=warmup_ratio, weight_decay=weight_decay, vocab_size=vocab_size,
        allow_pickle=allow_pickle or None,
    )
    with TrainProgress(progress and not as_json and sys.stderr.isatty()) as bar:
        result = train_model(cfg, output, resume=resume, overwrite=overwrite, callbacks=bar)
    if as_json:
        print_json(result.to_dict())
        return
    best = next((r for r in result.history if r["epoch"] == result.best_epoch), None)
    stop = "stopped early (no lower val loss)" if result.stopped_early else f"{len(result.history)} epoch(s)"
    err.print(f"{stop}; best epoch {result.best_epoch}" + (f": val loss {best['val_loss']:.4f}, val accuracy "
              f"{best['val_accuracy']:.4f}, val macro F1 {best['val_macro_f1']:.4f}" if best else ""), highlight=False, soft_wrap=True)
    err.print(f"best model: {output}  (use: emodraw-batch run ... --model {output})\nlast epoch: {output / 'last'}  "
              f"metrics: {output / 'metrics.csv'}", highlight=False, soft_wrap=True)


@app.command()
@friendly
def evaluate(
    model: str = typer.Option(..., help="Hub id or local checkpoint folder (e.g. the --output of train)."),
    data: Path = typer.Option(..., help="Labelled data: Parquet, CSV or `text;label` lines."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Also save report.json, per_class.csv, confusion_matrix.csv/.png here."),
    text_column: str = typer.Option("text", help="Text column in Parquet/CSV."),
    label_column: str = typer.Option("label", help="Label column in Parquet/CSV."),
    device: Optional[str] = typer.Option(None, help=f"auto | cpu | cuda | cuda:N (default: {run_default('device')})."),
    precision: Optional[str] = typer.Option(None, help=f"auto | fp32 | bf16 | fp16 (default: {run_default('precision')} = fp32 on CPU, bf16 on CUDA)."),
    max_length: Optional[int] = typer.Option(None, help=f"Max tokens per text, as in `run` (default: {run_default('max_length')})."),
    batch_tokens: Optional[int] = typer.Option(None, help="Token budget of one forward pass (default: by device)."),
    allow_pickle: bool = typer.Option(False, "--allow-pickle", help="Allow pickle-based (.bin) weights. Only for checkpoints you trust."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON on stdout."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show the progress bar."),
) -> None:
    """Score MODEL on labelled DATA: accuracy, macro/weighted F1, per-class scores, confusion matrix."""
    from emodraw_batch.config import load_config
    from emodraw_batch.analysis.evaluate import evaluate as evaluate_model

    # The same settings (and checks) as `run` for the device, precision, max length and budget.
    cfg = load_config(device=device, precision=precision, max_length=max_length, batch_tokens=batch_tokens)
    with RowProgress(progress and not as_json and sys.stderr.isatty()) as bar:
        result = evaluate_model(
            model, data, output, text_column=text_column, label_column=label_column, device=cfg.device,
            precision=cfg.precision, max_length=cfg.max_length, batch_tokens=cfg.batch_tokens,
            allow_pickle=allow_pickle, on_start=bar.start, on_rows=bar.update,
        )
    if as_json:
        print_json(result)
        return
    print_report(result)
    if output is not None:
        err.print(f"saved: {output / 'report.json'}, per_class.csv, confusion_matrix.csv, confusion_matrix.png")


@app.command()
@friendly
def schedule(
    cron: str = typer.Option("0 2 * * *", help="When to run: a cron expression (default: 02:00 every day)."),
    timezone: str = typer.Option("UTC", help="IANA timezone of the schedule and of {date} (e.g. Europe/Berlin)."),
    inputs: list[str] = typer.Option([], "--input", "-i", help="Input pattern (repeatable), e.g. 'tweets/{date}/*.parquet'."),
    output: Optional[str] = typer.Option(None, "--output", "-o", help="Output folder pattern, e.g. 'out/{date}'."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="TOML run config (e.g. configs/nightly.toml)."),
    model: Optional[str] = typer.Option(None, help="Hub id, local checkpoint folder, or `offline` (the shipped model) (overrides the config)."),
    trend: list[str] = typer.Option([], "--trend", help="After each run, check these outputs (folders or a glob, e.g. 'out/*') for an emotion shift; the result goes into the run's Prefect artifact."),
    name: str = typer.Option("nightly", help="Deployment name (the flow is emodraw-label)."),
    next_runs: Optional[int] = typer.Option(None, "--next", min=1, help="Print the next N run times and their folders, then exit without serving."),
) -> None:
    """Serve the labelling flow as a Prefect deployment on a cron schedule ({date} = each run's scheduled day)."""
    from emodraw_batch.dates import fill_dates
    from emodraw_flows import schedule as sched
    from emodraw_flows.settings import load_settings

    cfg, engine_cfg = load_settings(config, model=model)
    if next_runs:
        for when in sched.next_runs(cron, timezone, next_runs):
            line = when.isoformat()
            if inputs and output:  # the folders that run would read and write
                day = when.date()
                line += f"  {' '.join(fill_dates(p, day) for p in inputs)} -> {fill_dates(output, day)}"
            typer.echo(line)
        return
    if not inputs or not output:
        raise ConfigError("Serving a schedule needs --input PATTERN and --output PATTERN (e.g. --input 'tweets/{date}/*.parquet' --output 'out/{date}').")
    api = sched.require_server()
    deploy = sched.deployment(cron, timezone, inputs, output, cfg, engine_cfg, name, trend)
    err.print(f"serving deployment emodraw-label/{name} at {cron!r} ({timezone}) on {api}; stop with Ctrl-C or SIGTERM")
    from emodraw_cli import process

    sched.serve(deploy, on_stop=process.arm)


@app.command()
@friendly
def distill(
    teacher: str = typer.Option(..., help="The teacher: a checkpoint folder or hub id (e.g. a model fine-tuned with train --base)."),
    texts: list[Path] = typer.Option(..., "--texts", help="Unlabelled texts (repeatable): Parquet/CSV (--text-column), plain or `text;label` lines (labels ignored)."),
    output: Path = typer.Option(..., "--output", "-o", help="Folder: corpus, teacher labels, DIR/student (the student model), distill.json."),
    student_size: Optional[str] = typer.Option(None, help="tiny | mini | small | base: a new ALBERT with a tokenizer trained on the texts (default: mini, under 5 MB)."),
    student_base: Optional[str] = typer.Option(None, help="Or a pretrained ALBERT checkpoint to start the student from."),
    val: Optional[Path] = typer.Option(None, help="Labelled validation data for early stopping (default: hold out --val-share of the texts)."),
    test: Optional[Path] = typer.Option(None, help="Labelled test data: accuracy and macro F1 of teacher and student."),
    text_column: Optional[str] = typer.Option(None, help="Text column in Parquet/CSV (default: text)."),
    label_column: Optional[str] = typer.Option(None, help="Label column of --val/--test in Parquet/CSV (default: label)."),
    val_share: Optional[float] = typer.Option(None, help="Share of the texts held out when there is no --val (default: 0.1)."),
    temperature: Optional[float] = typer.Option(None, help="Softmax temperature of the soft targets (default: 2)."),
    hard_weight: Optional[float] = typer.Option(None, help="Share of true-label cross-entropy in the loss of labelled --val rows (default: 0.5)."),
    epochs: Optional[int] = typer.Option(None, help="Maximum epochs (default: as train, by student size)."),
    patience: Optional[int] = typer.Option(None, help="Stop after this many epochs without a lower val loss (default: 3)."),
    lr: Optional[float] = typer.Option(None, help="Peak learning rate (default: as train, by student size)."),
    batch_size: Optional[int] = typer.Option(None, help="Texts per training batch (default: as train)."),
    max_length: Optional[int] = typer.Option(None, help="Max tokens per text, teacher and student (default: 128)."),
    vocab_size: Optional[int] = typer.Option(None, help="Student tokenizer vocabulary (default: 8000)."),
    seed: Optional[int] = typer.Option(None, help="Seed of the held-out split and the student (default: 42)."),
    device: Optional[str] = typer.Option(None, help="auto | cpu | cuda | cuda:N (default: auto)."),
    allow_pickle: bool = typer.Option(False, "--allow-pickle", help="Allow pickle (.bin) weights. Only if you trust them."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in DIR (teacher labels and student training)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Delete an earlier distill run in DIR and start again."),
    as_json: bool = typer.Option(False, "--json", help="Print distill.json on stdout."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show the progress bars."),
) -> None:
    """Distil TEACHER into a small ALBERT student on unlabelled texts; compare the two (DIR/distill.json)."""
    from emodraw_batch.train.distill import distill as run_distill
    from emodraw_batch.train.distill import make_config

    cfg = make_config(
        output, resume, teacher=teacher, texts=[str(t) for t in texts], student_size=student_size,
        student_base=student_base, val=str(val) if val else None, test=str(test) if test else None,
        text_column=text_column, label_column=label_column, val_share=val_share, temperature=temperature,
        hard_weight=hard_weight, epochs=epochs, patience=patience, lr=lr, batch_size=batch_size,
        max_length=max_length, vocab_size=vocab_size, seed=seed, device=device, allow_pickle=allow_pickle or None,
    )
    with DistillProgress(progress and not as_json and sys.stderr.isatty()) as bar:
        report = run_distill(cfg, output, resume=resume, overwrite=overwrite, callbacks=bar, on_rows=bar.update)
    if as_json:
        print_json(report)
        return
    print_distill(report, output)


def main() -> None:  # console-script entry point
    """Run the command, then exit without tearing the interpreter down, and never hang on the way out.

    SIGTERM is Ctrl-C, and a stop is over within process.STOP_SECONDS (emodraw_cli/process.py).
    After the command, the threads this process owns are closed, the others get a bounded join, the
    exit handlers run as usual (Prefect flushes its logs and events and stops its temporary server),
    then the process ends with os._exit: the ~1.8 s Python spends freeing torch, Prefect and
    thousands of modules buys nothing once every output is written and closed (bench/CPU.md).
    """
    import atexit
    import os
    import signal

    from emodraw_cli import process

    process.install()
    try:
        app()
        code: Any = 0
    except SystemExit as exc:
        code = exc.code
    except KeyboardInterrupt:  # click turns it into "Aborted!" and exit 1; seen here before click runs
        code = 1
    signum = process.stopped_by()
    if signum is not None:  # SIGTERM or Ctrl-C: Prefect has marked the flow run crashed, the lock is released
        err.print(f"stopped by {signal.Signals(signum).name}: {process.KEPT}", highlight=False, soft_wrap=True)
        code = 128 + signum
    process.close_owned()
    left = process.join_threads(1.0 if signum is not None else process.JOIN_SECONDS)
    if left and signum is None:  # on a stop, the shard being labelled is dropped by design
        err.print(f"[yellow]warning:[/] exiting with thread(s) still running: {', '.join(left)}", highlight=False)
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    if isinstance(code, str):  # sys.exit("message") prints the message, as a normal exit would
        print(code, file=sys.stderr, flush=True)
    process.kill_descendants()  # a Dask worker or server that outlived its owner: nothing is left running
    os._exit(code if isinstance(code, int) else (0 if code is None else 1))


if __name__ == "__main__":
    main()
