"""Charts and an HTML page from `DIR/stats/`, plus the terminal tables of `emodraw-batch stats`.

`build(DIR)` draws PNGs under `DIR/charts/`: overall shares (bars), shares over
time (lines, with rows per bucket below) when the statistics have a time
column, and one chart of 100%-stacked bars per group-by column. Every chart
gives an emotion the same colour. `DIR/charts/report.html` shows them with the
summary table; it has no scripts and links only the PNGs beside it. An output in an object
store (s3://...) has its charts drawn to a local folder given as `charts_dir` (`--charts DIR`).

matplotlib is used through `Figure` objects (no pyplot), so nothing needs a
display and no global state leaks between charts.
"""

from __future__ import annotations

import html
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from emodraw_batch.analysis import stats as st
from emodraw_batch.emotions import COLORS
from emodraw_batch.atomic import replacing
from emodraw_batch.errors import OutputError
from emodraw_batch.files.layout import Layout, layout
from emodraw_batch.text import OK

if TYPE_CHECKING:
    import polars as pl
    from matplotlib.figure import Figure
    from rich.table import Table

MAX_GROUPS = 25  # bars per group chart; more would not be readable at a glance
_SPARE_COLORS = ("#59A14F", "#76B7B2", "#9C755F", "#BAB0AC", "#17BECF", "#BCBD22", "#7F7F7F")


