"""What a candidate costs on the profile: measured with avf-bench when this machine is the
profile's device, else the avf-deploy plan roofline prediction -- always labelled which.

Measurements use avf-bench's own harness (:func:`avf.deploy.bench.benchmark`): latency
percentiles after warm-up, throughput, resident memory added by loading the artifact, energy
where a meter exists; its bench file is the one the manifest takes.
"""

from __future__ import annotations

import platform
from pathlib import Path

from avf.compress.report import ArtifactReport
from avf.deploy.plan import predict_on_profile
from avf.deploy.profiles import DeviceProfile

X86 = ("x86_64", "amd64", "i686")


def local_gpu(profile: DeviceProfile) -> str | None:
    """The CUDA device name when this machine's GPU is the profile's (its ``cuda_name`` in the name), else None."""
    if profile.kind != "dgpu" or not profile.cuda_name:
        return None
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name(torch.cuda.current_device())
    return name if profile.cuda_name.lower() in name.lower() else None


def measurable_here(profile: DeviceProfile) -> str | None:
    """None when costs can be measured on this machine for ``profile``, else why they are predicted."""
    if profile.kind == "cpu" and platform.machine().lower() in X86:
        return None
    if local_gpu(profile):
        return None
    return (f"this machine ({platform.machine()}, no {profile.display_name}) is not the profile's device: "
            "latency, memory and energy are predicted by the avf-deploy plan roofline")


def local_build(profile: DeviceProfile, device=None) -> dict:
    """How candidates are compiled when their costs are measured on this machine's GPU: TensorRT where it is
    installed, else the compiled PyTorch engine (torch-aot on CUDA, timed from CUDA graphs); {} otherwise
    (ONNX artifacts, timed in ONNX Runtime here or on the --target device)."""
    if device is not None or not local_gpu(profile):
        return {}
    from avf.compress.tensorrt_engine import unavailable_reason

    if profile.preferred_backend == "tensorrt" and unavailable_reason() is None:
        return {"backend": "tensorrt"}
    return {"backend": "torch-aot", "device": "cuda"}


def measurable_on(profile: DeviceProfile, device) -> str | None:
    """None when costs are measured for ``profile`` (on the --target device, or here), else why they are predicted."""
    if device is None:
        return measurable_here(profile)
    return None  # measured there: on ONNX Runtime, or on a TensorRT engine built there (else predicted, per candidate)


def device_backend(profile: DeviceProfile) -> str:
    """What a candidate runs on when measured on the device: the profile's engine, TensorRT, or ONNX Runtime CPU."""
    return "tensorrt" if profile.preferred_backend == "tensorrt" else "onnxruntime"


def bench_on_device(device, profile: DeviceProfile, artifact: Path, out: Path, batch: int, threads: int,
                    duration: float) -> tuple[dict | None, str | None]:
    """avf-bench's harness on the --target device, recorded like :func:`bench`'s file; (result, None), or
    (None, why) when the device cannot run the candidate on the profile's backend (no TensorRT there, a
    precision its engine builder refuses), so that its cost is predicted and labelled instead.

    For a TensorRT profile the engine is first built on the device (``avf-deploy build`` there). Memory is the
    device process's resident set added by loading the artifact (avf-bench's in-process figure), not the
    fresh-child figure :func:`bench` takes here.
    """
    import json

    from avf.atomic import atomic_write_text
    from avf.remote.measure import bench_on, build_on
    from avf.remote.ssh import RemoteCommandFailed

    backend = device_backend(profile)
    scenarios = ["single-stream", "offline"] if batch == 1 else ["offline"]
    try:
        if backend == "tensorrt":
            build_on(device, artifact)
        result = bench_on(device, artifact, backend=backend, batches=[batch], scenarios=scenarios,
                          duration=duration, threads=threads, device_kind="cuda" if backend == "tensorrt" else "cpu",
                          precision=None, cuda_graphs=False)
    except RemoteCommandFailed as exc:  # it ran there and said no: this candidate is predicted, not the search ended
        return None, exc.problem
    result["memory"]["method"] = ("model_rss_mib: VmRSS of avf-bench's process on the device after loading the "
                                  "artifact, minus before loading")
    atomic_write_text(out, json.dumps(result, indent=2) + "\n")
    return result, None


