"""``avf-deploy build`` (model.plan on the device), the INT8 artifact's two ONNX files, and profiles whose
TensorRT avf cannot drive.

The engine build itself needs TensorRT and a GPU: it runs in ``test_build_on_this_gpu`` where both exist
(skipped here otherwise); everything else (the refusals, the report, the runner choice, the notes) runs on
the CPU, with no stand-ins.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_harness import cli, snapshot

pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from avf.compress.tensorrt_check import check_tensorrt_compatibility  # noqa: E402
from avf.compress.tensorrt_engine import unavailable_reason  # noqa: E402
from avf.deploy.profiles import load_profile, tensorrt_note  # noqa: E402

NO_TENSORRT = unavailable_reason()


@pytest.fixture(scope="module")
def int8_artifact(tiny_run, tmp_path_factory) -> Path:
    artifact = tmp_path_factory.mktemp("build") / "tiny.int8"
    data = tiny_run / "data"
    code, _, err = cli("compress", tiny_run / "run" / "best.pt", "--int8", "--calib", data / "train*.tfrecord",
                       "--eval", data / "validate*.tfrecord", "--min-retention", 0, "-o", artifact)
    assert code == 0, err
    return artifact


def test_int8_artifact_ships_a_tensorrt_parsable_model_and_its_cpu_form(int8_artifact):
    from avf.deploy.artifact import open_artifact

    report = open_artifact(int8_artifact, deploying=False)  # both files hashed and verified
    assert {"model.onnx", "model.cpu.onnx"} <= set(report.files)
    saved = json.loads((int8_artifact / "report.json").read_text())
    assert saved["cpu_model"]["file"] == "model.cpu.onnx" and "TensorRT" in saved["cpu_model"]["reason"]
    # model.onnx as shipped: what trtexec --onnx parses; model.cpu.onnx keeps the INT32 bias TensorRT refuses
    assert check_tensorrt_compatibility(int8_artifact / "model.onnx")["tensorrt_compatible"]
    cpu = check_tensorrt_compatibility(int8_artifact / "model.cpu.onnx")
    assert any("INT32 DequantizeLinear" in p for p in cpu["problems"])
    assert saved["tensorrt_check"]["tensorrt_compatible"] is True
    # both carry the deployment metadata
    for name in ("model.onnx", "model.cpu.onnx"):
        meta = {p.key: p.value for p in onnx.load(str(int8_artifact / name)).metadata_props}
        assert meta["precision"] == "int8"


def test_onnxruntime_cpu_runs_the_cpu_form(int8_artifact):
    from avf.deploy.target import load_target

    runner, facts = load_target(int8_artifact, "onnxruntime", threads=1)
    assert runner.path.name == "model.cpu.onnx" and facts["precision"] == "int8"


def test_fp32_artifact_ships_one_onnx(tiny_artifact):
    report = json.loads((tiny_artifact / "report.json").read_text())
    assert "model.cpu.onnx" not in report["files"] and "cpu_model" not in report


@pytest.mark.skipif(NO_TENSORRT is None, reason="TensorRT and a GPU are here: the build runs instead")
def test_build_without_tensorrt_is_one_error_naming_the_extra(int8_artifact):
    before = snapshot(int8_artifact)
    code, out, err = cli("deploy", "build", int8_artifact)
    assert code == 2, (out, err)
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines[0].startswith("error:") and "avf[tensorrt]" in err and "JetPack" in err
    assert snapshot(int8_artifact) == before  # nothing written, report.json untouched


def test_build_refuses_a_weights_only_artifact_before_any_tensorrt(tiny_run, tmp_path):
    artifact = tmp_path / "dyn"
    assert cli("compress", tiny_run / "run" / "best.pt", "--int8-dynamic", "--min-retention", 0, "-o", artifact)[0] == 0
    before = snapshot(artifact)
    code, _, err = cli("deploy", "build", artifact, "--timing-cache", tmp_path / "t.cache")
    assert code == 2 and "ONNX Runtime CPU format" in err
    assert snapshot(artifact) == before and not (tmp_path / "t.cache").exists()


def test_build_refuses_an_int8_model_onnx_with_int32_bias(int8_artifact, tmp_path):
    """An INT8 artifact from before the rewrite was shipped (model.onnx = the INT32 form) is refused, as shipped."""
    import shutil

    from avf.compress.report import ArtifactReport
    from avf.data.vocabulary import file_sha256
    from avf.deploy.build import refuse_unbuildable
    from avf.errors import InputError

    old = tmp_path / "old"
    shutil.copytree(int8_artifact, old)
    (old / "model.cpu.onnx").replace(old / "model.onnx")
    report = json.loads((old / "report.json").read_text())
    del report["files"]["model.cpu.onnx"], report["cpu_model"]
    report["files"]["model.onnx"]["sha256"] = file_sha256(old / "model.onnx")
    with pytest.raises(InputError, match="INT32 DequantizeLinear.*|run avf-compress again"):
        refuse_unbuildable(old, ArtifactReport.model_validate(report))


@pytest.mark.skipif(NO_TENSORRT is not None, reason=f"needs TensorRT and a GPU: {NO_TENSORRT}")
def test_build_on_this_gpu(int8_artifact, tmp_path):
    import shutil

    from avf.deploy.artifact import open_artifact
    from avf.deploy.build import build_engine_here

    artifact = tmp_path / "a"
    shutil.copytree(int8_artifact, artifact)
    cache = tmp_path / "timing.cache"
    facts = build_engine_here(artifact, cache)
    assert facts["built"] and facts["device"] and facts["tensorrt"] and cache.stat().st_size > 0
    report = open_artifact(artifact, deploying=False)  # model.plan listed with its sha256
    assert report.files["model.plan"].sha256 == facts["sha256"] and report.tensorrt.built_by == "avf-deploy build"
    again = build_engine_here(artifact, cache)
    assert again["timing_cache"]["loaded"] is True
    from avf.deploy.target import load_target

    runner, _ = load_target(artifact, "tensorrt")
    import numpy as np

    probabilities = runner.run(np.zeros((2, 1024), np.float32), np.zeros((2, 128), np.float32))
    assert probabilities.shape[0] == 2 and np.isfinite(probabilities).all()


def test_profiles_whose_tensorrt_avf_cannot_drive_say_so(tiny_artifact):
    from avf.deploy.artifact import open_artifact
    from avf.deploy.plan import predict_on_profile

    xavier = load_profile("jetson-xavier-nx")
    note = tensorrt_note(xavier)
    assert "TensorRT 8.5" in note and "10.x and 11.x" in note
    for name in ("jetson-orin-nano-8gb", "jetson-agx-orin-64gb", "h100", "x86-cpu"):
        assert tensorrt_note(load_profile(name)) is None, name
    report = open_artifact(tiny_artifact, deploying=False)
    prediction = predict_on_profile(report, xavier)
    assert prediction["notes"] == [note] and f"note: {note}" in prediction["reasons"]
    assert predict_on_profile(report, load_profile("jetson-orin-nano-8gb"))["notes"] == []
    code, out, _ = cli("deploy", "plan", tiny_artifact, "--profile", "jetson-xavier-nx")
    assert code == 0 and "note:" in out and "TensorRT 8.5" in out.replace("\n", " ")
