"""The machine a bench ran on, as far as its figures depend on it: ISA, caches, memory bandwidth, and the floor.

A latency means little without the floor beside it: the time to read the model's weights once at the
memory bandwidth of the device that ran it. A small fusion MLP at batch 1 should sit near that floor;
far above it, per-call overheads (runtime dispatch, kernel launches, Python) dominate and no smaller
model helps; with weights that fit the last-level cache the DRAM floor does not bind at all. And the
INT8-versus-FP32 ratios depend on the ISA (44.5x without VNNI, ~130x with), so every bench records it.

Everything here is measured or read on the machine that runs the bench: over SSH the device agent
calls the same :func:`avf.deploy.bench.benchmark`, so the bandwidth is the device's. Where only a
device profile is known (``avf-deploy plan``, its ``floor``) the profile's ``memory_bandwidth_gbs``
stands in, labelled ``profile figure``.
"""

from __future__ import annotations

import functools
import re
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

#: x86 flags that decide which INT8/BF16 kernels ONNX Runtime and PyTorch can use.
X86_FLAGS = ("avx2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16")
#: Their aarch64 counterparts: dot product (SDOT/UDOT), int8 matrix multiply, BF16, SVE.
ARM_FLAGS = ("asimd", "asimddp", "i8mm", "bf16", "sve", "sve2")
#: The best INT8 dot-product instruction present decides the INT8 speed-up, best first.
INT8_DOT = ("amx_int8", "avx512_vnni", "avx_vnni", "i8mm", "asimddp")

CACHE_RESIDENT, BANDWIDTH_BOUND, LAUNCH_BOUND = "cache-resident", "bandwidth-bound", "launch-bound"
REGIMES = (CACHE_RESIDENT, BANDWIDTH_BOUND, LAUNCH_BOUND)
#: p50 within this many floors is bandwidth-bound: reading the weights is most of the time (the rest is the
#: activations, the output and one dispatch). Above it, more than half the call is something else.
BANDWIDTH_BOUND_RATIO = 2.0
THRESHOLDS = (f"{CACHE_RESIDENT}: weights <= the last-level cache (L3, else L2, of cpu0; the L2 on a GPU); "
              f"{BANDWIDTH_BOUND}: p50 <= {BANDWIDTH_BOUND_RATIO:g} x floor; {LAUNCH_BOUND}: p50 > "
              f"{BANDWIDTH_BOUND_RATIO:g} x floor")


def isa_facts(cpuinfo: str | None = None) -> dict:
    """The INT8/BF16-relevant flags of /proc/cpuinfo (or of ``cpuinfo`` text), each true or false, and
    ``int8_dot``: the best INT8 dot-product instruction present (``amx_int8`` ... ``asimddp``) or ``none``."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return {"arch": "unknown", "int8_dot": "unknown", "source": "/proc/cpuinfo not readable"}
    found = re.search(r"^(flags|Features)\s*:(.*)$", cpuinfo, re.MULTILINE)  # x86: flags; aarch64: Features
    if not found:
        return {"arch": "unknown", "int8_dot": "unknown", "source": "/proc/cpuinfo lists no flags"}
    flags = set(found.group(2).split())
    x86 = found.group(1) == "flags"
    facts: dict = {"arch": "x86" if x86 else "aarch64"}
    facts.update({flag: flag in flags for flag in (X86_FLAGS if x86 else ARM_FLAGS)})
    facts["int8_dot"] = next((flag for flag in INT8_DOT if flag in flags), "none")
    facts["source"] = "/proc/cpuinfo"
    return facts


def _bytes(size: str) -> int:
    """``32K``, ``1024K``, ``32M`` (sysfs cache sizes) -> bytes."""
    number, unit = re.fullmatch(r"\s*(\d+)\s*([KMG]?)i?B?\s*", size).groups()
    return int(number) * {"": 1, "K": 2**10, "M": 2**20, "G": 2**30}[unit]


@functools.cache
def cpu_caches(root: str = "/sys/devices/system/cpu/cpu0/cache") -> dict:
    """Cache sizes in bytes seen by cpu0 (``L1d``, ``L1i``, ``L2``, ``L3``: a shared level's slice that cpu0
    shares), from sysfs, else ``lscpu -B`` (whose totals are divided by their instance count)."""
    caches: dict = {}
    for index in sorted(Path(root).glob("index*")):
        try:
            level, kind = (index / "level").read_text().strip(), (index / "type").read_text().strip()
            caches[f"L{level}" + {"Data": "d", "Instruction": "i"}.get(kind, "")] = _bytes((index / "size").read_text())
        except (OSError, AttributeError, KeyError):
            continue
    if caches:
        return {**caches, "source": root}
    try:
        text = subprocess.run(["lscpu", "-B"], capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        text = ""
    for name, total, count in re.findall(r"^(L\d\w?) cache:\s+(\d+)(?:\s+\((\d+) instances?\))?", text, re.MULTILINE):
        caches[name] = int(total) // int(count or 1)
    return {**caches, "source": "lscpu -B" if caches else "not readable"}


def last_level(caches: dict) -> tuple[str | None, int | None]:
    """The largest cache level listed (L3, else L2) and its size."""
    for name in ("L3", "L2"):
        if caches.get(name):
            return name, caches[name]
    return None, None


@functools.cache
def cpu_bandwidth(threads: int = 1) -> dict:
    """DRAM bandwidth this process reaches with ``threads`` threads, measured once per process (~0.1-0.5 s).

    A copy between two arrays of twice the last-level cache each (32-512 MiB: 4x the cache in all, so
    nearly every byte comes from DRAM), split across the threads, best of 5 after one untimed pass (which
    also faults the pages in); GB/s counts bytes read + written, as STREAM's copy does. numpy releases
    the GIL for the copy, so the threads run in parallel. The arrays are freed at once.
    """
    _, llc = last_level(cpu_caches())
    size = int(min(max(2 * (llc or 0), 32 << 20), 512 << 20, _available_bytes() // 8)) // 4096 * 4096
    source, target = np.ones(size, np.uint8), np.empty(size, np.uint8)
    chunk = -(-size // threads)
    parts = [(target[i:i + chunk], source[i:i + chunk]) for i in range(0, size, chunk)]
    with ThreadPoolExecutor(len(parts)) as pool:
        best = float("inf")
        for attempt in range(6):
            start = time.perf_counter()
            list(pool.map(lambda part: np.copyto(*part), parts))
            if attempt:  # the first pass faults the pages in
                best = min(best, time.perf_counter() - start)
    footprint = f"{2 * size / llc:.0f}x the last-level cache" if llc else "last-level cache unknown"
    return {"bandwidth_gbs": 2 * size / best / 1e9, "source": "measured",
            "method": f"numpy copy of {size >> 20} MiB into a second array ({footprint}) on {len(parts)} thread(s), "
                      "best of 5, bytes read + written"}


def _available_bytes() -> int:
    """MemAvailable (Linux), so the copy never pushes a small device into swap; 4 GiB if unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 4 << 30


