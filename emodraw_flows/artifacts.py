"""Each flow run's results in Prefect's UI: a table and a paragraph, under keys stable per deployment.

Keys derive from the deployment's name (`emodraw-<deployment>-emotions`, `...-summary`), or for a
run started by hand from its output folder, so Prefect's UI shows each key's history night after
night. Publishing them never fails the run: an error is logged once and the run goes on.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

# Prefect's rule for artifact keys: lower-case letters, digits and dashes.
_NOT_KEY = re.compile(r"[^a-z0-9]+")


def key_base(deployment: str | None, output: str) -> str:
    """`emodraw-<deployment>` for a scheduled run, `emodraw-out-<output folder>` for one started by hand."""
    name = f"emodraw-{deployment}" if deployment else f"emodraw-out-{output}"
    return _NOT_KEY.sub("-", name.lower()).strip("-")[:100].rstrip("-")


def emotion_table(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per emotion (count, share), then the statuses and the run's figures."""
    rows: list[dict[str, Any]] = [{"what": f"emotion: {e}", "value": n, "share": summary["shares"].get(e)}
                                  for e, n in summary["emotions"].items()]
    rows += [{"what": f"status: {s}", "value": n, "share": None} for s, n in sorted(summary["status"].items())]
    workers = summary.get("workers") or {}
    rows += [{"what": "rows", "value": summary["rows"], "share": None},
             {"what": "rows/s", "value": summary["rows_per_s"], "share": None},
             {"what": "shards", "value": summary["outputs"], "share": None},
             {"what": "workers", "value": len(workers), "share": None}]
    return rows


def shift_summary(specs: list[str]) -> str | None:
    """The shift check of the newest of these outputs (emodraw_batch.analysis.shift); None if it cannot run."""
    from prefect import get_run_logger

    from emodraw_batch.analysis import shift, trend

    try:
        runs = trend.trend(specs)
        return shift.describe(runs, shift.shifts(runs))
    except Exception as exc:  # noqa: BLE001 - a check of past runs must not fail tonight's run
        get_run_logger().warning("Could not check %s for an emotion shift (%s: %s).", specs, type(exc).__name__, exc)
        return None


def paragraph(summary: dict[str, Any], inputs: list[str], model: dict[str, Any] | None, report: str | None) -> str:
    """The run in one paragraph of Markdown."""
    top = ", ".join(f"{e} {share:.1%}" for e, share in list(summary["shares"].items())[:3]) or "no classified rows"
    used = f"`{model.get('model')}` ({model.get('precision')}, {model.get('device')})" if model else "the model"
    text = (f"Labelled **{summary['rows']:,} rows** of {', '.join(f'`{i}`' for i in inputs)} into "
            f"`{summary['output_dir']}` with {used} in {summary['seconds']:.0f} s ({summary['rows_per_s']:,.0f} rows/s); "
            f"{summary['resumed']} shard(s) were already done. Most frequent: {top}.")
    if report:
        text += f" Report: `{report}`."
    return text


def publish(summary: dict[str, Any], inputs: list[str], model: dict[str, Any] | None,
            read_model: Callable[[], dict[str, Any]], report: str | None = None, shift: str | None = None) -> None:
    """Create this run's table and markdown artifacts; log a failure once instead of raising.

    `model` is what labelled this run's shards; None when every shard was done before, and then
    `read_model()` reads it from the output files.
    """
    from prefect import get_run_logger
    from prefect.artifacts import create_markdown_artifact, create_table_artifact
    from prefect.runtime import deployment

    try:
        model = model or read_model()
        base = key_base(deployment.name, summary["output_dir"])
        create_table_artifact(emotion_table(summary), key=f"{base}-emotions",
                              description=f"Emotions of {summary['output_dir']}")
        text = paragraph(summary, inputs, model, report) + (f"\n\n{shift}" if shift else "")
        create_markdown_artifact(text, key=f"{base}-summary",
                                 description=f"emodraw-batch run into {summary['output_dir']}")
    except Exception as exc:  # noqa: BLE001 - the labels are written; a UI extra must not fail the run
        get_run_logger().warning("Could not publish the run's artifacts to Prefect (%s: %s); the run itself is complete.",
                                 type(exc).__name__, exc)
