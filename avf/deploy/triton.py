"""A Triton Inference Server model repository for an artifact (server GPUs).

Layout: ``REPO/<model>/config.pbtxt`` and ``REPO/<model>/1/model.onnx`` (or ``model.plan`` when
the artifact holds a TensorRT engine). With ``max_batch_size`` > 0, Triton's dims exclude the
batch axis; dynamic batching groups single requests into batches on the server.

config.pbtxt is Triton's ``inference.ModelConfig`` message in protobuf text format, written by
protobuf itself from a descriptor that declares the fields avf sets with Triton's own names,
numbers and enum values (``protobuf/model_config.proto`` in triton-inference-server/common), so
no value can break out of its field. The model name becomes a folder in the repository, so it is
checked first: one path component of safe characters, never ``..``, a ``/`` or a newline.
"""

from __future__ import annotations

import re
import shutil
from contextlib import suppress
from pathlib import Path

from google.protobuf import descriptor_pb2, descriptor_pool, text_format

from avf.atomic import atomic_directory
from avf.compress.report import ENGINE_FILE, MODEL_FILE, REPORT_FILE
from avf.deploy.artifact import open_artifact
from avf.errors import InputError

try:  # protobuf >= 4.22
    from google.protobuf.message_factory import GetMessageClass as _message_class
except ImportError:  # pragma: no cover - older protobuf
    from google.protobuf.message_factory import MessageFactory

    _message_class = MessageFactory().GetPrototype

#: What avf accepts as a Triton model name. Triton itself only refuses an empty name, ``..`` and ``/``
#: (core: ValidateModelName) and needs the folder name to equal the config's name; this stricter set
#: is also safe in a URL (``/v2/models/NAME``), a metric label and a shell, and never a hidden folder.
MODEL_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,199}")
NAME_RULE = "letters, digits, '_', '.' and '-', not starting with '.' or '-', at most 200 characters"

_F = descriptor_pb2.FieldDescriptorProto
_PACKAGE = "inference"
#: inference.DataType, every value as Triton numbers it.
_DATA_TYPES = ("TYPE_INVALID", "TYPE_BOOL", "TYPE_UINT8", "TYPE_UINT16", "TYPE_UINT32", "TYPE_UINT64", "TYPE_INT8",
               "TYPE_INT16", "TYPE_INT32", "TYPE_INT64", "TYPE_FP16", "TYPE_FP32", "TYPE_FP64", "TYPE_STRING",
               "TYPE_BF16")


def _model_config_file() -> descriptor_pb2.FileDescriptorProto:
    """The subset of Triton's model_config.proto that avf writes: same package, names, numbers and types."""
    fdp = descriptor_pb2.FileDescriptorProto(name="avf_triton_model_config.proto", package=_PACKAGE, syntax="proto3")
    data_type = fdp.enum_type.add(name="DataType")
    for number, name in enumerate(_DATA_TYPES):
        data_type.value.add(name=name, number=number)
    optional, repeated = _F.LABEL_OPTIONAL, _F.LABEL_REPEATED

    def message(name, fields, parent=None):
        msg = (parent.nested_type if parent is not None else fdp.message_type).add(name=name)
        for field_name, number, kind, label, type_name in fields:
            field = msg.field.add(name=field_name, number=number, type=kind, label=label)
            if type_name:
                field.type_name = f".{_PACKAGE}.{type_name}"
        return msg

    message("ModelInput", [("name", 1, _F.TYPE_STRING, optional, None),
                           ("data_type", 2, _F.TYPE_ENUM, optional, "DataType"),
                           ("dims", 4, _F.TYPE_INT64, repeated, None)])
    message("ModelOutput", [("name", 1, _F.TYPE_STRING, optional, None),
                            ("data_type", 2, _F.TYPE_ENUM, optional, "DataType"),
                            ("dims", 3, _F.TYPE_INT64, repeated, None)])
    message("ModelDynamicBatching", [("preferred_batch_size", 1, _F.TYPE_INT32, repeated, None),
                                     ("max_queue_delay_microseconds", 2, _F.TYPE_UINT64, optional, None)])
    group = message("ModelInstanceGroup", [("name", 1, _F.TYPE_STRING, optional, None),
                                           ("count", 2, _F.TYPE_INT32, optional, None),
                                           ("kind", 4, _F.TYPE_ENUM, optional, "ModelInstanceGroup.Kind")])
    kind = group.enum_type.add(name="Kind")
    for number, name in enumerate(("KIND_AUTO", "KIND_GPU", "KIND_CPU", "KIND_MODEL")):
        kind.value.add(name=name, number=number)
    config = message("ModelConfig", [("name", 1, _F.TYPE_STRING, optional, None),
                                     ("platform", 2, _F.TYPE_STRING, optional, None),
                                     ("max_batch_size", 4, _F.TYPE_INT32, optional, None),
                                     ("input", 5, _F.TYPE_MESSAGE, repeated, "ModelInput"),
                                     ("output", 6, _F.TYPE_MESSAGE, repeated, "ModelOutput"),
                                     ("instance_group", 7, _F.TYPE_MESSAGE, repeated, "ModelInstanceGroup"),
                                     ("dynamic_batching", 11, _F.TYPE_MESSAGE, optional, "ModelDynamicBatching"),
                                     ("backend", 17, _F.TYPE_STRING, optional, None)])
    config.oneof_decl.add(name="scheduling_choice")  # as in Triton: dynamic, sequence or ensemble scheduling
    next(field for field in config.field if field.name == "dynamic_batching").oneof_index = 0
    return fdp