def colors(labels: list[str]) -> dict[str, str]:
    """Fixed colours for the six emotions; other labels get spare colours in label order."""
    spare = iter(_SPARE_COLORS * (len(labels) // len(_SPARE_COLORS) + 1))
    return {label: COLORS.get(label) or next(spare) for label in labels}


def ensure_stats(out_dir: str | Path | Layout) -> dict[str, Any]:
    """`DIR/stats/summary.json`, computing the statistics first (with the run's options) when missing."""
    out = layout(out_dir)
    if not out.is_file(out.stats_summary):
        return st.write(st.compute(out, **st.run_options(out)), out)
    return st.read_summary(out)


def build(out_dir: str | Path | Layout, charts_dir: str | Path | None = None) -> Path:
    """Draw every chart and the HTML page under `charts_dir` (default `DIR/charts/`); return the page's path.

    Charts are local files: an output in an object store needs a local `charts_dir`.
    """
    out = layout(out_dir)
    if charts_dir is None:
        if out.remote:
            raise OutputError(
                f"The output {out.uri!r} is in an object store; charts are drawn to a local folder. "
                "Pass one with --charts DIR (e.g. --charts ./charts)."
            )
        charts_dir = out.show(out.charts)
    target = Path(charts_dir)
    summary = ensure_stats(out)
    palette = colors(summary["labels"])
    charts: list[tuple[str, str]] = []
    # A new folder swapped in whole: charts of an earlier --group-by never linger.
    with replacing(target) as folder:
        folder.mkdir()
        _save(overall_chart(summary, palette), folder / "overall.png")
        charts.append(("overall.png", "Emotion shares over all classified rows"))
        if summary.get("time"):
            over_time = st.read_table(out, summary["time"]["table"])
            _save(time_chart(over_time, summary, palette), folder / "over_time.png")
            charts.append(("over_time.png", f"Emotion shares per {summary['time']['every']} of {summary['time']['column']}"))
        for column, info in summary.get("group_by", {}).items():
            name = Path(info["table"]).with_suffix(".png").name
            _save(group_chart(st.read_table(out, info["table"]), column, summary, palette), folder / name)
            charts.append((name, f"Emotion shares by {column}"))
        (folder / "report.html").write_text(render_html(summary, charts, palette, out.uri))
    return target / "report.html"


def _save(fig: Figure, path: Path) -> None:
    fig.savefig(path, dpi=110, bbox_inches="tight", facecolor="white")


def _figure(width: float, height: float) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _style(ax: Any) -> None:
    ax.spines[["top", "right"]].set_visible(False)
    ax.grid(axis="x", color="#dddddd", linewidth=0.8)
    ax.set_axisbelow(True)


def overall_chart(summary: dict[str, Any], palette: dict[str, str]) -> Figure:
    """Horizontal bars: the share of each emotion, annotated with share and count."""
    rows = summary["overall"]
    fig = _figure(8, 1.6 + 0.45 * len(rows))
    ax = fig.add_subplot()
    names = [r["emotion"] for r in rows][::-1]  # first label on top
    shares = [100 * (r["share"] or 0.0) for r in rows][::-1]
    counts = [r["count"] for r in rows][::-1]
    ax.barh(names, shares, color=[palette[n] for n in names], height=0.7)
    for y, (share, count) in enumerate(zip(shares, counts)):
        ax.text(share + 0.5, y, f"{share:.1f}%  ({count:,})", va="center", fontsize=9)
    ax.set_xlim(0, max(shares + [1.0]) * 1.3)
    ax.set_xlabel("share of classified rows (%)")
    ax.set_ylabel("emotion")
    _style(ax)
    unclassified = sum(summary["unclassified"].values())
    ax.set_title(
        f"Emotion shares: {summary['classified']:,} classified rows"
        + (f" ({unclassified:,} not classified, not counted)" if unclassified else ""),
        loc="left",
    )
    return fig


def time_chart(over_time: pl.DataFrame, summary: dict[str, Any], palette: dict[str, str]) -> Figure:
    """Share of each emotion per time bucket (lines; gaps at empty buckets) over rows per bucket (bars)."""
    import matplotlib.dates as mdates
    import polars as pl

    time = summary["time"]
    fig = _figure(10, 6)
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    buckets = over_time["bucket"].unique().sort()
    markers = "o" if len(buckets) <= 60 else None
    for label in summary["labels"]:
        one = over_time.filter(pl.col("emotion") == label).sort("bucket")
        share = (one["share"] * 100).fill_null(float("nan"))  # NaN draws a gap at empty buckets
        top.plot(
            one["bucket"].to_list(), share.to_list(), color=palette[label], label=label,
            marker=markers, markersize=3, linewidth=1.8,
        )
    top.set_ylabel("share of classified rows (%)")
    top.set_ylim(0, 100)
    top.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, title="emotion")
    top.set_title(f"Emotion shares per {time['every']} of {time['column']}", loc="left")
    totals = over_time.group_by("bucket").agg(pl.col("count").sum()).sort("bucket")
    x = totals["bucket"].to_list()
    # Bars almost one bucket wide (the first bucket shifted by `every`, minus itself, in matplotlib day units),
    # centred on the bucket start like the line points above them.
    step = mdates.date2num(over_time["bucket"].head(1).dt.offset_by(time["every"]).to_list()[0]) - mdates.date2num(x[0])
    bottom.bar(x, totals["count"].to_list(), width=0.85 * step, color="#888888")
    bottom.set_ylabel("classified rows")
    bottom.set_xlabel(f"{time['column']} (buckets of {time['every']}; empty buckets show as gaps)")
    bottom.xaxis.set_major_formatter(mdates.ConciseDateFormatter(bottom.xaxis.get_major_locator()))
    for ax in (top, bottom):
        _style(ax)
        ax.grid(axis="y", color="#dddddd", linewidth=0.8)
    return fig


def group_chart(table: pl.DataFrame, column: str, summary: dict[str, Any], palette: dict[str, str]) -> Figure:
    """One 100%-stacked bar per group (the largest MAX_GROUPS by classified rows)."""
    import polars as pl

    labels = summary["labels"]
    sizes = table.group_by(column).agg(pl.col("count").sum().alias("n")).sort("n", column, descending=[True, False])
    shown = sizes.head(MAX_GROUPS)
    fig = _figure(10, 1.8 + 0.42 * max(shown.height, 1))
    ax = fig.add_subplot()
    names = [f"{_fmt(g)} (n={n:,})" for g, n in shown.iter_rows()][::-1]  # largest on top
    groups = shown[column].to_list()[::-1]
    left = [0.0] * len(groups)
    for label in labels:
        shares = dict(table.filter(pl.col("emotion") == label).select(column, "share").iter_rows())
        width = [100 * (shares.get(g) or 0.0) for g in groups]
        ax.barh(names, width, left=left, color=palette[label], label=label, height=0.75)
        for y, (x0, w) in enumerate(zip(left, width)):
            if w >= 8:  # only label segments wide enough to hold the text
                ax.text(x0 + w / 2, y, f"{w:.0f}%", ha="center", va="center", fontsize=8)
        left = [a + b for a, b in zip(left, width)]
    ax.set_xlim(0, 100)
    ax.set_ylim(-0.6, len(groups) - 0.4)  # no empty band above and below the bars
    ax.set_xlabel("share of classified rows (%)")
    ax.set_ylabel(column)
    _style(ax)
    ax.legend(loc="lower left", bbox_to_anchor=(0, 1.0), ncols=min(len(labels), 6), frameon=False)
    more = f" (largest {MAX_GROUPS} of {sizes.height:,} groups)" if sizes.height > MAX_GROUPS else ""
    fig.suptitle(f"Emotion shares by {column}{more}", x=0.01, ha="left")
    return fig


def _fmt(value: Any) -> str:
    """A group value or bucket start as people read it."""
    if value is None:
        return "(missing)"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M %Z").strip()
    return str(value)


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.1%}"


