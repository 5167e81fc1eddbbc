"""Run a validated job in this process: take the folder's lock, start the model, then run the Prefect flow.

Apart from emodraw_flows/label.py so that the first two steps come before Prefect is imported: by the
time this process has imported Prefect (~1 s on 2 cores) and Prefect has started the flow run
and its first task, the model has been labelling the first window for seconds
(`runner.head_start_behind`; the first shard's task takes its batches, so the output is the same).
"""

from __future__ import annotations

from typing import Any

from emodraw_batch.files import lock
from emodraw_batch.job import runner
from emodraw_batch.job.validate import Job

from emodraw_flows.settings import EngineConfig

__all__ = ["run"]


def run(job: Job, engine: EngineConfig, on_rows: runner.OnRows | None = None, verbose: bool = False) -> dict[str, Any]:
    """Execute the flow for a validated job here, reporting to PREFECT_API_URL or a temporary local Prefect API."""
    # The folder's lock first, before Prefect and the model: of two runs started together, the second
    # is refused here at once with one paragraph, not inside the flow with Prefect's traceback. The
    # flow takes it again (a no-op in this process) and it is held through the flow, whatever the engine.
    with lock.held(job.out):
        # Only where the shard tasks run in this process (the local engine): they reuse this classifier.
        ahead = runner.head_start_behind(job) if engine.engine == "local" else None
        try:
            from emodraw_flows import label  # imports Prefect, while the model works

            return label.execute(job, engine, on_rows, verbose)
        finally:
            if ahead is not None:
                ahead.end_head_start()  # a flow that failed before its first shard ran: stop the model work