_POOL = descriptor_pool.DescriptorPool()  # private: never clashes with tritonclient's own inference package
_POOL.Add(_model_config_file())
#: Triton's ``inference.ModelConfig`` (the fields avf sets); ``text_format.Parse`` reads config.pbtxt back into it.
ModelConfig = _message_class(_POOL.FindMessageTypeByName(f"{_PACKAGE}.ModelConfig"))


def model_config(name: str, platform: str, rgb_dim: int, audio_dim: int, classes: int, max_batch: int,
                 preferred: tuple[int, ...], gpu: bool):
    """The model's configuration: FP32 ``rgb``/``audio`` in, ``probabilities`` out, dynamic batching."""
    config = ModelConfig(name=name, platform=platform, max_batch_size=max_batch)
    config.input.add(name="rgb", data_type="TYPE_FP32", dims=[rgb_dim])
    config.input.add(name="audio", data_type="TYPE_FP32", dims=[audio_dim])
    config.output.add(name="probabilities", data_type="TYPE_FP32", dims=[classes])
    config.dynamic_batching.preferred_batch_size.extend(b for b in preferred if b <= max_batch)
    config.dynamic_batching.max_queue_delay_microseconds = 100
    config.instance_group.add(count=1, kind="KIND_GPU" if gpu else "KIND_CPU")
    return config


def check_model_name(name: str, source: Path | None) -> str:
    """``name`` when it is a safe Triton model name; else one InputError naming where it came from."""
    if isinstance(name, str) and MODEL_NAME.fullmatch(name):
        return name
    if source is None:
        raise InputError(None, f"--name {name!r}: cannot name a folder of the Triton model repository; use {NAME_RULE}")
    raise InputError(source, f"field 'model.name' {name!r} cannot name a folder of the Triton model repository (use "
                             f"{NAME_RULE}); pass --name NAME to choose a name")


def write_triton_repository(artifact: str | Path, repo: str | Path, max_batch: int = 64, force: bool = False,
                            gpu: bool = True, name: str | None = None) -> Path:
    """Add the artifact's model to ``repo`` (created if new) as ``name`` (default: the report's model name);
    ``--force`` replaces only that model's folder, never the other models of the repository. Returns the
    model's folder. On any failure nothing is left: no model folder, no temporary, no repository this call
    created."""
    artifact = Path(artifact)
    repo = Path(repo)
    if name is not None:
        check_model_name(name, None)
    if repo.exists() and not repo.is_dir():
        raise InputError(repo, "exists and is not a directory (the Triton model repository is a folder)")
    report = open_artifact(artifact, deploying=True)
    name = name if name is not None else check_model_name(report.model.name, artifact / REPORT_FILE)
    engine = report.tensorrt is not None and report.tensorrt.built
    io = report.io
    source = artifact / (ENGINE_FILE if engine else MODEL_FILE)
    config = model_config(name, "tensorrt_plan" if engine else "onnxruntime_onnx", io.inputs["rgb"][1],
                          io.inputs["audio"][1], io.outputs["probabilities"][1], max_batch, (8, 32), gpu)
    final = repo / name
    created = _missing_folders(repo)
    try:
        with atomic_directory(final, force, ours=_is_triton_model, inputs=[artifact],
                              what="Triton model folder") as tmp:
            version = tmp / "1"  # a full disk here is reported by atomic_directory, naming the model folder
            version.mkdir()
            shutil.copy2(source, version / source.name)
            (tmp / "config.pbtxt").write_text(text_format.MessageToString(config))  # protobuf's own text format
    except BaseException:
        for folder in created:  # innermost first; rmdir removes only what is still empty
            with suppress(OSError):
                folder.rmdir()
        raise
    return final


def _missing_folders(folder: Path) -> list[Path]:
    """``folder`` and those of its parents that do not exist yet, innermost first."""
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return missing


def _is_triton_model(folder: Path) -> bool:
    """A Triton model folder: config.pbtxt beside numeric version folders, nothing else."""
    entries = list(folder.iterdir())
    return (folder / "config.pbtxt").is_file() and all(
        e.name == "config.pbtxt" or (e.is_dir() and e.name.isdigit()) for e in entries)
