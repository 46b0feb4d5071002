"""The workstation's side of a measurement on a device: send what it needs, run it there, check what comes back.

What comes back is validated by the same schema as a local record, then labelled with where it was
measured (the target and the device's own facts), so a bench taken over SSH reads like a local one
and says so.
"""

from __future__ import annotations

from pathlib import Path

from avf.documents import validate
from avf.errors import InputError
from avf.remote.device import RemoteDevice

#: A checkpoint keeps its own name on the device when it is a plain file name; else this one.
_CHECKPOINT_NAME = "checkpoint.pt"


def send_target(device: RemoteDevice, target: Path) -> str:
    """Send an artifact (checked here first: hashes, no links) or a checkpoint; its path on the device."""
    if target.is_dir():
        from avf.compress.report import REPORT_FILE
        from avf.deploy.artifact import open_artifact

        report = open_artifact(target, deploying=False)
        return device.send_folder(target, [REPORT_FILE, *report.files])
    if not target.is_file():
        raise InputError(target, "no such checkpoint or artifact")
    from avf.data.vocabulary import file_sha256

    name = target.name if target.suffix == ".pt" and target.name.replace(".", "").replace("_", "").replace(
        "-", "").isalnum() else _CHECKPOINT_NAME
    folder = device.send_files({name: (target, file_sha256(target))})
    return f"{folder}/{name}"


def bench_on(device: RemoteDevice, target: Path, *, backend: str, batches: list[int], scenarios: list[str],
             duration: float, threads: int | None, device_kind: str, precision: str | None,
             cuda_graphs: bool) -> dict:
    """avf-bench of ``target`` on the device; the record as a local bench writes it, plus ``measured_on``."""
    from avf.deploy.bench_record import BenchRecord

    facts = device.facts()
    remote = send_target(device, target)
    args = ["bench", remote, "--backend", backend, "--batch", ",".join(map(str, batches)),
            "--scenario", ",".join(scenarios), "--duration", repr(float(duration)), "--device", device_kind]
    if threads:
        args += ["--threads", str(threads)]
    if precision:
        args += ["--precision", precision]
    if cuda_graphs:
        args.append("--cuda-graphs")
    # loading, warm-up and each timed measurement, with room for a slow device
    timeout = 300 + 4 * duration * (len(batches) + 1)
    answer = device.agent(*args, what="the benchmark", timeout_s=timeout)
    result = answer.get("bench")
    if not isinstance(result, dict):
        raise InputError(device.target.name, "the device's benchmark returned no bench record")
    validate(Path(device.target.name), "an avf-bench result", result, BenchRecord)
    result["target"] = str(target.resolve())
    result["measured_on"] = {"target": device.target.name, "remote_path": remote, "device": facts}
    return result
