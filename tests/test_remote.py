"""The SSH transport against a real sshd on 127.0.0.1 and a device venv without PyTorch."""

from __future__ import annotations

import subprocess
import sys

import pytest

import avf
from avf.errors import InputError
from avf.remote.device import RemoteDevice
from avf.remote.ssh import RemoteError, SshTarget, parse_target


def _device(ssh_device, **kwargs) -> RemoteDevice:
    return RemoteDevice(SshTarget("127.0.0.1", port=ssh_device.port, python=str(ssh_device.python)), **kwargs)


@pytest.mark.parametrize("text, expected", [
    ("local", None), (None, None), ("ssh://jetson", SshTarget("jetson")),
    ("ssh://nvidia@orin.lan:2222", SshTarget("orin.lan", "nvidia", 2222)), ("orin-nx", SshTarget("orin-nx")),
    ("ssh://[fe80::1]:22", SshTarget("fe80::1", None, 22)),
])
def test_targets_are_parsed(text, expected):
    assert parse_target(text) == expected


@pytest.mark.parametrize("text", ["ssh://", "ssh://-oProxyCommand=x", "http://host", "ssh://host:99999",
                                  "ssh://a b", "ssh://host:port"])
def test_bad_targets_are_one_error(text):
    with pytest.raises(InputError, match="--target"):
        parse_target(text)


def test_the_device_describes_itself_and_has_no_torch(ssh_device):
    facts = _device(ssh_device).facts()
    assert facts["avf"] == avf.__version__ and facts["runtimes"]["torch"] is None
    assert facts["runtimes"]["onnxruntime"] and facts["host"] and facts["cpu"]


def test_files_are_sent_once_and_arrive_whole(ssh_device, tmp_path):
    folder = tmp_path / "artifact"
    folder.mkdir()
    (folder / "model.onnx").write_bytes(bytes(range(256)) * 4096)
    (folder / "report.json").write_text('{"a": 1}\n')
    device = _device(ssh_device)
    remote = device.send_folder(folder, ["model.onnx", "report.json"])
    assert device.sent_bytes == 256 * 4096 + 9
    for name in ("model.onnx", "report.json"):
        assert (ssh_device.cache / "folders").joinpath(remote.rsplit("/", 1)[-1], name).read_bytes() == \
            (folder / name).read_bytes()
    again = _device(ssh_device)
    assert again.send_folder(folder, ["model.onnx", "report.json"]) == remote and again.sent_bytes == 0


def test_a_corrupted_transfer_stores_nothing(ssh_device):
    device = _device(ssh_device)
    with pytest.raises(RemoteError, match="transfer was cut or corrupted") as err:
        device.agent("receive", "0" * 64, stdin=b"not what was announced")
    assert err.value.path == f"ssh://127.0.0.1:{ssh_device.port}"
    assert not (ssh_device.cache / "blobs" / ("0" * 64)).exists()
    assert not [p for p in (ssh_device.cache / "blobs").iterdir() if p.name.endswith(".tmp")]


def test_an_unreachable_device_is_one_error_naming_it(ssh_device):
    from ssh_device import _free_port

    port = _free_port()  # nothing listens there
    with pytest.raises(RemoteError, match="connection was refused") as err:
        RemoteDevice(SshTarget("127.0.0.1", port=port)).facts()
    assert err.value.path == f"ssh://127.0.0.1:{port}"


def test_a_refused_key_is_an_authentication_error(ssh_device, tmp_path, monkeypatch):
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "other")], check=True)
    config = tmp_path / "config"
    config.write_text(ssh_device.config.read_text().replace(str(ssh_device.root / "client_key"),
                                                             str(tmp_path / "other")))
    monkeypatch.setenv("AVF_SSH_CONFIG", str(config))
    with pytest.raises(RemoteError, match="authentication failed"):
        _device(ssh_device).facts()


def test_a_device_without_avf_says_so(ssh_device, tmp_path):
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "bare")], check=True)
    target = SshTarget("127.0.0.1", port=ssh_device.port, python=str(tmp_path / "bare" / "bin" / "python"))
    with pytest.raises(RemoteError, match="avf is not installed on the device"):
        RemoteDevice(target).facts()


def test_a_device_with_another_avf_is_refused(ssh_device, monkeypatch):
    monkeypatch.setattr(avf, "__version__", "0.0.0-other")
    with pytest.raises(RemoteError, match=r"the device has avf .*, this machine 0\.0\.0-other"):
        _device(ssh_device).facts()


# ----------------------------------------------------------------------------- measurements on the device


def _bench_args(artifact, out, ssh_device, *extra):
    return ("bench", artifact, "--batch", "1,4", "--duration", 0.05, "--threads", 1, "-o", out,
            "--target", ssh_device.target, "--remote-python", ssh_device.python, *extra)


