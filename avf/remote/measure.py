"""The workstation's side of a measurement on a device: send what it needs, run it there, check what comes back.

What comes back is validated by the same schema as a local record, then labelled with where it was
measured (the target and the device's own facts), so a bench taken over SSH reads like a local one
and says so.
"""

from __future__ import annotations

from pathlib import Path

from avf.data.vocabulary import file_sha256
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

        report = open_artifact(target, deploying=False)  # has just hashed every listed file against the report
        files = {name: (target / name, record.sha256) for name, record in report.files.items()}
        files[REPORT_FILE] = (target / REPORT_FILE, file_sha256(target / REPORT_FILE))
        return device.send_files(files)
    if not target.is_file():
        raise InputError(target, "no such checkpoint or artifact")
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


def send_data(device: RemoteDevice, data: str | Path) -> str:
    """Send held-out data (a feature store, or TFRecord shards with the vocabulary.csv beside them); its path
    on the device, in the same form (a store folder, or a folder of shards)."""
    from avf.data.feature_store import is_store
    from avf.data.sources import expand_sources
    from avf.data.vocabulary import find_vocabulary

    if is_store(data):
        folder = Path(data)
        names = sorted(entry.name for entry in folder.iterdir() if entry.is_file() and not entry.name.startswith("."))
        return device.send_folder(folder, names)
    shards = expand_sources(data)
    files: dict[str, tuple[Path, str]] = {}
    for shard in shards:
        if shard.name in files:
            raise InputError(shard, f"two shards named {shard.name} (in different folders): the device receives them "
                                    "in one folder; rename one, or convert the data to a feature store")
        files[shard.name] = (shard, file_sha256(shard))
    vocabulary = find_vocabulary(shards)
    if vocabulary is not None and "vocabulary.csv" not in files:
        files["vocabulary.csv"] = (Path(vocabulary.path), vocabulary.sha256)
    return device.send_files(files)


def measure_check_on(device: RemoteDevice, artifact: Path, data: str | Path, *, backend: str, batch_size: int,
                     threads: int | None, device_kind: str) -> dict:
    """avf-deploy check's measurement on the device: the deployed form scored there; its plain JSON result."""
    device.facts()
    remote_artifact = send_target(device, artifact)
    remote_data = send_data(device, data)
    args = ["check", remote_artifact, remote_data, "--backend", backend, "--batch-size", str(batch_size),
            "--device", device_kind]
    if threads:
        args += ["--threads", str(threads)]
    answer = device.agent(*args, what="the check", timeout_s=3600)
    measured = answer.get("measured")
    if not isinstance(measured, dict):
        raise InputError(device.target.name, "the device's check returned no measurement")
    conditions = measured.get("conditions")
    if not isinstance(conditions, dict):
        raise InputError(device.target.name, "the device's check did not record its conditions")
    conditions["measured_on"] = {"target": device.target.name, "device": device.facts()}
    return measured


def build_on(device: RemoteDevice, artifact: Path) -> dict:
    """avf-deploy build on the device: the engine is built, and stays, in the device's copy of the artifact (an
    engine is tied to its GPU and TensorRT version), where bench and check --backend tensorrt --target find it."""
    device.facts()
    remote = send_target(device, artifact)
    built = device.agent("build", remote, what="the TensorRT engine build", timeout_s=3600).get("built")
    if not isinstance(built, dict):
        raise InputError(device.target.name, "the device's build returned no facts")
    return {**built, "measured_on": {"target": device.target.name, "remote_path": remote}}
