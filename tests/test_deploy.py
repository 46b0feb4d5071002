"""Device profiles validate and name bad fields; avf-bench measures checkpoints and artifacts alike."""

from __future__ import annotations

import json

import pytest
import yaml

from avf.deploy.profiles import all_profiles, load_profile
from avf.errors import InputError
from cli_harness import avf_process as avf

REQUIRED = {"jetson-orin-nano-8gb", "jetson-orin-nx-16gb", "jetson-agx-orin-64gb", "jetson-xavier-nx", "rtx-3090",
            "rtx-4090", "t4", "a100", "h100", "x86-cpu"}


def test_shipped_profiles_validate():
    profiles = {p.name: p for p in all_profiles()}
    assert REQUIRED <= set(profiles)
    assert all(p.kind == "jetson" and p.power_modes_w for n, p in profiles.items() if n.startswith("jetson"))
    assert profiles["x86-cpu"].kind == "cpu" and profiles["x86-cpu"].preferred_backend == "onnxruntime"
    assert profiles["h100"].peak_tflops["fp16"] > profiles["t4"].peak_tflops["fp16"]


def test_a_users_yaml_works_and_bad_fields_are_named(tmp_path):
    data = yaml.safe_load(open(load_profile.__globals__["shipped_profile_paths"]()["t4"]))
    data["name"] = "my-t4"
    good = tmp_path / "mine.yaml"
    good.write_text(yaml.safe_dump(data))
    assert load_profile(good).name == "my-t4"
    for change, needle in [({"memory_bandwidth_gbs": -1}, "memory_bandwidth_gbs"),
                           ({"kind": "tpu"}, "kind"),
                           ({"budgets": {"latency_ms": 2.0}}, "budgets.memory_mib"),
                           ({"peak_tflops": {"fp32": 8.1}}, "no figure for fp16"),
                           ({"surprise": 1}, "surprise")]:
        bad = tmp_path / "bad.yaml"
        bad.write_text(yaml.safe_dump({**data, **change}))
        with pytest.raises(InputError, match=needle):
            load_profile(bad)
    missing = {k: v for k, v in data.items() if k != "tdp_w"}
    (tmp_path / "nopower.yaml").write_text(yaml.safe_dump(missing))
    with pytest.raises(InputError, match="tdp_w"):
        load_profile(tmp_path / "nopower.yaml")
    result = avf("profiles", tmp_path / "bad.yaml")
    assert result.returncode == 2 and "bad.yaml" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    listing = avf("profiles", "--json")
    assert listing.returncode == 0 and REQUIRED <= {p["name"] for p in json.loads(listing.stdout)}
    assert avf("profiles", "no-such-device").returncode == 2


@pytest.fixture(scope="module")
def small_checkpoint(tiny_run):
    """The session's tiny run (its data beside it, in ``../data``)."""
    return tiny_run / "run" / "best.pt"


def test_bench_checkpoint_and_artifact_the_same_way(small_checkpoint, tmp_path):
    pytest.importorskip("onnxruntime")
    artifact = tmp_path / "art"
    assert avf("compress", small_checkpoint, "--int8-dynamic", "-o", artifact, "--min-retention", 0.9).returncode == 0
    for target, backend, precision in [(small_checkpoint, "pytorch", "fp32"), (artifact, "onnxruntime", "int8-dynamic")]:
        out = tmp_path / f"{backend}.json"
        result = avf("bench", target, "--batch", "1,4", "--duration", 0.2, "--threads", 1, "-o", out)
        assert result.returncode == 0, result.stderr
        bench = json.loads(out.read_text())
        assert bench["target_facts"]["backend"] == backend and bench["target_facts"]["precision"] == precision
        single = bench["scenarios"]["single-stream"]
        assert 0 < single["p50_ms"] <= single["p99_ms"] and single["iterations"] >= 50
        assert [row["batch"] for row in bench["scenarios"]["offline"]] == [1, 4]
        assert all(row["samples_per_s"] > 0 for row in bench["scenarios"]["offline"])
        energy = single["energy"]
        assert energy["measured"] or energy["reason"].startswith("not available: ")
        assert bench["memory"]["peak_rss_mib"] > 0 and bench["conditions"]["threads"] == 1
        assert out.with_suffix(".png").is_file()
    bad = avf("bench", tmp_path / "nothing", "-o", tmp_path / "x.json")
    assert bad.returncode == 2 and "no such checkpoint or artifact" in bad.stderr
    wrong = avf("bench", artifact, "--backend", "pytorch", "-o", tmp_path / "y.json")
    assert wrong.returncode == 2 and "onnxruntime" in wrong.stderr and not (tmp_path / "y.json").exists()


@pytest.fixture(scope="module")
def artifact(small_checkpoint, tmp_path_factory):
    pytest.importorskip("onnxruntime")
    out = tmp_path_factory.mktemp("artifact") / "small.int8"
    result = avf("compress", small_checkpoint, "--int8", "--calib-size", 64, "-o", out, "--min-retention", 0.9)
    assert result.returncode == 0, result.stderr
    bench = out.parent / "bench.json"
    assert avf("bench", out, "--batch", "1,8", "--duration", 0.2, "-o", bench).returncode == 0
    return out, bench


