"""What the command line shows: progress bars, the end-of-run summary, evaluation tables.

Everything goes to stderr except `--json` output, so stdout stays machine-readable.
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

from rich.console import Console

if TYPE_CHECKING:
    from typing_extensions import Self

err = Console(stderr=True)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, default=str) + "\n")


def print_summary(summary: dict[str, Any], as_json: bool) -> None:
    """The end-of-run summary: a table for people, JSON on stdout for machines."""
    if as_json:
        print_json(summary)
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
        err.print(f"not classified (no text, or another language): {other}")
    if summary.get("repeats"):
        err.print(f"served by a repeat (text labelled before in its shard, not run again): {summary['repeats']:,} rows")
    if summary["truncated"]:
        err.print(f"truncated to the max length: {summary['truncated']:,} rows")
    if summary.get("duplicate_ids"):
        err.print(f"[yellow]warning:[/] {summary['duplicate_ids']:,} rows share their id with another row (kept, not dropped)")
    if summary.get("resumed"):
        err.print(f"resumed: {summary['resumed']} shard(s) were already complete from an earlier run")
    for skipped in summary.get("skipped_files", []):
        err.print(f"[yellow]skipped unreadable file[/] {skipped['path']}: {skipped['reason']}")
    err.print(f"output: {summary['output_dir']}/labels  manifest: {summary['output_dir']}/manifest.json")


class _Live:
    """A rich progress display that shows while in a `with` block."""

    progress: Any

    def __enter__(self) -> Self:
        self.progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.stop()


class RowProgress(_Live):
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

    def start(self, total: int, done: int = 0) -> None:
        """`done`: rows an earlier run of the same job already labelled (resumed, not redone)."""
        self.progress.update(self.task, total=total, completed=done)

    def update(self, rows: int) -> None:
        self.progress.advance(self.task, rows)
        speed = self.progress.tasks[0].speed
        self.progress.update(self.task, rate=f"{speed:,.0f}" if speed else "-")


class TrainProgress(_Live):
    """Training progress on stderr: a bar over the batches of each epoch, then one line per epoch."""

    def __init__(self, enabled: bool) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
        from rich.progress import TimeRemainingColumn

        self.progress = Progress(
            TextColumn("epoch {task.fields[epoch]}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"), TimeElapsedColumn(), TimeRemainingColumn(),
            console=err, disable=not enabled, transient=True,
        )
        self.task: Any = None

    def epoch_start(self, epoch: int, epochs: int, batches: int) -> None:
        if self.task is not None:
            self.progress.remove_task(self.task)
        self.task = self.progress.add_task("train", total=batches, epoch=f"{epoch}/{epochs}", loss="-")

    def batch_end(self, loss: float) -> None:
        self.progress.update(self.task, advance=1, loss=f"{loss:.4f}")

    def epoch_end(self, row: dict[str, float], best: bool) -> None:
        self.progress.console.print(
            f"epoch {row['epoch']}: train loss {row['train_loss']:.4f}  val loss {row['val_loss']:.4f}  "
            f"val accuracy {row['val_accuracy']:.4f}  val macro F1 {row['val_macro_f1']:.4f}  "
            f"({row['seconds']:.0f}s){'  [green]best, saved[/]' if best else ''}",
            highlight=False, soft_wrap=True,
        )


def print_report(result: dict[str, Any]) -> None:
    """Per-class table and the headline scores on stderr."""
    from rich.table import Table

    table = Table(title=f"{result['n']:,} texts: accuracy {result['accuracy']:.4f}, macro F1 {result['macro_f1']:.4f}, "
                        f"weighted F1 {result['weighted_f1']:.4f}")
    for column in ("label", "precision", "recall", "F1", "support"):
        table.add_column(column, justify="left" if column == "label" else "right")
    for label, s in result["per_class"].items():
        table.add_row(label, f"{s['precision']:.4f}", f"{s['recall']:.4f}", f"{s['f1']:.4f}", f"{s['support']:,}")
    err.print(table)
    matrix = Table(title="confusion matrix (rows: true, columns: predicted)")
    matrix.add_column("")
    for label in result["labels"]:
        matrix.add_column(label, justify="right")
    for label, row in zip(result["labels"], result["confusion_matrix"]):
        matrix.add_row(label, *(f"{v:,}" for v in row))
    err.print(matrix)
    if result.get("rows_dropped"):
        err.print(f"skipped (no text or no label): {result['rows_dropped']:,} rows")


class DistillProgress(TrainProgress):
    """The teacher's labelling (rows), then the student's epochs, in one display."""

    rows: Any = None

    def update(self, rows: int) -> None:
        if self.rows is None:
            self.rows = self.progress.add_task("teacher", total=None, epoch="- teacher labelling", loss="-")
        self.progress.update(self.rows, advance=rows)


def print_distill(report: dict[str, Any], output: Any) -> None:
    """Teacher vs student: agreement, test scores, size and speed."""
    from rich.table import Table

    table = Table(title=f"agreement with the teacher on {report['n_held']:,} {report['agreement_on']} texts: "
                        f"{report['agreement']:.4f}")
    for column in ("", "teacher", "student"):
        table.add_column(column, justify="left" if not column else "right")
    t, s = report["teacher"], report["student"]
    for name, key, fmt in (("test accuracy", "test_accuracy", "{:.4f}"), ("test macro F1", "test_macro_f1", "{:.4f}"),
                           ("parameters", "parameters", "{:,}"), ("MB on disk", "bytes", "{:.2f}"),
                           ("rows/s", "rows_per_s", "{:,.0f}")):
        if key in t:
            table.add_row(name, *(fmt.format(m[key] / 1e6 if key == "bytes" else m[key]) for m in (t, s)))
    err.print(table)
    err.print(f"student: {output / 'student'}  (use: emodraw-batch run ... --model {output / 'student'})  "
              f"report: {output / 'distill.json'}", highlight=False, soft_wrap=True)