def test_bench_over_ssh_measures_on_the_device_and_sends_once(ssh_device, tiny_artifact, tmp_path):
    from cli_harness import cli

    from avf.deploy.bench_record import read_bench

    code, out, err = cli(*_bench_args(tiny_artifact, tmp_path / "remote.json", ssh_device))
    assert code == 0, err
    bench = read_bench(tmp_path / "remote.json")
    assert bench["measured_on"]["target"] == ssh_device.target
    assert bench["measured_on"]["device"]["runtimes"]["torch"] is None  # measured where PyTorch is absent
    assert bench["conditions"]["torch"] is None and bench["target"] == str(tiny_artifact.resolve())
    assert bench["target_facts"]["backend"] == "onnxruntime" and bench["scenarios"]["single-stream"]["p50_ms"] > 0
    assert [row["batch"] for row in bench["scenarios"]["offline"]] == [1, 4]
    assert "sending model.onnx" in err and f"measured on {ssh_device.target}" in out
    code, out, err = cli(*_bench_args(tiny_artifact, tmp_path / "again.json", ssh_device))
    assert code == 0 and "sending" not in err, err  # the device's cache already holds it
    # the manifest takes a bench measured on the device like a local one (same model.onnx hash)
    code, _, err = cli("deploy", "plan", tiny_artifact, "-p", "x86-cpu", "--bench", tmp_path / "remote.json")
    assert code == 0, err


def test_a_failing_remote_bench_is_one_error_naming_the_host(ssh_device, tiny_artifact, tmp_path):
    from cli_harness import cli, snapshot

    before = snapshot(tmp_path)
    code, _, err = cli(*_bench_args(tiny_artifact, tmp_path / "b.json", ssh_device, "--backend", "tensorrt"))
    assert code == 2 and err.count("error:") == 1 and ssh_device.target in err, err
    assert "tensorrt" in err.lower() and "Traceback" not in err
    assert snapshot(tmp_path) == before


def _remote_agents(ssh_device) -> list[int]:
    """Pids of agent processes running on the device (the test's device is this machine)."""
    found = subprocess.run(["pgrep", "-f", f"{ssh_device.python} -m avf.remote.agent bench"], capture_output=True,
                           text=True)
    return [int(pid) for pid in found.stdout.split()]


