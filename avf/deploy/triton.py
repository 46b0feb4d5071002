"""A Triton Inference Server model repository for an artifact (server GPUs).

Layout: ``REPO/<model>/config.pbtxt`` and ``REPO/<model>/1/model.onnx`` (or ``model.plan`` when
the artifact holds a TensorRT engine). With ``max_batch_size`` > 0, Triton's dims exclude the
batch axis; dynamic batching groups single requests into batches on the server.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from avf.atomic import atomic_directory
from avf.deploy.plan import read_artifact


def config_pbtxt(name: str, platform: str, rgb_dim: int, audio_dim: int, classes: int, max_batch: int,
                 preferred: tuple[int, ...], gpu: bool) -> str:
    preferred_sizes = ", ".join(str(b) for b in preferred if b <= max_batch)
    return f"""name: "{name}"
platform: "{platform}"
max_batch_size: {max_batch}
input [
  {{ name: "rgb", data_type: TYPE_FP32, dims: [ {rgb_dim} ] }},
  {{ name: "audio", data_type: TYPE_FP32, dims: [ {audio_dim} ] }}
]
output [
  {{ name: "probabilities", data_type: TYPE_FP32, dims: [ {classes} ] }}
]
dynamic_batching {{
  preferred_batch_size: [ {preferred_sizes} ]
  max_queue_delay_microseconds: 100
}}
instance_group [ {{ count: 1, kind: {"KIND_GPU" if gpu else "KIND_CPU"} }} ]
"""


def write_triton_repository(artifact: str | Path, repo: str | Path, max_batch: int = 64, force: bool = False,
                            gpu: bool = True) -> Path:
    artifact = Path(artifact)
    report = read_artifact(artifact)
    name = report["model"]["name"]
    engine = (report.get("tensorrt") or {}).get("built")
    io = report["io"]
    with atomic_directory(repo, force) as tmp:
        version = tmp / name / "1"
        version.mkdir(parents=True)
        source = artifact / ("model.plan" if engine else "model.onnx")
        shutil.copy2(source, version / source.name)
        (tmp / name / "config.pbtxt").write_text(config_pbtxt(
            name, "tensorrt_plan" if engine else "onnxruntime_onnx", io["inputs"]["rgb"][1], io["inputs"]["audio"][1],
            io["outputs"]["probabilities"][1], max_batch, (8, 32), gpu))
    return Path(repo)