def test_predict_writes_the_challenge_format(small_checkpoint, artifact, tmp_path):
    data = small_checkpoint.parents[1] / "data"
    for target in (small_checkpoint, artifact[0]):
        out = tmp_path / f"predictions.{target.name}.csv"
        result = avf("predict", target, "--data", data / "validate*.tfrecord", "--top-k", 5,
                     "--vocab", data / "vocabulary.csv", "-o", out)
        assert result.returncode == 0, result.stderr
        rows = out.read_text().strip().splitlines()
        assert rows[0] == "VideoId,LabelConfidencePairs,LabelNames" and len(rows) > 10
        video, pairs, names = rows[1].split(",")
        values = pairs.split()
        assert len(values) == 10 and len(names.split("|")) == 5
        confidences = [float(v) for v in values[1::2]]
        assert confidences == sorted(confidences, reverse=True) and all(0 <= c <= 1 for c in confidences)
    bad = avf("predict", artifact[0], "--data", tmp_path / "none*.tfrecord", "-o", tmp_path / "x.csv")
    assert bad.returncode == 2 and not (tmp_path / "x.csv").exists()


def test_plan_manifest_verify_triton(artifact, tmp_path):
    import shutil

    folder, bench = tmp_path / "artifact", artifact[1]
    shutil.copytree(artifact[0], folder)  # this test tampers with its copy
    plan = avf("deploy", "plan", folder, "--profile", "jetson-orin-nano-8gb", "--bench", bench, "--json")
    assert plan.returncode == 0, plan.stderr
    prediction = json.loads(plan.stdout)["prediction"]
    assert prediction["predicted"] and prediction["fits"] and prediction["batches"][0]["bound"] == "memory"
    manifest_path = tmp_path / "manifest.json"
    result = avf("deploy", "manifest", folder, "--profile", "x86-cpu", "--bench", bench, "-o", manifest_path)
    assert result.returncode == 0, result.stderr
    manifest = json.loads(manifest_path.read_text())
    assert manifest["latency_p50"]["status"] == "measured" and manifest["inputs"][0]["name"] == "rgb"
    # an INT8 artifact ships the TensorRT-parsable model.onnx and, beside it, the CPU-optimal model.cpu.onnx
    assert {f["name"] for f in manifest["files"]} == {"model.onnx", "model.cpu.onnx", "report.json"}
    assert manifest["accuracy"]["gap_retention"] >= 0.9 and isinstance(manifest["decision"]["deployable"], bool)
    predicted = tmp_path / "predicted.json"
    result = avf("deploy", "manifest", folder, "--profile", "t4", "-o", predicted)
    written = json.loads(predicted.read_text())
    assert written["latency_p99"]["status"] == "predicted"
    assert result.returncode == (0 if written["decision"]["deployable"] else 3)
    repo = tmp_path / "triton"
    assert avf("deploy", "triton", folder, "-o", repo).returncode == 0
    config = (repo / "attend_fusion" / "config.pbtxt").read_text()
    assert 'platform: "onnxruntime_onnx"' in config and "max_batch_size: 64" in config and "dynamic_batching" in config
    assert (repo / "attend_fusion" / "1" / "model.onnx").is_file()
    assert avf("deploy", "verify", manifest_path).returncode == 0
    with open(folder / "model.onnx", "ab") as fh:  # tamper with the deployed model
        fh.write(b"\0")
    result = avf("deploy", "verify", manifest_path)
    assert result.returncode == 1 and "model.onnx" in result.stderr and "mismatch" in result.stderr
    assert avf("deploy", "triton", folder, "-o", tmp_path / "triton2").returncode == 2  # a tampered artifact
    assert not (tmp_path / "triton2").exists()


def test_rejected_artifacts_are_refused(artifact, tmp_path):
    """The gate's verdict is in report.json (avf-compress's exit 3 path is tested in test_compress)."""
    import shutil

    rejected = tmp_path / "rejected"
    shutil.copytree(artifact[0], rejected)
    report = json.loads((rejected / "report.json").read_text())
    report.update(accepted=False, reason="GAP retention 0.9000 < 0.99")
    (rejected / "report.json").write_text(json.dumps(report))
    result = avf("deploy", "manifest", rejected, "--profile", "x86-cpu", "-o", tmp_path / "m.json")
    assert result.returncode == 2 and "rejected" in result.stderr and not (tmp_path / "m.json").exists()
    result = avf("deploy", "triton", rejected, "-o", tmp_path / "repo")
    assert result.returncode == 2 and "rejected" in result.stderr and not (tmp_path / "repo").exists()


def test_demo_runs_end_to_end(tmp_path):
    result = avf("demo", "-o", tmp_path / "demo", "--videos", 300, "--epochs", 1, "--duration", 0.2)
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert summary["gap_fp32"] > 0 and summary["gap_retention"] > 0.9 and summary["speedup"] > 1
    for name in ("manifest.json", "bench_fp32.json", "bench_int8.json", "run/best.pt", "attend_fusion.int8/model.onnx"):
        assert (tmp_path / "demo" / name).exists(), name
    assert "GAP retention" in result.stdout and "deployable on x86-cpu" in result.stdout


def test_exported_manifest_schema_is_current():
    from pathlib import Path

    from avf.deploy.manifest import DeploymentManifest

    committed = json.loads((Path(__file__).parents[1] / "docs" / "manifest.schema.json").read_text())
    assert committed == json.loads(json.dumps(DeploymentManifest.model_json_schema())), \
        "regenerate with: python -c \"from avf.deploy.manifest import export_schema; export_schema('docs/manifest.schema.json')\""
