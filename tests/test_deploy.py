"""Device profiles validate and name bad fields; avf-bench measures checkpoints and artifacts alike."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from avf.deploy.profiles import all_profiles, load_profile
from avf.errors import InputError

REQUIRED = {"jetson-orin-nano-8gb", "jetson-orin-nx-16gb", "jetson-agx-orin-64gb", "jetson-xavier-nx", "rtx-3090",
            "rtx-4090", "t4", "a100", "h100", "x86-cpu"}


def avf(*args):
    return subprocess.run([sys.executable, "-m", "avf", *map(str, args)], capture_output=True, text=True, timeout=600)


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
def small_checkpoint(tmp_path_factory):
    pytest.importorskip("torch")
    from avf.data.synthetic import synthesize
    from avf.train.loop import TrainSettings, train

    root = tmp_path_factory.mktemp("bench")
    synthesize(root / "data", videos=300, classes=12, seed=4)
    train(TrainSettings(model="attend_fusion", train=str(root / "data" / "train*.tfrecord"),
                        val=str(root / "data" / "validate*.tfrecord"), out=str(root / "run"), epochs=1,
                        batch_size=64, width=32, attention_width=32, heads=2))
    return root / "run" / "best.pt"


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
