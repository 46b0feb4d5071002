"""What avf-bench and avf predict run: an avf-compress artifact or a checkpoint, on one backend.

The target is opened once (an artifact's report checked and every file re-hashed; a checkpoint
read as plain data), its backend looked up in :mod:`avf.runtime.registry`, and the backend's runner
opened on it. So the reference and the compressed model are measured through the same harness,
and a new backend needs no change here.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from avf.errors import InputError
from avf.runtime import registry
from avf.runtime.runner import MODEL_FILE, Runner, RunnerFacts, RunOptions, Target

ARTIFACT_BACKENDS = registry.names("artifact")
CHECKPOINT_BACKENDS = registry.names("checkpoint")
BACKENDS = ("auto", *registry.names())


def load_target(target: Path, backend: str = "auto", threads: int | None = None, device: str = "cpu",
                precision: str | None = None, cuda_graphs: bool = False) -> tuple[Runner, dict]:
    """A runner (``runner(rgb, audio) -> probabilities``) and facts about what runs (model, backend,
    precision, input sizes, class count and vocabulary hash, device), as avf-bench records them.

    ``precision`` applies to checkpoints (their backend's first precision, fp32, by default); an
    artifact's precision is the one avf-compress gave it. ``cuda_graphs`` applies to checkpoints on CUDA.
    """
    if backend not in BACKENDS:
        raise InputError(target, f"unknown backend {backend!r} (choose from {', '.join(BACKENDS)})")
    options = RunOptions(backend, device, threads, precision, cuda_graphs)
    if target.is_dir():
        return _load_artifact(target, options)
    return _load_checkpoint(target, options)


def _load_artifact(path: Path, options: RunOptions) -> tuple[Runner, dict]:
    if options.backend in CHECKPOINT_BACKENDS:
        raise InputError(path, f"an artifact runs on {', '.join(ARTIFACT_BACKENDS)}, not {options.backend}")
    if options.precision or (options.cuda_graphs and options.backend != "torch-aot"):
        raise InputError(path, "--precision applies to checkpoints and --cuda-graphs to checkpoints and torch-aot "
                               "packages; an artifact keeps the precision avf-compress gave it")
    from avf.deploy.artifact import open_artifact

    report = open_artifact(path, deploying=False)  # report checked, every file re-hashed
    backend = _chosen(options.backend, "artifact")
    runner = backend.open(Target("artifact", path, report=report), _as(options, backend))
    facts: RunnerFacts = runner.facts
    # The manifest checks a bench against its artifact by this hash (paths differ across machines);
    # open_artifact has just verified the file against it.
    return runner, {"kind": "artifact", "onnx_sha256": report["files"][MODEL_FILE]["sha256"], "backend": facts.backend,
                    **facts.runtime, "precision": facts.precision, "model": facts.model, **_sizes(facts),
                    "vocabulary_sha256": report.get("vocabulary_sha256") or None, "accepted": report.get("accepted"),
                    "device": facts.device}


def _load_checkpoint(path: Path, options: RunOptions) -> tuple[Runner, dict]:
    if options.backend in ARTIFACT_BACKENDS:
        raise InputError(path, f"a checkpoint runs on {' or '.join(CHECKPOINT_BACKENDS)}; compress it for "
                               f"{options.backend}")
    backend = _chosen(options.backend, "checkpoint")
    precision = options.precision or backend.precisions[0]
    if precision not in backend.precisions:
        raise InputError(path, f"unknown precision {precision!r} (choose from {', '.join(backend.precisions)})")
    from avf.train.checkpoint import load_checkpoint

    payload = load_checkpoint(path)
    runner = backend.open(Target("checkpoint", path, payload=payload), _as(options, backend, precision=precision))
    facts: RunnerFacts = runner.facts
    return runner, {"kind": "checkpoint", "backend": facts.backend, "precision": facts.precision, **facts.runtime,
                    "model": facts.model, **_sizes(facts), "vocabulary_sha256": payload.get("vocabulary_sha256"),
                    "device": facts.device}


def _chosen(name: str, kind: str) -> registry.Backend:
    return registry.default(kind) if name == "auto" else registry.BY_NAME[name]


def _as(options: RunOptions, backend: registry.Backend, **changes) -> RunOptions:
    """The options with ``auto`` resolved to the backend that runs them."""
    return replace(options, backend=backend.name, **changes)


def _sizes(facts: RunnerFacts) -> dict:
    return {"rgb_dim": facts.inputs.get("rgb"), "audio_dim": facts.inputs.get("audio"), "num_classes": facts.num_classes}
