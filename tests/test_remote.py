"""The SSH transport against a real sshd on 127.0.0.1 and a device venv without PyTorch."""

from __future__ import annotations

import subprocess
import sys

import pytest

import avf
from avf.errors import InputError
from avf.remote.device import RemoteDevice
from avf.remote.ssh import RemoteError, SshTarget, parse_target
from ssh_device import ssh_device  # noqa: F401,F811  (the fixture)


def _device(ssh_device, **kwargs) -> RemoteDevice:  # noqa: F811
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


def test_the_device_describes_itself_and_has_no_torch(ssh_device):  # noqa: F811
    facts = _device(ssh_device).facts()
    assert facts["avf"] == avf.__version__ and facts["runtimes"]["torch"] is None
    assert facts["runtimes"]["onnxruntime"] and facts["host"] and facts["cpu"]


def test_files_are_sent_once_and_arrive_whole(ssh_device, tmp_path):  # noqa: F811
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


def test_a_corrupted_transfer_stores_nothing(ssh_device):  # noqa: F811
    device = _device(ssh_device)
    with pytest.raises(RemoteError, match="transfer was cut or corrupted") as err:
        device.agent("receive", "0" * 64, stdin=b"not what was announced")
    assert err.value.path == f"ssh://127.0.0.1:{ssh_device.port}"
    assert not (ssh_device.cache / "blobs" / ("0" * 64)).exists()
    assert not [p for p in (ssh_device.cache / "blobs").iterdir() if p.name.endswith(".tmp")]


def test_an_unreachable_device_is_one_error_naming_it(ssh_device):  # noqa: F811
    from ssh_device import _free_port

    port = _free_port()  # nothing listens there
    with pytest.raises(RemoteError, match="connection was refused") as err:
        RemoteDevice(SshTarget("127.0.0.1", port=port)).facts()
    assert err.value.path == f"ssh://127.0.0.1:{port}"


def test_a_refused_key_is_an_authentication_error(ssh_device, tmp_path, monkeypatch):  # noqa: F811
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "other")], check=True)
    config = tmp_path / "config"
    config.write_text(ssh_device.config.read_text().replace(str(ssh_device.root / "client_key"),
                                                             str(tmp_path / "other")))
    monkeypatch.setenv("AVF_SSH_CONFIG", str(config))
    with pytest.raises(RemoteError, match="authentication failed"):
        _device(ssh_device).facts()


def test_a_device_without_avf_says_so(ssh_device, tmp_path):  # noqa: F811
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "bare")], check=True)
    target = SshTarget("127.0.0.1", port=ssh_device.port, python=str(tmp_path / "bare" / "bin" / "python"))
    with pytest.raises(RemoteError, match="avf is not installed on the device"):
        RemoteDevice(target).facts()


def test_a_device_with_another_avf_is_refused(ssh_device, monkeypatch):  # noqa: F811
    monkeypatch.setattr(avf, "__version__", "0.0.0-other")
    with pytest.raises(RemoteError, match=r"the device has avf .*, this machine 0\.0\.0-other"):
        _device(ssh_device).facts()
