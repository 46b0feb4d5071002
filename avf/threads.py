"""CPU threads and memory for compute: defaults that hold up when the machine is shared.

PyTorch and ONNX Runtime default to every core and spin-wait between parallel regions; with
another process busy on the same cores that made training and batch-1 latency 100-200x slower
than one thread. The default here is the cores this process may run on (taskset, cgroup
cpusets), OpenMP is told to sleep rather than spin while waiting, and every command that
computes takes ``--threads``.
"""

from __future__ import annotations

import os

from avf.errors import InputError


def set_passive_waiting() -> None:
    """Before torch loads: OpenMP threads sleep when idle (a user's own setting wins)."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def default_threads() -> int:
    """OMP_NUM_THREADS when set, else the cores this process may run on."""
    value = os.environ.get("OMP_NUM_THREADS", "")
    if value.isdigit() and int(value) > 0:
        return int(value)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def available_memory_bytes() -> int | None:
    """MemAvailable from /proc/meminfo (Linux); None where unknown."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def check_fits(needed_bytes: int, what: str, hint: str) -> None:
    """Refuse work that cannot fit in free memory before it starts, instead of dying in the allocator."""
    available = available_memory_bytes()
    if available is not None and needed_bytes > available:
        raise InputError(None, f"{what}: needs about {needed_bytes / 2**30:,.1f} GiB, "
                               f"{available / 2**30:,.1f} GiB is free; {hint}")


def check_batch_fits(batch: int, floats_per_sample: int, option: str, copies: int = 4) -> None:
    """Refuse a batch whose float32 tensors alone (inputs, outputs and working copies) exceed free memory."""
    per_sample = floats_per_sample * 4 * copies
    available = available_memory_bytes() or 0
    check_fits(batch * per_sample, f"{option} {batch}", f"at most about {max(1, available // per_sample):,} fits")
