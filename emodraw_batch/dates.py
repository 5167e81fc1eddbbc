"""`{date}` and `{yesterday}` in input and output patterns, filled from a run's day in a timezone."""

from __future__ import annotations

import datetime as dt
import re
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from emodraw_batch.errors import ConfigError

# {date}, {yesterday}, optionally with a strftime format: {date:%Y/%m/%d}. Other braces are left alone.
_PLACEHOLDER = re.compile(r"\{(date|yesterday)(?::([^{}]+))?\}")


def fill_dates(pattern: str, day: dt.date) -> str:
    """'{date}' -> '2026-11-05', '{yesterday}' -> '2026-11-04', '{date:%Y/%m/%d}' -> '2026/11/05'."""

    def value(match: re.Match[str]) -> str:
        when = day if match[1] == "date" else day - dt.timedelta(days=1)
        return when.strftime(match[2]) if match[2] else when.isoformat()

    return _PLACEHOLDER.sub(value, pattern)


def zone(timezone: str | None) -> ZoneInfo:
    """The IANA timezone (default UTC), or a clear error."""
    try:
        return ZoneInfo(timezone or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            f"--timezone {timezone!r} is not an IANA timezone name. Pass one such as UTC, Europe/Berlin or "
            "America/New_York."
        ) from None
