"""The one way every command opens an avf-compress artifact: report checked, files re-hashed.

``avf-bench``, ``avf predict``, ``avf-deploy plan``, ``manifest`` and ``triton`` all go through
:func:`open_artifact`, so a tampered ``model.onnx`` or a hand-edited ``report.json`` is refused
the same way everywhere, and the deployment commands refuse a rejected artifact.

An artifact is exactly the regular files report.json lists and hashes: a symbolic link (which
can point outside the artifact, or be re-pointed after it was hashed) or a FIFO/device is
refused, and so is a model.onnx whose tensors live in an external-data file, which nothing
hashes or ships. avf-compress never writes one: it saves every model.onnx whole (ONNX's
protobuf limit of 2 GiB refuses anything larger), so such a file was put there by hand.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from avf.compress.report import FORMAT, MODEL_FILE, REPORT_FILE, ArtifactReport, PrecisionStage
from avf.data.vocabulary import file_sha256
from avf.documents import check_regular_file, parse_mapping, read_text, validate
from avf.errors import InputError


def read_artifact(artifact: str | Path) -> ArtifactReport:
    """report.json of an artifact directory, checked against its schema."""
    artifact = Path(artifact)
    report_path = artifact / REPORT_FILE
    if artifact.is_file():
        raise InputError(artifact, "is a file; an avf-compress artifact is a directory (with model.onnx and report.json)")
    if not artifact.exists():
        raise InputError(artifact, "artifact not found")
    if not (report_path.exists() or report_path.is_symlink()):
        raise InputError(artifact, "not an avf-compress artifact (no report.json)")
    regular_file(report_path)
    what = "an avf-compress report"
    data = parse_mapping(report_path, what, read_text(report_path, what))
    if data.get("format") != FORMAT:
        raise InputError(report_path, f"not {what} (format is {data.get('format')!r})")
    report = validate(report_path, what, data, ArtifactReport)
    if MODEL_FILE not in report.files:
        raise InputError(report_path, "corrupt report: lists no model.onnx")
    if not isinstance(report.stages[-1], PrecisionStage):
        raise InputError(report_path, "corrupt report: the last stage names no precision")
    return report


def regular_file(path: Path) -> None:
    """Refuse, before opening it, an artifact file that is missing, a symbolic link or not a regular file."""
    try:
        mode = path.lstat().st_mode
    except OSError:
        raise InputError(path, f"listed in {REPORT_FILE} but missing") from None
    if stat.S_ISLNK(mode):
        raise InputError(path, f"is a symbolic link (to {os.readlink(path)}); an avf artifact holds regular files "
                               "only, so a link (which can point anywhere, and be re-pointed after hashing) is refused")
    check_regular_file(path, "a file of an avf artifact")  # a FIFO or device would block or never end


def verify_files(artifact: Path, report: ArtifactReport) -> None:
    """Every file report.json lists is a regular file inside the artifact with its recorded sha256."""
    inside = artifact.resolve()
    for name, entry in report.files.items():
        path = artifact / name
        if Path(name).is_absolute() or ".." in Path(name).parts:
            raise InputError(artifact / REPORT_FILE, f"corrupt report: file name {name!r} points outside the artifact")
        regular_file(path)
        if not path.resolve().is_relative_to(inside):  # a linked folder on the way
            raise InputError(path, "lies outside the artifact (through a symbolic link); refusing it")
        if file_sha256(path) != entry.sha256:
            raise InputError(path, "sha256 differs from report.json (modified after avf-compress)")


def refuse_external_data(model_path: Path) -> None:
    """Refuse a model.onnx that keeps tensors in external files: those files are hashed nowhere.

    Reads the graph without its external data (``load_external_data=False``) and looks at every
    tensor that can hold weights: initializers (dense and sparse) and tensor attributes (Constant
    nodes), in subgraphs and functions too.
    """
    try:
        import onnx
    except ImportError:
        raise InputError(model_path, "checking an artifact's model.onnx needs the onnx package: "
                                     "pip install 'avf[onnx]'") from None
    try:
        model = onnx.load(str(model_path), load_external_data=False)
    except Exception as exc:  # DecodeError and friends: a file that parses as no ONNX model
        raise InputError(model_path, f"not a readable ONNX model ({type(exc).__name__})") from None
    locations = {}
    for tensor in _tensors(model):
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            where = {entry.key: entry.value for entry in tensor.external_data}.get("location", "?")
            locations.setdefault(where, tensor.name)
    if locations:
        files = ", ".join(f"{where!r} (tensor {name!r})" for where, name in sorted(locations.items())[:3])
        more = f" and {len(locations) - 3} more" if len(locations) > 3 else ""
        raise InputError(model_path, f"keeps weights in external data file {files}{more}; avf artifacts keep their "
                                     "weights inside model.onnx (an external file is hashed nowhere), so it is refused")


def _tensors(model):
    """Every TensorProto of a model that can carry data: initializers, sparse tensors, tensor attributes."""

    def of_graph(graph):
        yield from graph.initializer
        for sparse in graph.sparse_initializer:
            yield from (sparse.values, sparse.indices)
        yield from of_nodes(graph.node)

    def of_nodes(nodes):
        for node in nodes:
            for attribute in node.attribute:  # an unset field reads as an empty message: harmless
                yield attribute.t
                yield from attribute.tensors
                for sparse in (attribute.sparse_tensor, *attribute.sparse_tensors):
                    yield from (sparse.values, sparse.indices)
                for graph in (attribute.g, *attribute.graphs):
                    yield from of_graph(graph)

    yield from of_graph(model.graph)
    for function in model.functions:
        yield from of_nodes(function.node)


def open_artifact(artifact: str | Path, *, deploying: bool, rebuilding: str | None = None) -> ArtifactReport:
    """The checked report of an artifact whose files match it; ``deploying`` also refuses a rejected one.

    ``rebuilding`` names a device-bound file (model.pt2) about to be built again here, which may be absent (an
    artifact copied to its device without the package compiled elsewhere); when present it is checked too."""
    artifact = Path(artifact)
    report = read_artifact(artifact)
    if rebuilding and rebuilding in report.files and not (artifact / rebuilding).exists():
        checked = report.model_copy(update={"files": {k: v for k, v in report.files.items() if k != rebuilding}})
        verify_files(artifact, checked)
    else:
        verify_files(artifact, report)
    for name in report.files:  # model.onnx and, for INT8, the CPU-optimal model.cpu.onnx beside it
        if name.endswith(".onnx"):
            refuse_external_data(artifact / name)
    if deploying and not report.accepted:
        raise InputError(artifact, f"artifact was rejected by its retention gate ({report.reason}); refusing to "
                                   "deploy it")
    return report
