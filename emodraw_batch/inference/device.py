"""Where and how precisely to run: the device, the precision, and the token budget that fits them.

torch is imported lazily here (device `auto` on a Linux machine without a GPU needs none).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from emodraw_batch.errors import ConfigError

# Measured on ALBERT-base (bench/, README "Performance"): on a CPU, batches of ~1k tokens keep the
# activations in cache and ran 1.9x faster than batches of 8k (17 vs 9 rows/s, 2 threads).
CPU_BATCH_TOKENS = 1024
# bf16 on a CPU with native bf16 (AVX512-BF16, AMX) is the other way round: its matrix kernels gain
# from more rows per call; on ALBERT-base, 400 rows of the benchmark mix, 2 threads, batches of 2k
# tokens ran faster than batches of 1k (docs/performance.md, issue 22 item 7).
CPU_BF16_BATCH_TOKENS = 2048
# ONNX Runtime runs each batch on one thread, several batches at once (backends/onnx_forward.py):
# on one core's cache, 512-token batches ran ~6% faster than 1,024 (ALBERT-base, 400 rows, 2 threads;
# 384 and 768 alike, 2,048 slower; bench/CPU.md).
CPU_ONNX_BATCH_TOKENS = 512
MIN_GPU_BATCH_TOKENS = 8192
MAX_GPU_BATCH_TOKENS = 262_144
# Share of the free GPU memory that one forward pass may use for activations; the rest is
# headroom for the allocator's fragmentation and the prefetched inputs.
GPU_MEMORY_FRACTION = 0.5


def no_gpu_here() -> bool:
    """True when this Linux machine surely has no GPU torch could use: no NVIDIA, ROCm or WSL GPU device node.

    Lets device `auto` resolve to the CPU without importing torch (~3 s of start-up on 2 cores).
    Anywhere else (other systems, or a device node present) torch is asked.
    """
    import glob
    import sys

    if not sys.platform.startswith("linux"):
        return False
    return not (glob.glob("/dev/nvidia[0-9]*") or Path("/dev/kfd").exists() or Path("/dev/dxg").exists())


def resolve_device(device: str) -> str:
    if device == "cpu" or (device == "auto" and no_gpu_here()):
        return "cpu"  # without importing torch (~1 s): an exported ONNX model then runs without it
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(
                f"--device {device} was requested but this torch build sees no CUDA GPU "
                f"(torch {torch.__version__}). Use --device cpu, or install a CUDA build of torch."
            )
        index = int(device.split(":")[1]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            raise ConfigError(
                f"--device {device} does not exist: this machine has {torch.cuda.device_count()} GPU(s). "
                f"Use cuda:0 to cuda:{torch.cuda.device_count() - 1}."
            )
    return device


class PrecisionWarning(UserWarning):
    """A precision that works but is a poor choice on this machine (e.g. bf16 on a CPU without bf16 units)."""


def resolve_precision(precision: str, device: str, cpuinfo: str | None = None) -> str:
    """The precision that runs: `auto` and `fast` resolved for `device` (and this CPU).

    `auto` is exact fp32 on the CPU and bf16 autocast on CUDA. `fast` is the fastest precision
    that keeps >= 99% of fp32's labels (bench/CPU.md): bf16 on CUDA and on CPUs with native bf16
    (AVX512-BF16, AMX), else fp32 (ONNX Runtime). Not int8: on the shipped model it kept 98.0% of
    fp32's labels on the Emotions test split (1.21x the rows/s), and on the model shipped before it
    ran at 0.65x ONNX Runtime's fp32 (bench/models.py, docs/performance.md). int8 exists only on the
    CPU, asked for by name. A half precision on a CPU without it is allowed but warned about
    (`half_precision_advice`).
    """
    if precision == "auto":
        return "bf16" if device.startswith("cuda") else "fp32"
    if precision == "fast":
        return "bf16" if device.startswith("cuda") or cpu_has_bf16(cpuinfo) else "fp32"
    if precision == "int8" and device != "cpu":
        raise ConfigError(
            f"--precision int8 (dynamic int8 quantization) runs only on the CPU, but the device is {device}. "
            "Use --precision bf16 on a GPU, or --device cpu with int8."
        )
    advice = half_precision_advice(precision, device, cpuinfo)
    if advice:
        warnings.warn(advice, PrecisionWarning, stacklevel=2)
    return precision


def half_precision_advice(precision: str, device: str, cpuinfo: str | None = None) -> str | None:
    """Why bf16/fp16 on this CPU is a trap and what to use instead; None when it is not one.

    A CPU without native bf16 (AVX2-only, or AVX-512 without AVX512-BF16) emulates it: on a
    2-core AVX2 EPYC, bf16 ran ~4x slower than fp32 (issue #14; bench/CPU.md). Not refused:
    the labels are right, and a job begun in bf16 (e.g. on a GPU) must resume in bf16.
    """
    if device != "cpu" or precision not in ("bf16", "fp16"):
        return None
    flag = {"bf16": ("avx512_bf16", "amx_bf16"), "fp16": ("avx512_fp16", "amx_fp16")}[precision]
    if cpu_flags(cpuinfo) & set(flag):
        return None
    instead = resolve_precision("fast", "cpu", cpuinfo)
    return (
        f"--precision {precision} on the CPU needs native {precision} units ({' or '.join(f.upper() for f in flag)}), "
        f"which this CPU lacks, so it is emulated and slower than fp32 (about 4x slower on an AVX2-only CPU). "
        f"Use --precision fast (here: {instead}) for speed with >= 99% of fp32's labels, or --precision fp32 "
        "(the CPU default) for exact labels."
    )


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where it cannot be read, e.g. not Linux)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return set()
    return set(cpuinfo.split())


def cpu_has_bf16(cpuinfo: str | None = None) -> bool:
    """Whether the CPU computes bf16 natively (AVX512-BF16 or AMX); without it bf16 autocast is slower than fp32."""
    return bool(cpu_flags(cpuinfo) & {"avx512_bf16", "amx_bf16"})


def activation_bytes_per_token(config: Any, max_length: int, precision: str) -> int:
    """Peak activation memory of one token in one forward pass (a deliberate over-estimate).

    Inference keeps one layer's activations alive at a time: a few hidden-size tensors, the
    feed-forward intermediate, and one attention row of `max_length` scores per head, times
    the element size (fp32 softmax/LayerNorm upcasts are covered by the factor of 2).
    """
    hidden = int(getattr(config, "hidden_size", 768))
    intermediate = int(getattr(config, "intermediate_size", 4 * hidden))
    heads = int(getattr(config, "num_attention_heads", 12))
    elements = 6 * hidden + 2 * intermediate + 2 * heads * max_length
    element_bytes = 2 if precision in ("bf16", "fp16") else 4
    return 2 * element_bytes * elements


def gpu_batch_tokens(
    free_bytes: int,
    bytes_per_token: int,
    fraction: float = GPU_MEMORY_FRACTION,
    cap: int = MAX_GPU_BATCH_TOKENS,
    floor: int = MIN_GPU_BATCH_TOKENS,
) -> int:
    """The token budget that fits `fraction` of the free GPU memory, within [floor, cap].

    The cap exists because bigger batches stop paying off once the GPU is saturated, while
    they still delay the first result and grow the pinned host buffers.
    """
    fits = int(free_bytes * fraction) // max(int(bytes_per_token), 1)
    return int(min(cap, max(floor, fits)))


def default_batch_tokens(
    device: str, config: Any = None, max_length: int = 128, precision: str | None = None, runtime: str = "torch"
) -> int:
    """A token budget that fits the device: fixed on CPU (by runtime and precision), sized to free memory on CUDA.

    `precision` None (training's call) is the CPU's fp32 budget and bf16's activation size on CUDA.
    """
    if not device.startswith("cuda"):
        if runtime == "onnx":
            return CPU_ONNX_BATCH_TOKENS
        return CPU_BF16_BATCH_TOKENS if precision == "bf16" else CPU_BATCH_TOKENS
    import torch

    free, _total = torch.cuda.mem_get_info(torch.device(device))
    return gpu_batch_tokens(free, activation_bytes_per_token(config, max_length, precision or "bf16"))
