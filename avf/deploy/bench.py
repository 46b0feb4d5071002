"""``avf-bench``: measure a checkpoint or an artifact the same way, with the conditions beside.

Scenarios follow MLPerf inference: ``single-stream`` (one request at a time, latency
percentiles after warm-up) and ``offline`` (throughput at each batch size). Memory is the
process's resident set (and device memory from NVML on NVIDIA GPUs); energy comes from a real
counter (see :mod:`avf.deploy.power`) or is reported as not available with the reason. Beside
each p50 the record puts the floor (the weights read once at the measured memory bandwidth) and the
regime the p50 is in, and the conditions name the ISA and caches (:mod:`avf.deploy.machine`).
"""

from __future__ import annotations

import json
import os
import platform
import resource
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from avf.atomic import atomic_file, atomic_write_text, check_output
from avf.deploy import machine
from avf.deploy.power import energy_meter, measure_with_energy, nvml_handle
from avf.deploy.target import BACKENDS, load_target
from avf.errors import InputError
from avf.threads import check_batch_fits, default_threads

SCENARIOS = ("single-stream", "offline")
#: The offline scenario's batch sizes unless told otherwise (avf-bench --batch takes its default from here).
BATCHES = (1, 8, 64)


def rss_mib() -> float:
    """Current resident set size of this process (Linux /proc; falls back to the peak)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return peak_rss_mib()


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def benchmark(target: str | Path, backend: str = "auto", batches: list[int] | None = None,
              scenarios: list[str] | None = None, duration: float = 3.0, threads: int | None = None,
              device: str = "cpu", say: Callable[[str], None] = lambda line: None, precision: str | None = None,
              cuda_graphs: bool = False, loadgen: dict | None = None, warmup: int = 20, iterations: int = 50) -> dict:
    """avf-bench: single-stream and offline loops over the target's runner, memory, energy and the floor; with
    ``loadgen`` ({scenario, out_dir, min_duration_s, min_query_count, target_qps, target_latency_ms}) also an MLPerf
    LoadGen scenario over the same runner (:mod:`avf.deploy.loadgen`), its summary under ``loadgen``."""
    target = Path(target)
    if loadgen is not None:
        from avf.deploy.loadgen import check_loadgen

        check_loadgen(loadgen["scenario"], loadgen.get("target_qps"))  # before any loading or timing
    batches = batches or list(BATCHES)
    scenarios = scenarios or list(SCENARIOS)
    for scenario in scenarios:
        if scenario not in SCENARIOS:
            raise InputError(target, f"unknown scenario {scenario!r} (choose from {', '.join(SCENARIOS)})")
    if backend not in BACKENDS:
        raise InputError(target, f"unknown backend {backend!r} (choose from {', '.join(BACKENDS)})")
    if not target.exists():
        raise InputError(target, "no such checkpoint or artifact")
    threads = threads or default_threads()
    rss_before, device_before = rss_mib(), _nvml_used_mib()
    run, facts = load_target(target, backend, threads, device, precision, cuda_graphs)
    device = facts["device"]  # GPU backends (TensorRT, ONNX Runtime CUDA) run on cuda whatever was asked
    rss_loaded = rss_mib()
    for batch in batches if "offline" in scenarios else []:
        check_batch_fits(batch, facts["rgb_dim"] + facts["audio_dim"] + facts["num_classes"], "--batch")
    generator = np.random.default_rng(0)

    def inputs(batch):
        return (generator.standard_normal((batch, facts["rgb_dim"]), dtype=np.float32),
                generator.standard_normal((batch, facts["audio_dim"]), dtype=np.float32))

    result: dict = {"format": "avf-bench", "version": 1, "target": str(target.resolve()), "target_facts": facts,
                    "scenarios": {}, "conditions": {**conditions(threads, device),
                                                    "warmup": warmup, "min_iterations": iterations}}
    meter = energy_meter(device)
    if "single-stream" in scenarios:
        rgb, audio = inputs(1)
        say(f"single-stream: batch 1 for {duration:g} s")
        latency, joules = measure_with_energy(meter, lambda: run(rgb, audio), warmup=warmup, min_iterations=iterations,
                                              min_seconds=duration)  # the meter starts after the warm-up
        result["scenarios"]["single-stream"] = {**latency, "energy": _energy(meter, joules, latency["iterations"] + 0)}
    if "offline" in scenarios:
        rows = []
        for batch in batches:
            rgb, audio = inputs(batch)
            say(f"offline: batch {batch} for {duration:g} s")
            latency, joules = measure_with_energy(meter, lambda: run(rgb, audio), warmup=max(1, warmup // 4),
                                                  min_iterations=max(1, iterations // 5), min_seconds=duration)
            seconds = latency["mean_ms"] * latency["iterations"] / 1e3
            rows.append({"batch": batch, "samples_per_s": batch * latency["iterations"] / seconds,
                         "batch_latency": latency, "energy": _energy(meter, joules, latency["iterations"] * batch)})
        result["scenarios"]["offline"] = rows
    meter.close()
    if loadgen is not None:
        from avf.deploy.loadgen import run_loadgen

        options = dict(loadgen)
        scenario, out_dir = options.pop("scenario"), options.pop("out_dir")
        say(f"loadgen: MLPerf LoadGen {scenario}")
        result["loadgen"] = run_loadgen(run, scenario, out_dir, inputs(64), **options)
    result["memory"] = {"rss_before_load_mib": rss_before, "rss_after_load_mib": rss_loaded, "rss_end_mib": rss_mib(),
                        "peak_rss_mib": peak_rss_mib(), "model_rss_mib": rss_loaded - rss_before,
                        "method": "Linux /proc/self/status VmRSS around loading; peak from getrusage ru_maxrss "
                                  "(whole process, includes the Python runtime)",
                        "device": _device_memory(device, device_before)}
    result["floor"] = _floor(target, run, facts, device, threads, result)  # after the memory figures: its copy
    return result


def _floor(target: Path, runner, facts: dict, device: str, threads: int, result: dict) -> dict | None:
    """The floor of every measured p50. Measured last, so its copy disturbs no timed run and no memory figure
    (the process peak of a later bench in this process includes it: ``model_rss_mib`` is unaffected)."""
    rows = []
    if "single-stream" in result["scenarios"]:
        rows.append({"scenario": "single-stream", "batch": 1, "p50_ms": result["scenarios"]["single-stream"]["p50_ms"]})
    rows += [{"scenario": "offline", "batch": row["batch"], "p50_ms": row["batch_latency"]["p50_ms"]}
             for row in result["scenarios"].get("offline", [])]
    if device == "cuda":
        bandwidth = machine.cuda_bandwidth()
        cache = ("GPU L2", bandwidth["l2_bytes"])
    else:
        bandwidth = machine.cpu_bandwidth(threads)
        cache = machine.last_level(machine.cpu_caches())
    try:
        weights = weights_read(target, runner, facts)
    except OSError:  # a runner that names no model file there: no floor rather than a made-up one
        return None
    return machine.floor(weights, bandwidth, cache, rows)


def weights_read(target: Path, runner, facts: dict) -> dict:
    """What the runner reads per call, {bytes, method}: an ONNX file's initializers (the file it runs), an
    engine's file size (a proxy: it also holds kernels), or a checkpoint's tensors at the run precision."""
    if facts.get("kind") == "checkpoint":
        from avf.train.checkpoint import load_checkpoint

        size = {"fp32": 4, "fp16": 2, "bf16": 2}.get(facts["precision"], 4)
        tensors = [t for t in load_checkpoint(target)["state_dict"].values() if hasattr(t, "numel")]
        return {"bytes": sum(t.numel() * (size if t.is_floating_point() else t.element_size()) for t in tensors),
                "method": f"checkpoint parameters and buffers at {facts['precision']}"}
    path = getattr(runner, "path", None) or (facts.get("package") and target / facts["package"])  # (torch-aot)
    if not path:  # Torch-TensorRT: its program is compiled from model.onnx's weights
        path, also = target / "model.onnx", " (the runner's own file is not known)"
    else:
        path, also = Path(path), ""
    if path.suffix == ".onnx":
        try:
            return {"bytes": machine.onnx_weight_bytes(path), "method": f"ONNX initializers of {path.name}{also}"}
        except ImportError:  # onnx not installed here: the file's size stands in
            pass
    return {"bytes": path.stat().st_size, "method": f"file size of {path.name} (a proxy: also holds graph and kernels)"}


def _energy(meter, joules: float | None, inferences: int) -> dict:
    if not meter.available or joules is None:
        return {"measured": False, "reason": meter.reason or "not available: no samples"}
    return {"measured": True, "joules": joules, "millijoules_per_inference": joules / max(inferences, 1) * 1e3,
            "source": meter.source}


def _nvml_used_mib() -> float | None:
    """Device memory in use now on the CUDA device (NVML), or None without NVML or a GPU."""
    try:
        import pynvml

        pynvml.nvmlInit()
        return pynvml.nvmlDeviceGetMemoryInfo(nvml_handle(pynvml)).used / 2**20
    except Exception:  # no nvidia-ml-py, no driver, no GPU
        return None


def _device_memory(device: str, used_before_load_mib: float | None) -> dict:
    if device != "cuda":
        return {"measured": False, "reason": "not available: CPU run"}
    try:
        import pynvml

        pynvml.nvmlInit()
        info = pynvml.nvmlDeviceGetMemoryInfo(nvml_handle(pynvml))  # the CUDA device, matched by UUID
        import torch

        used = info.used / 2**20
        return {"measured": True, "nvml_used_mib": used, "nvml_total_mib": info.total / 2**20,
                "model_device_mib": None if used_before_load_mib is None else used - used_before_load_mib,
                "torch_max_allocated_mib": torch.cuda.max_memory_allocated() / 2**20,
                "source": "NVML device memory used after the runs minus before loading (includes the CUDA context, "
                          "workspaces and graphs; other processes on the GPU add noise) + torch.cuda allocator peak"}
    except Exception as exc:  # NVML missing or failing: say so, never guess
        return {"measured": False, "reason": f"not available: {exc}"}


def conditions(threads: int, device: str) -> dict:
    facts = {"machine": platform.machine(), "cpu": cpu_name(), "logical_cpus": os.cpu_count(), "threads": threads,
             "python": platform.python_version(), "os": platform.platform(), "device": device,
             "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
             # INT8/BF16 speed-ups depend on these (44.5x without VNNI, ~130x with); the floor on the caches
             "isa": machine.isa_facts(), "caches": dict(machine.cpu_caches())}
    for module in ("torch", "onnxruntime", "onnx", "tensorrt"):
        try:
            facts[module] = __import__(module).__version__
        except ImportError:
            facts[module] = None
    governor = Path("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")
    facts["cpu_governor"] = governor.read_text().strip() if governor.exists() else "not readable"
    if device == "cuda":
        try:
            import torch

            facts["gpu"] = torch.cuda.get_device_name(0)
            facts["compute_capability"] = ".".join(map(str, torch.cuda.get_device_capability(0)))
            facts["cuda"] = torch.version.cuda
            import pynvml

            pynvml.nvmlInit()
            facts["driver"] = pynvml.nvmlSystemGetDriverVersion()
            handle = nvml_handle(pynvml)
            facts["sm_clock_mhz"] = pynvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_SM)
            facts["power_limit_w"] = pynvml.nvmlDeviceGetPowerManagementLimit(handle) / 1e3
        except Exception as exc:  # record what could not be read
            facts["gpu_facts_error"] = str(exc)
    return facts


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def check_bench_outputs(out: str | Path, force: bool, inputs=()) -> Path:
    """The results file and the plot beside it, checked before any measurement starts."""
    out = Path(out)
    if out.suffix.lower() == ".png":
        raise InputError(out, "the results file is JSON (a PNG plot is written beside it): give a .json name")
    check_output(out, force=force, directory=False, inputs=inputs, what="bench result")
    check_output(out.with_suffix(".png"), force=force, directory=False, inputs=inputs, what="bench plot")
    return out


def write_bench(result: dict, out: Path) -> None:
    """bench.json (atomic) and a PNG of latency and throughput against batch size beside it."""
    atomic_write_text(out, json.dumps(result, indent=2) + "\n")
    offline = result["scenarios"].get("offline")
    if not offline:
        return
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    batches = [row["batch"] for row in offline]
    fig, left = plt.subplots(figsize=(6, 4))
    left.plot(batches, [row["batch_latency"]["p50_ms"] for row in offline], "o-", label="p50 latency per batch")
    left.set_xscale("log", base=2)
    left.set_xlabel("batch size")
    left.set_ylabel("latency per batch (ms)")
    right = left.twinx()
    right.plot(batches, [row["samples_per_s"] for row in offline], "s--", color="tab:orange", label="throughput")
    right.set_ylabel("samples/s")
    facts = result["target_facts"]
    left.set_title(f"{facts.get('model')} {facts['backend']} {facts['precision']} ({result['conditions']['cpu'][:40]})",
                   fontsize=9)
    fig.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    with atomic_file(out.with_suffix(".png"), suffix=".tmp.png") as tmp_png:
        fig.savefig(tmp_png, dpi=110)