def _num(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


_CSS = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 2rem auto; max-width: 1100px; color: #222; padding: 0 1rem; }
table { border-collapse: collapse; margin: 0.5rem 0 1.5rem; }
th, td { padding: 0.3rem 0.8rem; border-bottom: 1px solid #ddd; text-align: right; }
th:first-child, td:first-child { text-align: left; }
.swatch { display: inline-block; width: 0.8em; height: 0.8em; margin-right: 0.4em; border-radius: 2px; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.5rem 0 1.5rem; }
.muted { color: #666; }
"""


def render_html(summary: dict[str, Any], charts: list[tuple[str, str]], palette: dict[str, str], out_dir: str | Path) -> str:
    """One page: totals, the overall table, then every chart (relative links to the PNGs beside it)."""
    e = html.escape
    unclassified = ", ".join(f"{k}: {v:,}" for k, v in sorted(summary["unclassified"].items())) or "none"
    rows = "\n".join(
        f'<tr><td><span class="swatch" style="background:{palette[r["emotion"]]}"></span>{e(r["emotion"])}</td>'
        f'<td>{r["count"]:,}</td><td>{_pct(r["share"])}</td><td>{_num(r["mean_score"])}</td>'
        f'<td>{_num(r["median_score"])}</td></tr>'
        for r in summary["overall"]
    )
    extra = []
    if summary.get("time"):
        t = summary["time"]
        extra.append(
            f"<li>Time: <b>{e(t['column'])}</b> in buckets of {e(t['every'])}, {e(str(t['first']))} to "
            f"{e(str(t['last']))}: {t['buckets']:,} buckets, {t['empty_buckets']:,} empty; "
            f"{t['rows_without_time']:,} classified rows have no time.</li>"
        )
    if summary.get("languages"):
        langs = ", ".join(f"{e(k)}: {v:,}" for k, v in summary["languages"].items())
        extra.append(f"<li>Rows by language (the input's own or detected; None = unsure or no text): {langs} (table stats/languages.parquet).</li>")
    for column, info in summary.get("group_by", {}).items():
        extra.append(f"<li>Grouped by <b>{e(column)}</b>: {info['groups']:,} groups (table stats/{e(info['table'])}).</li>")
    images = "\n".join(f'<h2>{e(title)}</h2>\n<img src="{e(name)}" alt="{e(title)}">' for name, title in charts)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Emotion report: {e(str(out_dir).rstrip("/").rsplit("/", 1)[-1])}</title>
<style>{_CSS}</style>
</head>
<body>
<h1>Emotion report</h1>
<p class="muted">Output folder {e(str(out_dir))}. Shares are over classified rows only.</p>
<ul>
<li>Rows: <b>{summary['rows']:,}</b>; classified: <b>{summary['classified']:,}</b>;
not classified (no text, or another language): {e(unclassified)}.</li>
{chr(10).join(extra)}
</ul>
<h2>Summary</h2>
<table>
<thead><tr><th>emotion</th><th>rows</th><th>share</th><th>mean score</th><th>median score</th></tr></thead>
<tbody>
{rows}
</tbody>
</table>
{images}
</body>
</html>
"""


def console_tables(stats: st.Stats, max_rows: int = 30) -> list[Table]:
    """Rich tables for the terminal: overall, then per group and per bucket as emotion-share columns."""
    import polars as pl
    from rich.table import Table

    classified = stats.classified
    unclassified = {s: n for s, n in stats.status.iter_rows() if s != OK}
    caption = f"{stats.rows:,} rows; not classified (no text, or another language): {unclassified or 'none'}"
    overall = Table(title=f"Emotions over {classified:,} classified rows", caption=caption)
    for name in ("emotion", "rows", "share", "mean score", "median score"):
        overall.add_column(name, justify="left" if name == "emotion" else "right")
    for r in stats.overall.iter_rows(named=True):
        overall.add_row(r["emotion"], f"{r['count']:,}", _pct(r["share"]), _num(r["mean_score"]), _num(r["median_score"]))
    tables = [overall]

    def wide(frame: pl.DataFrame, key: str, title: str, sort_by_size: bool) -> Table:
        sizes = frame.group_by(key).agg(pl.col("count").sum().alias("n"))
        sizes = sizes.sort("n", key, descending=[True, False]) if sort_by_size else sizes.sort(key)
        shown = sizes.head(max_rows) if sort_by_size else sizes.tail(max_rows)
        note = f" ({'largest' if sort_by_size else 'last'} {max_rows} of {sizes.height:,})" if sizes.height > max_rows else ""
        table = Table(title=title + note)
        table.add_column(key, no_wrap=True)
        table.add_column("rows", justify="right")
        for label in stats.labels:
            table.add_column(label, justify="right")
        for value, n in shown.iter_rows():
            shares = dict(frame.filter(pl.col(key).eq_missing(value)).select("emotion", "share").iter_rows())
            table.add_row(_fmt(value), f"{n:,}", *(_pct(shares.get(label, 0.0)) if n else "–" for label in stats.labels))
        return table

    if stats.languages is not None:
        langs = Table(title="Rows by language (the input's own or detected; None = unsure or no text)")
        for name in ("lang", "rows", "classified"):
            langs.add_column(name, justify="left" if name == "lang" else "right")
        for lang, n, classified_rows in stats.languages.head(max_rows).iter_rows():
            langs.add_row(_fmt(lang), f"{n:,}", f"{classified_rows:,}")
        tables.append(langs)
    for column, frame in stats.groups.items():
        tables.append(wide(frame, column, f"Emotion shares by {column}", sort_by_size=True))
    if stats.over_time is not None:
        title = f"Emotion shares per {stats.every} of {stats.time_column}"
        tables.append(wide(stats.over_time, "bucket", title, sort_by_size=False))
    return tables
