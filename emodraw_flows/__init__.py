"""Prefect 3 orchestration of emodraw-batch: the only place that imports Prefect.

`emodraw_flows.label` holds the flow that `emodraw-batch run` executes, `emodraw_flows.settings`
the engine settings, `emodraw_flows.engines` picks where its shard tasks run (in-process or
on Dask) and `emodraw_flows.schedule` serves it as a nightly deployment. The `emodraw_batch`
package never imports Prefect or this package; these modules call it, and the
command line (`emodraw_cli`) calls them.

`label_corpus` (the flow, `emodraw_flows.label.label_corpus`) is this package's public name: call it from
your own Prefect flow to run the labelling as a subflow (docs/python-api.md). Everything else
here is internal.

Importing this package sets fast, quiet defaults for Prefect's temporary local
API before Prefect itself is imported; a value the user has set always wins.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from emodraw_flows.label import label_corpus

__all__ = ["label_corpus"]

PREFECT_DEFAULTS = {
    # No usage telemetry (and no DNS errors from the temporary server on offline machines).
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    # Prefect's default of 20 s is too short for a first start (it creates and migrates
    # the database, ~14 s on a busy 2-core machine): the run would fail before labelling anything.
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
}

for _key, _value in PREFECT_DEFAULTS.items():
    os.environ.setdefault(_key, _value)


def __getattr__(name: str) -> Any:
    """`emodraw_flows.label_corpus`, imported on first use (Prefect loads then, after the defaults above)."""
    if name == "label_corpus":
        from emodraw_flows.label import label_corpus

        return label_corpus
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
