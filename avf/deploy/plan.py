"""Predict how an artifact will run on a device profile, before having the device.

A roofline estimate: per batch, time = max(weight bytes / memory bandwidth, 2 x parameters x
batch / peak throughput at the artifact's precision). Small fusion MLPs at batch 1 are bound
by the bytes of weights read, so the estimate is a floor; launch overheads are not modelled
(and are why measured latency sits above it). Every figure is labelled predicted.
"""

from __future__ import annotations

from avf.compress.precisions import precision_named
from avf.compress.report import ArtifactReport
from avf.deploy.profiles import DeviceProfile, tensorrt_note

RUNTIME_OVERHEAD_MIB = {"jetson": 600.0, "dgpu": 800.0, "cpu": 150.0}  # CUDA context / runtime, a typical floor


def predict_on_profile(report: ArtifactReport, profile: DeviceProfile, batches: tuple[int, ...] = (1, 8, 64)) -> dict:
    precision = report.precision
    compute = precision_named(precision).compute  # the arithmetic it runs in: what the profile must support
    weight_bytes = report.model_file.bytes
    params = report.parameters
    reasons, fits = [], True
    peak = profile.peak_tflops.get(compute)
    if compute not in profile.precisions or peak is None:
        fits = False
        reasons.append(f"{profile.display_name} has no {compute} support (supports {', '.join(profile.precisions)})")
        peak = profile.peak_tflops["fp32"]
    rows = []
    for batch in batches:
        memory_s = weight_bytes / (profile.memory_bandwidth_gbs * 1e9)
        compute_s = 2.0 * params * batch / (peak * 1e12)
        seconds = max(memory_s, compute_s)
        rows.append({"batch": batch, "latency_ms": seconds * 1e3, "samples_per_s": batch / seconds,
                     "bound": "memory" if memory_s >= compute_s else "compute"})
    latency = rows[0]["latency_ms"]
    memory_mib = weight_bytes / 2**20 + RUNTIME_OVERHEAD_MIB[profile.kind]
    energy_mj = profile.power_w * latency  # W x ms = mJ: board power for the whole request, an upper bound
    if latency > profile.budgets.latency_ms:
        fits = False
        reasons.append(f"predicted latency {latency:.3f} ms > budget {profile.budgets.latency_ms:g} ms")
    if memory_mib > profile.budgets.memory_mib:
        fits = False
        reasons.append(f"predicted memory {memory_mib:.0f} MiB > budget {profile.budgets.memory_mib:g} MiB")
    if memory_mib > profile.memory_gib * 1024:
        fits = False
        reasons.append(f"needs {memory_mib:.0f} MiB, the device has {profile.memory_gib:g} GiB")
    notes = [note] if profile.preferred_backend == "tensorrt" and (note := tensorrt_note(profile)) else []
    if fits:
        reasons.append(f"predicted latency {latency:.3f} ms <= {profile.budgets.latency_ms:g} ms and memory "
                       f"{memory_mib:.0f} MiB <= {profile.budgets.memory_mib:g} MiB")
    reasons += [f"note: {note}" for note in notes]  # printed by avf-deploy plan with the verdict
    return {"profile": profile.name, "precision": precision, "compute_precision": compute, "weight_bytes": weight_bytes,
            "floor": {"floor_ms": weight_bytes / (profile.memory_bandwidth_gbs * 1e9) * 1e3, "bandwidth_source": "profile figure"},
            "parameters": params, "batches": rows, "latency_ms": latency, "memory_mib": memory_mib,
            "energy_mj_per_inference": energy_mj, "fits": fits, "reasons": reasons,
            # Plain notes about the profile (also in reasons as "note: ...", which avf-deploy plan prints).
            "notes": notes,
            "method": "roofline: max(weight bytes / bandwidth, 2 x params x batch / peak) per batch; memory = weights + "
                      f"{RUNTIME_OVERHEAD_MIB[profile.kind]:g} MiB runtime floor; energy = board power x latency (upper bound)",
            "predicted": True}
