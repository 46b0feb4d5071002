"""Hand-altered copies of a real avf-compress artifact, each one what an attacker or a careless copy makes.

Each keeps report.json consistent with the altered model.onnx (its sha256 and size re-recorded),
so only the check under test can refuse it, not the hash comparison.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path


def rehash_model(artifact: Path) -> None:
    """Record model.onnx's current sha256 and size in report.json, as a forger would."""
    data = (artifact / "model.onnx").read_bytes()
    report = json.loads((artifact / "report.json").read_text())
    report["files"]["model.onnx"] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    (artifact / "report.json").write_text(json.dumps(report, indent=2))


def with_external_data(good: Path, out: Path, location: str = "weights.bin", constants: bool = False) -> Path:
    """A copy whose weights sit in ``location`` beside model.onnx (ONNX external data).

    With ``constants`` every initializer first becomes a Constant node, so only node attributes
    hold the external tensors.
    """
    import onnx
    from onnx import helper

    shutil.copytree(good, out)
    model = onnx.load(str(out / "model.onnx"))
    if constants:
        for tensor in list(model.graph.initializer):
            model.graph.node.insert(0, helper.make_node("Constant", [], [tensor.name], value=tensor))
        del model.graph.initializer[:]
    onnx.save_model(model, str(out / "model.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=location, size_threshold=0, convert_attribute=constants)
    rehash_model(out)
    return out


def with_linked_model(good: Path, out: Path, target: Path) -> Path:
    """A copy whose model.onnx is a symbolic link to ``target``, an identical copy elsewhere."""
    shutil.copytree(good, out)
    shutil.copy2(out / "model.onnx", target)
    (out / "model.onnx").unlink()
    (out / "model.onnx").symlink_to(target.resolve())
    return out


def with_model_name(good: Path, out: Path, name: str) -> Path:
    """A copy whose report.json names the model ``name`` (report.json itself is hashed nowhere)."""
    shutil.copytree(good, out)
    report = json.loads((out / "report.json").read_text())
    report["model"]["name"] = name
    (out / "report.json").write_text(json.dumps(report, indent=2))
    return out