def _start_long_bench(ssh_device, tiny_artifact, out):
    import time

    args = ["bench", tiny_artifact, "--duration", 60, "-o", out, "--target", ssh_device.target,
            "--remote-python", ssh_device.python]
    process = subprocess.Popen([sys.executable, "-m", "avf", *map(str, args)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not _remote_agents(ssh_device):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the remote bench never started"
        time.sleep(0.2)
    time.sleep(1)
    return process


def _gone(ssh_device, seconds=15) -> bool:
    import time

    deadline = time.monotonic() + seconds
    while _remote_agents(ssh_device):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def test_ctrl_c_stops_the_remote_bench_too(ssh_device, tiny_artifact, tmp_path):
    import signal

    process = _start_long_bench(ssh_device, tiny_artifact, tmp_path / "b.json")
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 128 + signal.SIGINT and "interrupted (SIGINT)" in err, err
    assert _gone(ssh_device), "the agent kept running on the device"
    assert not (tmp_path / "b.json").exists()


def test_a_dropped_connection_is_one_error_and_stops_the_device_side(ssh_device, tiny_artifact, tmp_path):
    import os
    import signal

    process = _start_long_bench(ssh_device, tiny_artifact, tmp_path / "b.json")
    children = subprocess.run(["pgrep", "-P", str(ssh_device.sshd.pid)], capture_output=True, text=True).stdout.split()
    assert children
    for pid in children:  # the server side of every open session dies, as when a device reboots or a link fails
        os.kill(int(pid), signal.SIGKILL)
    _, err = process.communicate(timeout=90)
    assert process.returncode == 2 and err.count("error:") == 1 and ssh_device.target in err, err
    assert "dropped" in err or "closed" in err, err
    assert _gone(ssh_device), "the agent kept running on the device"
    assert not (tmp_path / "b.json").exists()


def test_tune_measures_every_candidate_on_the_device(ssh_device, tiny_run, tmp_path):
    import json

    from cli_harness import cli

    out = tmp_path / "tune"
    code, _, err = cli("tune", tiny_run / "run" / "best.pt", "-p", "x86-cpu", "-o", out, "--max-latency-ms", 1000,
                       "--ratio-step", 0.45, "--calib-size", 64, "--duration", 0.05, "--threads", 1,
                       "--finetune-epochs", 0, "--min-retention", 0.5, "--target", ssh_device.target,
                       "--remote-python", ssh_device.python)
    assert code in (0, 3), err
    assert f"measured on {ssh_device.target} with avf-bench" in err
    records = json.loads((out / "candidates.json").read_text())["candidates"]
    assert records and all(r["cost"]["status"] == "measured" for r in records)
    assert all(ssh_device.target in r["cost"]["source"] for r in records)
    for record in records:
        bench = json.loads((out / record["bench"]).read_text())
        assert bench["measured_on"]["target"] == ssh_device.target and bench["conditions"]["torch"] is None
    state = json.loads((out / "tune.json").read_text())
    assert state["costs"] == f"measured: avf-bench on {ssh_device.target}"


def test_tune_refuses_an_unreachable_target_before_any_output(ssh_device, tiny_run, tmp_path):
    from cli_harness import cli, snapshot
    from ssh_device import _free_port

    before = snapshot(tmp_path)
    code, _, err = cli("tune", tiny_run / "run" / "best.pt", "-p", "x86-cpu", "-o", tmp_path / "tune",
                       "--target", f"ssh://127.0.0.1:{_free_port()}")
    assert code == 2 and err.count("error:") == 1 and "connection was refused" in err, err
    assert snapshot(tmp_path) == before


def test_a_full_disk_on_the_device_is_one_error_and_leaves_nothing_there(ssh_device, tiny_artifact, tmp_path,
                                                                          monkeypatch):
    from cli_harness import cli, snapshot

    small = tmp_path / "small_disk"
    small.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(small)], capture_output=True,
                             text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small file system here to fill: {mounted.stderr.strip()}")
    try:
        monkeypatch.setenv("AVF_REMOTE_CACHE", str(small / "cache"))
        before = snapshot(tmp_path / "out") if (tmp_path / "out").exists() else {}
        code, _, err = cli(*_bench_args(tiny_artifact, tmp_path / "out" / "b.json", ssh_device))
        assert code == 2 and err.count("error:") == 1, err
        assert ssh_device.target in err and "No space left on device" in err, err
        leftovers = [p.name for p in (small / "cache").rglob("*") if p.is_file()]
        assert all(not name.endswith(".tmp") for name in leftovers), leftovers  # nothing half-written there
        assert not (tmp_path / "out").exists() or snapshot(tmp_path / "out") == before
    finally:
        subprocess.run(["umount", str(small)], check=True)


def test_check_scores_the_deployed_form_on_the_device(ssh_device, tiny_run, tiny_artifact, tmp_path):
    import json

    from cli_harness import cli

    data = tiny_run / "data" / "test*.tfrecord"
    code, out, err = cli("deploy", "check", tiny_artifact, "--data", data, "-o", tmp_path / "local.json")
    assert code == 0, err
    code, out, err = cli("deploy", "check", tiny_artifact, "--data", data, "-o", tmp_path / "remote.json",
                         "--target", ssh_device.target, "--remote-python", ssh_device.python)
    assert code == 0, err
    assert f"measured on {ssh_device.target}" in out
    local, remote = (json.loads((tmp_path / name).read_text()) for name in ("local.json", "remote.json"))
    assert remote["conditions"]["measured_on"]["target"] == ssh_device.target
    assert remote["conditions"]["measured_on"]["device"]["runtimes"]["torch"] is None
    assert remote["data"]["content_sha256"] == local["data"]["content_sha256"]
    for key in ("gap", "f1", "map"):  # the same model, data and runtime: the same figures, measured there
        assert remote["deployed"][key] == pytest.approx(local["deployed"][key], abs=1e-6)
        assert remote["reference"][key] == local["reference"][key]
    # the manifest takes it like a local check
    code, _, err = cli("deploy", "manifest", tiny_artifact, "-p", "x86-cpu", "--check", tmp_path / "remote.json",
                       "-o", tiny_artifact / "manifest-remote.json")
    assert code in (0, 3), err
    manifest = json.loads((tiny_artifact / "manifest-remote.json").read_text())
    (tiny_artifact / "manifest-remote.json").unlink()
    assert manifest["checks"] and manifest["checks"][0]["backend"] == "onnxruntime"


def test_a_device_without_tensorrt_refuses_a_build_naming_the_host_and_what_to_install(ssh_device, tiny_artifact):
    from cli_harness import cli

    code, _, err = cli("deploy", "build", tiny_artifact, "--target", ssh_device.target, "--remote-python",
                       ssh_device.python)
    assert code == 2 and err.count("error:") == 1 and ssh_device.target in err, err
    assert "tensorrt" in err.lower() and "JetPack" in err


def test_tune_for_a_tensorrt_profile_on_a_device_without_tensorrt_predicts_and_says_why(ssh_device, tiny_run,
                                                                                       tmp_path):
    import json

    from cli_harness import cli

    out = tmp_path / "tune"
    code, _, err = cli("tune", tiny_run / "run" / "best.pt", "-p", "jetson-orin-nano-8gb", "-o", out,
                       "--ratio-step", 0.45, "--calib-size", 64, "--duration", 0.05, "--threads", 1,
                       "--finetune-epochs", 0, "--min-retention", 0.5, "--time-budget", 3,
                       "--target", ssh_device.target, "--remote-python", ssh_device.python)
    assert code in (0, 3), err
    records = json.loads((out / "candidates.json").read_text())["candidates"]
    assert records and all(r["cost"]["status"] == "predicted" for r in records)
    assert all(f"not measured on {ssh_device.target}" in r["cost"]["source"] and "TensorRT" in r["cost"]["source"]
               for r in records), records[0]["cost"]["source"]
    assert "its cost is predicted" in err
