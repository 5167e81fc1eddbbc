"""The `emodraw-batch` command line.

Only typer and rich are imported at start-up; torch, transformers, pyarrow and
Prefect load inside the commands, so `--help` is instant. An EmodrawError
becomes one clean paragraph on stderr and exit code 1, never a traceback.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console

from .errors import EmodrawError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Label the emotion of every text in Parquet corpora with an ALBERT classifier.",
)
err = Console(stderr=True)


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


def print_summary(summary: dict[str, Any], as_json: bool) -> None:
    """The end-of-run summary: a table for people, JSON on stdout for machines."""
    if as_json:
        sys.stdout.write(json.dumps(summary, default=str) + "\n")
        return
    from rich.table import Table

    table = Table(title=f"{summary['rows']:,} rows in {summary['seconds']:.1f}s ({summary['rows_per_s']:,.0f} rows/s)")
    table.add_column("emotion")
    table.add_column("rows", justify="right")
    table.add_column("share", justify="right")
    for emotion, count in summary["emotions"].items():
        table.add_row(emotion, f"{count:,}", f"{summary['shares'][emotion]:.1%}")
    err.print(table)
    other = {k: v for k, v in summary["status"].items() if k != "ok"}
    if other:
        err.print(f"not classified (no text): {other}")
    if summary["truncated"]:
        err.print(f"truncated to the max length: {summary['truncated']:,} rows")
    if summary.get("resumed"):
        err.print(f"resumed: {summary['resumed']} shard(s) were already complete from an earlier run")
    for skipped in summary.get("skipped_files", []):
        err.print(f"[yellow]skipped unreadable file[/] {skipped['path']}: {skipped['reason']}")
    err.print(f"output: {summary['output_dir']}/labels  manifest: {summary['output_dir']}/manifest.json")


class RowProgress:
    """A rich progress bar over rows with a rows/s column; `update(n)` is the runner's callback."""

    def __init__(self, enabled: bool) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn
        from rich.progress import TimeElapsedColumn, TimeRemainingColumn

        self.progress = Progress(
            TextColumn("labelling"),
            BarColumn(),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[rate]} rows/s"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=err,
            disable=not enabled,
        )
        self.task = self.progress.add_task("rows", total=None, rate="-")

    def start(self, total: int) -> None:
        self.progress.update(self.task, total=total)

    def update(self, rows: int) -> None:
        self.progress.advance(self.task, rows)
        speed = self.progress.tasks[0].speed
        self.progress.update(self.task, rate=f"{speed:,.0f}" if speed else "-")

    def __enter__(self) -> RowProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.stop()


@app.callback()
def _group() -> None:
    """Label the emotion of every text in Parquet corpora with an ALBERT classifier."""


@app.command()
@friendly
def run(
    inputs: list[str] = typer.Argument(..., help="Parquet files, folders or quoted globs (local or s3://, gs://...)."),
    output: Path = typer.Option(..., "--output", "-o", help="Output folder: labels/, manifest.json, stats/."),
    model: Optional[str] = typer.Option(None, help="Hub id or local checkpoint folder (default: bhadresh-savani/albert-base-v2-emotion)."),
    revision: Optional[str] = typer.Option(None, help="Hub revision (branch, tag or commit)."),
    text_column: Optional[str] = typer.Option(None, help="Column holding the text (default: text)."),
    id_column: Optional[str] = typer.Option(None, help="Optional id column (checked for duplicates)."),
    device: Optional[str] = typer.Option(None, help="auto | cpu | cuda | cuda:N (default: auto)."),
    precision: Optional[str] = typer.Option(None, help="auto | fp32 | bf16 | fp16 (default: auto = fp32 on CPU, bf16 on CUDA)."),
    max_length: Optional[int] = typer.Option(None, help="Max tokens per text; longer texts are truncated and flagged (default: 128)."),
    batch_tokens: Optional[int] = typer.Option(None, help="Token budget of one forward pass (rows x longest row) (default: by device)."),
    window_rows: Optional[int] = typer.Option(None, help="Rows sorted by length together; bounds memory (default: 50000)."),
    shard_rows: Optional[int] = typer.Option(None, help="Rows per shard (one output file each) (default: 1000000)."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="TOML config (e.g. configs/default.toml); flags override it."),
    allow_pickle: bool = typer.Option(False, "--allow-pickle", help="Allow pickle-based (.bin) weights. Only for checkpoints you trust."),
    cast_text: bool = typer.Option(False, "--cast-text", help="Cast a non-string text column to string."),
    skip_bad_files: bool = typer.Option(False, "--skip-bad-files", help="Skip unreadable Parquet files (listed in the manifest)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Delete an earlier output in DIR and redo everything."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON on stdout."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show the progress bar."),
) -> None:
    """Label every text in INPUTS and write labelled Parquet plus a manifest."""
    from .config import load_config
    from .runner import run as run_job

    cfg = load_config(
        config,
        model=model,
        revision=revision,
        text_column=text_column,
        id_column=id_column,
        device=device,
        precision=precision,
        max_length=max_length,
        batch_tokens=batch_tokens,
        window_rows=window_rows,
        shard_rows=shard_rows,
        allow_pickle=allow_pickle or None,
        cast_text=cast_text or None,
        skip_bad_files=skip_bad_files or None,
    )
    with RowProgress(progress and not as_json and sys.stderr.isatty()) as bar:
        summary = run_job(
            inputs, output, cfg, overwrite, on_plan=lambda p: bar.start(sum(s.rows for s in p.todo)), on_rows=bar.update
        )
    print_summary(summary.to_dict(), as_json)


def main() -> None:  # console-script entry point
    app()


if __name__ == "__main__":
    main()
