"""A Triton Inference Server model repository for an artifact (server GPUs).

Layout: ``REPO/<model>/config.pbtxt`` and ``REPO/<model>/1/model.onnx`` (or ``model.plan`` when
the artifact holds a TensorRT engine). With ``max_batch_size`` > 0, Triton's dims exclude the
batch axis; dynamic batching groups single requests into batches on the server.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from avf.atomic import atomic_directory
from avf.deploy.artifact import open_artifact
from avf.errors import InputError


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
    """Add the artifact's model to ``repo`` (created if new); ``--force`` replaces only that model's folder,
    never the other models of the repository. Returns the model's folder."""
    artifact = Path(artifact)
    repo = Path(repo)
    if repo.exists() and not repo.is_dir():
        raise InputError(repo, "exists and is not a directory (the Triton model repository is a folder)")
    report = open_artifact(artifact, deploying=True)
    name = report["model"]["name"]
    engine = (report.get("tensorrt") or {}).get("built")
    io = report["io"]
    source = artifact / ("model.plan" if engine else "model.onnx")
    with atomic_directory(repo / name, force, ours=_is_triton_model, inputs=[artifact],
                          what="Triton model folder") as tmp:
        version = tmp / "1"
        version.mkdir()
        shutil.copy2(source, version / source.name)
        (tmp / "config.pbtxt").write_text(config_pbtxt(
            name, "tensorrt_plan" if engine else "onnxruntime_onnx", io["inputs"]["rgb"][1], io["inputs"]["audio"][1],
            io["outputs"]["probabilities"][1], max_batch, (8, 32), gpu))
    return repo / name


def _is_triton_model(folder: Path) -> bool:
    """A Triton model folder: config.pbtxt beside numeric version folders, nothing else."""
    entries = list(folder.iterdir())
    return (folder / "config.pbtxt").is_file() and all(
        e.name == "config.pbtxt" or (e.is_dir() and e.name.isdigit()) for e in entries)
