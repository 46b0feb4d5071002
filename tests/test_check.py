"""avf-deploy check: the deployed form scored on held-out data against the FP32 reference, and the manifest's rule.

Everything is real: the tiny trained run and its artifact (tests/conftest.py), ONNX Runtime, PyTorch.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

pytest.importorskip("onnxruntime")

from cli_harness import cli, snapshot  # noqa: E402

from avf.deploy.check import COMPARED, check, measure_check, read_check  # noqa: E402
from avf.errors import InputError  # noqa: E402


@pytest.fixture
def artifact(tiny_artifact, tmp_path) -> Path:
    """A copy of the tiny accepted artifact under this test's folder (a check writes into it by default)."""
    copy = tmp_path / "best.fp32"
    shutil.copytree(tiny_artifact, copy)
    return copy


def _report(artifact: Path) -> dict:
    return json.loads((artifact / "report.json").read_text())


def test_check_on_the_reports_own_data_uses_its_reference_figures(tiny_run, artifact):
    data = tiny_run / "data" / "validate*.tfrecord"
    code, out, err = cli("deploy", "check", artifact, "--data", data)
    assert code == 0, err
    path = artifact / "check-onnxruntime.json"
    assert json.loads(path.read_text())["format"] == "avf-check"
    record = read_check(path)
    retention = _report(artifact)["retention"]
    assert record.reference_source.source == "report" and "passed" in out
    assert record.data.content_sha256 == retention["eval_data"]["content_sha256"]
    assert record.videos == retention["videos"] == record.deployed.num_videos
    for key in COMPARED:  # the same runner, batches and loop as the retention gate: the same numbers
        assert getattr(record.deployed, key) == retention["compressed"][key]
        assert getattr(record.reference, key) == retention["reference"][key]
        assert record.retention[key] == retention["ratios"][key]
    assert record.passed and record.min_retention == retention["min_retention"] == 0.99
    assert record.onnx_sha256 == _report(artifact)["files"]["model.onnx"]["sha256"]
    assert record.backend == record.runner.backend == "onnxruntime" and record.runner.device == "cpu"
    assert record.conditions["host"] and record.conditions["onnxruntime"]
    assert "batches of 512" in record.method


def test_check_on_other_data_scores_the_reference_from_the_checkpoint(tiny_run, artifact, tmp_path):
    data = tiny_run / "data" / "train*.tfrecord"
    out = tmp_path / "other.json"
    code, _, err = cli("deploy", "check", artifact, "--data", data, "-o", out)
    assert code == 0, err
    record = read_check(out)
    assert record.reference_source.source == "checkpoint"
    assert "measured on other videos" in record.reference_source.detail
    assert record.reference_source.runner.backend == "pytorch"
    assert record.reference_source.checkpoint_sha256 == _report(artifact)["checkpoint"]["sha256"]
    # The reference is what `avf eval` computes on the same data ...
    code, text, err = cli("eval", tiny_run / "run" / "best.pt", "--data", data, "--json")
    assert code == 0, err
    evaluated = json.loads(text)["metrics"]
    for key in COMPARED:
        assert getattr(record.reference, key) == pytest.approx(evaluated[key], rel=1e-9)
    # ... and both figures are what the retention gate computes on it.
    gated = tmp_path / "gated"
    code, _, err = cli("compress", tiny_run / "run" / "best.pt", "--eval", data, "-o", gated)
    assert code == 0, err
    retention = _report(gated)["retention"]
    assert retention["eval_data"]["content_sha256"] == record.data.content_sha256
    for key in COMPARED:
        assert getattr(record.deployed, key) == pytest.approx(retention["compressed"][key], rel=1e-9)
        assert getattr(record.reference, key) == pytest.approx(retention["reference"][key], rel=1e-9)
    # A checkpoint that is not the one report.json names is refused.
    wrong = tmp_path / "wrong.pt"
    wrong.write_bytes(b"not the checkpoint")
    code, _, err = cli("deploy", "check", artifact, "--data", data, "-o", tmp_path / "x.json", "--checkpoint", wrong)
    assert code == 2 and "sha256 differs" in err and not (tmp_path / "x.json").exists()


def test_the_device_part_returns_plain_json_and_the_workstation_part_checks_it(tiny_run, artifact):
    data = tiny_run / "data" / "validate*.tfrecord"
    measured = measure_check(artifact, data, "onnxruntime", batch_size=7, threads=1)
    assert json.loads(json.dumps(measured)) == measured  # crosses a network as it is
    assert measured["metrics"]["num_videos"] == measured["data"]["videos"] == 20
    # Another batching of the one loop: the same metrics, so the report's reference still applies.
    record = check(artifact, data, "onnxruntime", measured)
    assert record.reference_source.source == "report" and record.batch_size == 7
    assert record.deployed.gap == pytest.approx(_report(artifact)["retention"]["compressed"]["gap"], rel=1e-9)
    with pytest.raises(InputError, match="another model.onnx"):
        check(artifact, data, "onnxruntime", {**measured, "onnx_sha256": "0" * 64})
    with pytest.raises(InputError, match="not the asked --backend tensorrt"):
        check(artifact, data, "tensorrt", measured)
    with pytest.raises(InputError, match="content_sha256"):
        check(artifact, data, "onnxruntime", {**measured, "data": {**measured["data"], "content_sha256": "x"}})