def bench(artifact: Path, out: Path, batch: int, threads: int, duration: float, build: dict | None = None) -> dict:
    """avf-bench's harness on the artifact: single-stream at batch 1, offline at ``batch``; in ONNX Runtime CPU, or
    on this machine's GPU as ``build`` (:func:`local_build`) compiled it (torch-aot from CUDA graphs, or TensorRT).

    Run in this process (a child process would spend seconds importing PyTorch per candidate);
    the bench file is the JSON ``avf bench -o`` writes, so the manifest can take it.
    """
    import json

    from avf.atomic import atomic_write_text
    from avf.deploy.bench import benchmark

    scenarios = ["single-stream", "offline"] if batch == 1 else ["offline"]
    if build:
        backend = build["backend"]
        result = benchmark(artifact, backend, [batch], scenarios, duration, threads, "cuda",
                           cuda_graphs=backend == "torch-aot")
        result["memory"].setdefault("method", "avf-bench's in-process figures on the GPU")
        atomic_write_text(out, json.dumps(result, indent=2) + "\n")
        return result
    result = benchmark(artifact, "onnxruntime", [batch], scenarios, duration, threads)
    memory = resident_memory(artifact, batch, threads)
    result["memory"].update(model_rss_mib=memory, method=MEMORY_METHOD, in_process_model_rss_mib=
                            result["memory"]["model_rss_mib"])
    atomic_write_text(out, json.dumps(result, indent=2) + "\n")
    return result


MEMORY_METHOD = ("model_rss_mib: VmRSS of a fresh child process (onnxruntime only) after loading the artifact and "
                 "running one batch, minus before loading; the other figures are avf-bench's in the tune process")
_CHILD = """
import sys, numpy as np, onnxruntime
from avf.runtime.onnxruntime_cpu import OnnxRuntimeCpuRunner
def rss():
    return next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmRSS:')) / 1024
path, batch, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
before = rss()
runner = OnnxRuntimeCpuRunner(path, threads=threads)
runner.run(*(np.zeros((batch, runner.inputs[name]), np.float32) for name in ("rgb", "audio")))
print(rss() - before)
"""


def resident_memory(artifact: Path, batch: int, threads: int) -> float:
    """MiB of resident memory the artifact adds to a fresh process that loads and runs it once.

    In the long-lived tune process the allocator reuses freed pages, so its RSS delta reads ~0;
    a child that imports only ONNX Runtime (and avf's CPU runner over it, the one avf-bench times)
    gives the artifact's own footprint.
    """
    import subprocess
    import sys

    from avf.compress.report import cpu_model_name

    model = Path(artifact) / cpu_model_name({p.name for p in Path(artifact).iterdir()})  # the file avf-bench times
    done = subprocess.run([sys.executable, "-c", _CHILD, str(model), str(batch), str(threads)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        from avf.errors import InputError

        raise InputError(artifact, f"memory measurement failed: {(done.stderr.strip().splitlines() or ['?'])[-1]}")
    return float(done.stdout.strip().splitlines()[-1])


def cost(report: ArtifactReport, profile: DeviceProfile, batch: int, bench_result: dict | None) -> dict:
    """Latency (p50/p99 per request or per batch), throughput, memory, energy and size, with their status."""
    size = report.model_file.bytes
    if bench_result is None:
        prediction = predict_on_profile(report, profile, batches=(batch,))
        row = prediction["batches"][0]
        return {"status": "predicted", "source": prediction["method"], "latency_p50_ms": row["latency_ms"],
                "latency_p99_ms": row["latency_ms"], "samples_per_s": row["samples_per_s"],
                "memory_mib": prediction["memory_mib"], "energy_mj": profile.power_w * row["latency_ms"] / batch,
                "energy_status": "predicted", "size_bytes": size, "fits_prediction": prediction["fits"]}
    offline = {row["batch"]: row for row in bench_result["scenarios"].get("offline", [])}[batch]
    if batch == 1:
        latency = bench_result["scenarios"]["single-stream"]
        energy = latency["energy"]
    else:
        latency, energy = offline["batch_latency"], offline["energy"]
    conditions = bench_result["conditions"]
    where = (f"avf-bench on {conditions['gpu']} ({bench_result.get('target_facts', {}).get('backend', 'cuda')})"
             if conditions.get("gpu") else f"avf-bench on {conditions['cpu']}, {conditions['threads']} threads")
    if bench_result.get("measured_on"):
        where = f"avf-bench on {bench_result['measured_on']['target']} ({bench_result['conditions']['cpu']}, " \
                f"{bench_result['conditions']['threads']} threads)"
    measured_energy = energy.get("measured")
    return {"status": "measured", "source": where + (", single-stream" if batch == 1 else f", offline batch {batch}"),
            "latency_p50_ms": latency["p50_ms"], "latency_p99_ms": latency["p99_ms"],
            "samples_per_s": offline["samples_per_s"], "memory_mib": bench_result["memory"]["model_rss_mib"],
            "energy_mj": energy["millijoules_per_inference"] if measured_energy
            else profile.power_w * latency["p50_ms"] / batch,
            "energy_status": "measured" if measured_energy else "predicted (profile power x measured latency; "
                                                                f"{energy.get('reason', 'no meter')})",
            "size_bytes": size}
