"""Where the shard tasks run: `local` (this process, one device) or `dask`.

`dask` starts a LocalCluster of CPU worker processes, or one worker per GPU
(`dask_cuda.LocalCUDACluster`, each worker pinned to its own device), or connects
to an existing cluster at `address`. Every worker process loads the model once
(`model.cached_classifier`) and reuses it for all the shards it runs.

The choice of cluster is a pure function of the machine (`local_cluster`), so it is
tested on CPU; Prefect, Dask and torch are imported only when a runner is built.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from emodraw_batch.errors import ConfigError

from emodraw_flows.settings import EngineConfig

if TYPE_CHECKING:
    from prefect.task_runners import TaskRunner

# A CPU worker gets this many torch threads by default: ALBERT inference scales well up
# to a few threads per process, and processes scale further than threads.
CPU_THREADS_PER_WORKER = 4


@dataclass(frozen=True)
class Machine:
    """What this machine offers to a local Dask cluster."""

    cpus: int
    gpus: int
    dask_cuda: bool


@dataclass(frozen=True)
class ClusterSpec:
    """A Dask cluster class (qualified name, as DaskTaskRunner takes it) and its arguments."""

    cluster_class: str
    kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def workers(self) -> int:
        return int(self.kwargs["n_workers"])


def this_machine(device: str) -> Machine:
    """CPU count, visible GPUs (none when the device is forced to cpu) and whether dask_cuda is installed."""
    gpus = 0
    if device != "cpu":
        import torch

        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return Machine(os.cpu_count() or 1, gpus, importlib.util.find_spec("dask_cuda") is not None)


def local_cluster(workers: int | None, device: str, machine: Machine) -> ClusterSpec:
    """The local Dask cluster for this machine: one worker per GPU, else CPU worker processes."""
    if device.startswith("cuda") and machine.gpus == 0:
        raise ConfigError(
            f"--device {device} was requested but this machine has no CUDA GPU. Use --device auto or cpu."
        )
    if machine.gpus and device != "cpu":
        if not machine.dask_cuda:
            raise ConfigError(
                f"This machine has {machine.gpus} GPU(s), and --engine dask runs one worker per GPU with dask-cuda, "
                "which is not installed. Install it (pip install 'emodraw-batch[gpu]'), or pass --device cpu "
                "to use CPU workers."
            )
        n = workers or machine.gpus
        if n > machine.gpus:
            raise ConfigError(
                f"--workers {n} but this machine has {machine.gpus} GPU(s), and each worker gets its own GPU. "
                f"Use --workers {machine.gpus} or fewer (or leave it out for one per GPU)."
            )
        # LocalCUDACluster gives worker i a CUDA_VISIBLE_DEVICES list that starts at GPU i, so
        # "cuda" in each worker is its own device; n_workers < GPUs uses the first n.
        return ClusterSpec("dask_cuda.LocalCUDACluster", {"n_workers": n, "threads_per_worker": 1})
    n = workers or max(1, machine.cpus // CPU_THREADS_PER_WORKER)
    threads = max(1, machine.cpus // n)
    return ClusterSpec(
        "distributed.LocalCluster",
        {
            "n_workers": n,
            # One shard at a time per worker process: the worker's torch threads do the parallel work.
            "threads_per_worker": 1,
            "processes": True,
            # Dask sets OMP_NUM_THREADS=1 in workers; give each its share of the cores instead.
            "env": {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)},
            # The dashboard needs bokeh; without it Dask only warns, so ask for it only when it can start.
            "dashboard_address": ":8787" if importlib.util.find_spec("bokeh") else None,
        },
    )


def describe(engine: EngineConfig, spec: ClusterSpec | None = None) -> str:
    """One line for the log: where the shards run."""
    if engine.engine == "local":
        return "local engine: shards run one after another in this process"
    if engine.address:
        return f"dask engine: existing cluster at {engine.address}"
    assert spec is not None
    kind = "GPU" if spec.cluster_class.startswith("dask_cuda") else "CPU"
    return f"dask engine: {spec.cluster_class} with {spec.workers} {kind} worker process(es)"


def task_runner(engine: EngineConfig, device: str) -> tuple[TaskRunner, str, bool]:
    """The Prefect task runner for `engine` (checked by settings.check), a line saying where the shards run,
    and whether they run on GPUs (False where unknown: an existing cluster on a device left to `auto`)."""
    if engine.engine == "local":
        from emodraw_batch.inference.device import resolve_device
        from emodraw_flows.local_runner import LocalTaskRunner

        # One thread next to the flow: shards run one by one on this process's single model, on the
        # device `auto` resolves to here (the stall limit's default depends on it).
        return LocalTaskRunner(), describe(engine), resolve_device(device).startswith("cuda")
    from prefect_dask import DaskTaskRunner

    if engine.address:
        return DaskTaskRunner(address=engine.address), describe(engine), device.startswith("cuda")
    spec = local_cluster(engine.workers, device, this_machine(device))
    gpu = spec.cluster_class.startswith("dask_cuda")
    return DaskTaskRunner(cluster_class=spec.cluster_class, cluster_kwargs=spec.kwargs), describe(engine, spec), gpu