def test_a_tampered_artifact_is_refused(tiny_run, artifact, tmp_path):
    model = artifact / "model.onnx"
    blob = bytearray(model.read_bytes())
    blob[-1] ^= 1
    model.write_bytes(bytes(blob))
    before = snapshot(tmp_path)
    code, _, err = cli("deploy", "check", artifact, "--data", tiny_run / "data" / "validate*.tfrecord")
    assert code == 2 and err.count("error:") == 1 and "sha256 differs" in err
    assert snapshot(tmp_path) == before


def test_a_failing_check_exits_3_with_the_record_written(tiny_run, artifact):
    report = _report(artifact)
    report["retention"]["min_retention"] = 1.5  # a bar above anything reachable
    (artifact / "report.json").write_text(json.dumps(report))
    code, out, _ = cli("deploy", "check", artifact, "--data", tiny_run / "data" / "validate*.tfrecord")
    assert code == 3 and "FAILED" in out
    record = read_check(artifact / "check-onnxruntime.json")
    assert not record.passed and record.min_retention == 1.5 and "< 1.5" in record.reason


def test_an_existing_output_needs_force(tiny_run, artifact, tmp_path):
    out = tmp_path / "check.json"
    out.write_text("mine\n")
    args = ["deploy", "check", artifact, "--data", tiny_run / "data" / "validate*.tfrecord", "-o", out]
    before = snapshot(tmp_path)
    code, _, err = cli(*args)
    assert code == 2 and "--force" in err and snapshot(tmp_path) == before
    assert cli(*args, "--force")[0] == 0 and read_check(out).passed


# ----------------------------------------------------------------------------- the manifest


def _gpu_profile_preferring(backend: str, folder: Path) -> Path:
    profile = json.loads(cli("profiles", "t4", "--json")[1])
    path = folder / f"t4-{backend}.yaml"
    path.write_text(json.dumps({**profile, "name": f"t4-{backend}", "preferred_backend": backend}))
    return path


def test_a_jetson_manifest_without_a_check_on_its_backend_is_not_deployable(tiny_run, artifact):
    assert cli("deploy", "check", artifact, "--data", tiny_run / "data" / "validate*.tfrecord")[0] == 0
    out = artifact / "manifest.json"
    code, text, _ = cli("deploy", "manifest", artifact, "-p", "jetson-orin-nano-8gb", "-o", out)
    manifest = json.loads(out.read_text())
    assert code == 3 and not manifest["decision"]["deployable"]
    assert any(r.startswith("retention measured on ONNX Runtime CPU only") for r in manifest["decision"]["reasons"])
    assert [c["backend"] for c in manifest["checks"]] == ["onnxruntime"]  # found in the artifact, recorded
    code, text, _ = cli("deploy", "manifest", artifact, "-p", "jetson-orin-nano-8gb", "-o", out, "--force",
                        "--allow-unchecked")
    manifest = json.loads(out.read_text())
    assert code == 0 and manifest["decision"]["deployable"] and "warning" in text
    assert manifest["decision"]["warnings"][0].startswith("retention measured on ONNX Runtime CPU only")
    # A CPU profile keeps today's rule: the report's ONNX Runtime CPU retention suffices.
    code, _, err = cli("deploy", "manifest", artifact, "-p", "x86-cpu", "-o", out, "--force")
    assert code == 0, err


def test_a_passing_check_on_the_profiles_backend_makes_it_deployable(tiny_run, artifact, tmp_path):
    profile = _gpu_profile_preferring("onnxruntime", tmp_path)
    out = artifact / "manifest.json"
    code, _, _ = cli("deploy", "manifest", artifact, "-p", profile, "-o", out)
    assert code == 3 and "ONNX Runtime CPU only" in out.read_text()
    check_file = tmp_path / "check.json"
    assert cli("deploy", "check", artifact, "--data", tiny_run / "data" / "train*.tfrecord", "-o", check_file)[0] == 0
    code, _, err = cli("deploy", "manifest", artifact, "-p", profile, "-o", out, "--force", "--check", check_file)
    assert code == 0, err
    manifest = json.loads(out.read_text())
    assert manifest["manifest_version"] == 3 and manifest["decision"]["deployable"]
    assert not any("CPU only" in r for r in manifest["decision"]["reasons"])
    [entry] = manifest["checks"]
    from avf.data.vocabulary import file_sha256

    assert entry["sha256"] == file_sha256(check_file) and entry["passed"] and entry["reference_source"] == "checkpoint"
    assert entry["backend"] == "onnxruntime" and entry["device"] == "cpu" and entry["gap_retention"] > 0.99
    assert cli("deploy", "verify", out)[0] == 0
    # A failed check on the profile's backend blocks deployment, on a CPU profile too.
    record = json.loads(check_file.read_text())
    failed = tmp_path / "failed.json"
    failed.write_text(json.dumps({**record, "passed": False, "min_retention": 1.5}))
    code, _, _ = cli("deploy", "manifest", artifact, "-p", "x86-cpu", "-o", out, "--force", "--check", failed)
    assert code == 3 and "FAILED" in out.read_text()
    # A record whose verdict contradicts its numbers, or of another model.onnx, is refused.
    contradicting = tmp_path / "contradicting.json"
    contradicting.write_text(json.dumps({**record, "passed": False}))
    code, _, err = cli("deploy", "manifest", artifact, "-p", profile, "-o", out, "--force", "--check", contradicting)
    assert code == 2 and "passed" in err

    other = tmp_path / "other.json"
    other.write_text(json.dumps({**record, "onnx_sha256": "0" * 64}))
    code, _, err = cli("deploy", "manifest", artifact, "-p", profile, "-o", out, "--force", "--check", other)
    assert code == 2 and "another model.onnx" in err