@functools.cache
def cuda_bandwidth() -> dict:
    """The CUDA device's bandwidth (a device-to-device copy of 8x its L2, at least 256 MiB, timed with CUDA
    events, best of 5, bytes read + written) and its L2 size; measured once per process. Needs PyTorch."""
    try:
        import torch

        l2 = int(torch.cuda.get_device_properties(0).L2_cache_size)
        size = max(8 * l2, 256 << 20)
        source = torch.ones(size, dtype=torch.uint8, device="cuda")
        target = torch.empty_like(source)
        target.copy_(source)
        best = float("inf")
        for _ in range(5):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            target.copy_(source)
            end.record()
            end.synchronize()
            best = min(best, start.elapsed_time(end) / 1e3)
        del source, target
        torch.cuda.empty_cache()
    except Exception as exc:  # no PyTorch (a runtime-only device), no GPU: say so, never guess
        return {"bandwidth_gbs": None, "source": "not measured", "method": f"not measured: {exc}"[:300], "l2_bytes": None}
    return {"bandwidth_gbs": 2 * size / best / 1e9, "source": "measured", "l2_bytes": l2,
            "method": f"torch device-to-device copy of {size >> 20} MiB (>= 8x the L2), CUDA events, best of 5, "
                      "bytes read + written"}


def regime(weights_bytes: int, cache_bytes: int | None, floor_ms: float | None, p50_ms: float,
           batch: int = 1) -> tuple[str | None, str]:
    """Which regime a p50 is in, and why in words (thresholds: :data:`THRESHOLDS`)."""
    if cache_bytes and weights_bytes <= cache_bytes:
        return CACHE_RESIDENT, (f"the weights ({weights_bytes / 2**20:.2f} MiB) fit the {cache_bytes / 2**20:g} MiB "
                                "last-level cache: they are read from cache, so the DRAM floor does not bind")
    if not floor_ms:
        return None, "no floor: the bandwidth was not measured"
    ratio = p50_ms / floor_ms
    if ratio <= BANDWIDTH_BOUND_RATIO:
        return BANDWIDTH_BOUND, f"p50 is {ratio:.1f} x the floor: reading the weights dominates"
    also = f" (at batch {batch}, compute too)" if batch > 1 else ""
    return LAUNCH_BOUND, f"p50 is {ratio:.1f} x the floor: per-call overheads{also} dominate"


def floor(weights: dict, bandwidth: dict, cache: tuple[str | None, int | None], rows: list[dict]) -> dict:
    """The floor record: ``weights`` {bytes, method}, ``bandwidth`` {bandwidth_gbs, source, method},
    ``cache`` (name, bytes) of the last level, ``rows`` [{scenario, batch, p50_ms}] each given its ratio and
    regime. floor_ms = weights_bytes / (bandwidth_gbs x 1e9) x 1e3 exactly; the record's regime is its
    first row's (single-stream when measured)."""
    gbs = bandwidth.get("bandwidth_gbs")
    floor_ms = weights["bytes"] / (gbs * 1e9) * 1e3 if gbs else None
    judged = []
    for row in rows:
        name, says = regime(weights["bytes"], cache[1], floor_ms, row["p50_ms"], row["batch"])
        judged.append({**row, "over_floor": row["p50_ms"] / floor_ms if floor_ms else None, "regime": name, "says": says})
    return {"weights_bytes": weights["bytes"], "weights_method": weights["method"], "bandwidth_gbs": gbs,
            "bandwidth_source": bandwidth["source"], "bandwidth_method": bandwidth["method"],
            "cache": cache[0], "cache_bytes": cache[1], "floor_ms": floor_ms,
            "regime": judged[0]["regime"] if judged else None, "says": judged[0]["says"] if judged else "",
            "rows": judged, "thresholds": THRESHOLDS}


def onnx_weight_bytes(path: Path) -> int:
    """Bytes of an ONNX file's weights: its initializers and Constant nodes' tensors, as stored (packed INT4
    counts half a byte per weight)."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path), load_external_data=False).graph
    tensors = [*graph.initializer, *(attr.t for node in graph.node if node.op_type == "Constant"
                                     for attr in node.attribute if attr.name == "value")]
    return sum(len(t.raw_data) if t.HasField("raw_data") else numpy_helper.to_array(t).nbytes for t in tensors)
