"""``avf-deploy build``: the TensorRT engine (``model.plan``) built on the machine that will run it.

A TensorRT engine is tied to the GPU and the TensorRT version that built it, so it is built on the
device: from the artifact's ``model.onnx`` as shipped (TensorRT-parsable as it is, the same file
``trtexec --onnx`` takes), through the one build path avf-compress ``--backend tensorrt`` uses
(:func:`avf.compress.tensorrt_engine.build_serialized`), with a timing cache. The TensorRT version
and the GPU go into report.json's ``tensorrt`` part and model.plan's sha256 into its ``files``, so
``open_artifact``, ``avf-deploy verify`` and the manifest keep holding, and ``avf-bench`` / ``avf-deploy
check --backend tensorrt`` run the engine.

:func:`build_engine_here` is the device-side part: one plain function over a local artifact folder,
returning plain JSON facts (what a remote agent sends back).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from avf.atomic import atomic_file, folder_lock
from avf.compress.precisions import precision_named
from avf.compress.report import ENGINE_FILE, MODEL_FILE, REPORT_FILE, FileRecord, TensorRTBuild
from avf.compress.tensorrt_check import check_tensorrt_compatibility
from avf.compress.tensorrt_engine import build_serialized, unavailable_reason
from avf.errors import InputError

TIMING_CACHE_VARIABLE = "AVF_CACHE"


def default_timing_cache(tensorrt_version: str, gpu: str) -> Path:
    """``$AVF_CACHE`` (or ~/.cache/avf) / tensorrt / timing-<version>-<gpu>.cache: one per TensorRT version and GPU."""
    base = os.environ.get(TIMING_CACHE_VARIABLE) or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache", "avf")
    slug = re.sub(r"[^A-Za-z0-9.]+", "-", f"{tensorrt_version}-{gpu}").strip("-").lower()
    return Path(base) / "tensorrt" / f"timing-{slug}.cache"


def refuse_unbuildable(artifact: Path, report) -> None:
    """Every reason this artifact cannot become a TensorRT engine anywhere, as one InputError (before any TensorRT)."""
    precision = report.precision
    if precision_named(precision).cpu_only:
        raise InputError(artifact, f"a {precision} artifact is an ONNX Runtime CPU format; TensorRT builds fp32, "
                                   "fp16 and int8 artifacts")
    check = check_tensorrt_compatibility(artifact / MODEL_FILE)  # the file as shipped, no rewrite
    if not check["tensorrt_compatible"]:
        hint = (" (an INT8 artifact made before avf shipped model.onnx TensorRT-parsable: run avf-compress again)"
                if any("INT32 DequantizeLinear" in p for p in check["problems"]) else "")
        raise InputError(artifact / MODEL_FILE, f"not TensorRT-compatible as shipped{hint}: "
                                                + "; ".join(check["problems"]))


def build_engine_here(artifact_dir: str | Path, timing_cache: str | Path | None = None) -> dict:
    """Build ``ARTIFACT/model.plan`` on this machine's GPU and record it in report.json; returns the build facts.

    The artifact is opened the one checked way (hashes, no links); a second build of the same folder at
    the same time is refused (folder lock). ``timing_cache`` defaults to one per TensorRT version and GPU
    under ``$AVF_CACHE``. Without TensorRT or a GPU: one InputError naming the extra to install.
    The engine and the updated report are each written atomically: report.json first (listing the new
    engine's sha256), then model.plan, so an interrupted build leaves an artifact that open_artifact
    refuses (engine missing or mismatched) rather than one that runs an engine nothing hashed.
    """
    from avf.deploy.artifact import open_artifact

    artifact = Path(artifact_dir)
    report = open_artifact(artifact, deploying=False)
    refuse_unbuildable(artifact, report)
    reason = unavailable_reason()
    if reason:
        raise InputError(artifact, f"cannot build a TensorRT engine here: {reason}")
    import tensorrt as trt

    from avf.compress.tensorrt_engine import cuda_device

    device, _ = cuda_device()
    cache = Path(timing_cache) if timing_cache is not None else default_timing_cache(trt.__version__, device["name"])
    with folder_lock(artifact, "artifact folder"):
        report = open_artifact(artifact, deploying=False)  # again, under the lock: what was verified is what is built
        try:
            serialized, facts = build_serialized(artifact / MODEL_FILE, report.precision, timing_cache=cache,
                                                 built_by="avf-deploy build", source=artifact)
        except RuntimeError as exc:
            raise InputError(artifact, str(exc)) from None
        facts["file"] = ENGINE_FILE
        with atomic_file(artifact / ENGINE_FILE) as engine_tmp:
            engine_tmp.write_bytes(serialized)
            from avf.data.vocabulary import file_sha256

            record = FileRecord(sha256=file_sha256(engine_tmp), bytes=len(serialized))
            report.tensorrt = TensorRTBuild.model_validate(facts)
            report.files = {**report.files, ENGINE_FILE: record}
            with atomic_file(artifact / REPORT_FILE) as report_tmp:
                report_tmp.write_text(report.to_json())
    return {**facts, "artifact": str(artifact), "sha256": record.sha256, "bytes": record.bytes,
            "timing_cache": {**facts.get("timing_cache", {}), "file": str(cache)}}



def build_package_here(artifact_dir: str | Path, device: str = "auto") -> dict:
    """Compile ``ARTIFACT/model.pt2`` (AOTInductor) for this machine's ``device`` from the artifact's compressed
    model (model.pt) and record it in report.json; returns the build facts.

    The same order as :func:`build_engine_here`: the package is compiled into a temporary name, the report
    listing its sha256 is written, then the package is renamed into place, under the artifact's folder lock.
    """
    try:
        from avf.compress import torch_aot
    except ModuleNotFoundError as exc:
        raise InputError(artifact_dir, f"cannot compile a PyTorch package here: {exc.name} is not installed "
                                       "(pip install torch, the build for this machine)") from None
    from avf.compress.report import TorchAotBuild
    from avf.data.vocabulary import file_sha256
    from avf.deploy.artifact import open_artifact

    artifact = Path(artifact_dir)
    report = open_artifact(artifact, deploying=False, rebuilding=torch_aot.PROGRAM_FILE)
    if torch_aot.WEIGHTS_FILE not in report.files:
        raise InputError(artifact, f"no compressed model ({torch_aot.WEIGHTS_FILE}) to compile: compress with "
                                   "--backend torch-aot")
    device = torch_aot.resolve_device(device)
    precision = (report.torch_aot.precision if report.torch_aot else None) or report.precision
    if reason := torch_aot.unavailable_reason(device, precision):
        raise InputError(artifact, f"cannot compile a {precision} PyTorch package for {device} here: {reason}")
    with folder_lock(artifact, "artifact folder"):
        report = open_artifact(artifact, deploying=False, rebuilding=torch_aot.PROGRAM_FILE)
        model = torch_aot.load_weights(artifact / torch_aot.WEIGHTS_FILE)
        io = report.io.inputs
        with atomic_file(artifact / torch_aot.PROGRAM_FILE, suffix=".tmp.pt2") as package_tmp:
            facts = torch_aot.compile_package(model, package_tmp, precision, device, io["rgb"][1], io["audio"][1],
                                              built_by="avf-deploy build", source=artifact)
            record = FileRecord(sha256=file_sha256(package_tmp), bytes=package_tmp.stat().st_size)
            report.torch_aot = TorchAotBuild.model_validate({**facts, "weights": torch_aot.WEIGHTS_FILE})
            report.files = {**report.files, torch_aot.PROGRAM_FILE: record}
            with atomic_file(artifact / REPORT_FILE) as report_tmp:
                report_tmp.write_text(report.to_json())
    return {**facts, "artifact": str(artifact), "sha256": record.sha256, "bytes": record.bytes}
