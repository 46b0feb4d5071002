"""A real device over SSH for the tests: OpenSSH's sshd on 127.0.0.1 and a runtime-only avf install.

The server runs on a free port with a throwaway host key; the client reaches it through an ssh
configuration file (``AVF_SSH_CONFIG``) holding a throwaway key, as a user's ~/.ssh/config would. The
device's Python is a second virtual environment with ``pip install '.[runtime]'`` only (no PyTorch),
so what works here works on a device without PyTorch. Nothing of the transport is mocked.
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Device:
    port: int
    config: Path
    python: Path
    cache: Path
    sshd: subprocess.Popen
    root: Path

    @property
    def target(self) -> str:
        return f"ssh://127.0.0.1:{self.port}"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)


def _device_python(root: Path) -> Path:
    """A virtual environment holding avf's runtime install only (built once per session)."""
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    result = subprocess.run([str(python), "-m", "pip", "install", "--quiet", f"{REPO}[runtime]"],
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    probe = subprocess.run([str(python), "-c", "import importlib.util as u; print(u.find_spec('torch') is None)"],
                           capture_output=True, text=True)
    assert probe.stdout.strip() == "True", "the device venv must not hold PyTorch"
    return python


def start_sshd(root: Path) -> tuple[subprocess.Popen, int, Path]:
    sshd = shutil.which("sshd") or "/usr/sbin/sshd"
    if not Path(sshd).exists() or not shutil.which("ssh"):
        pytest.skip("OpenSSH (openssh-server, openssh-client) is not installed; .ci/run installs it")
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege-separation folder
    _keygen(root / "host_key")
    _keygen(root / "client_key")
    shutil.copy(root / "client_key.pub", root / "authorized_keys")
    port = _free_port()
    (root / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {root / 'host_key'}\n"
        f"AuthorizedKeysFile {root / 'authorized_keys'}\nPubkeyAuthentication yes\nPasswordAuthentication no\n"
        f"KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nPermitRootLogin prohibit-password\n"
        f"PidFile {root / 'sshd.pid'}\nLogLevel ERROR\n")
    process = subprocess.Popen([sshd, "-D", "-e", "-f", str(root / "sshd_config")], stdout=subprocess.DEVNULL,
                               stderr=open(root / "sshd.log", "wb"))
    for _ in range(100):
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                break
        if process.poll() is not None:
            pytest.fail(f"sshd did not start: {(root / 'sshd.log').read_text()}")
        time.sleep(0.1)
    config = root / "ssh_config"
    config.write_text(f"Host *\n  User {getpass.getuser()}\n  IdentityFile {root / 'client_key'}\n  IdentitiesOnly yes\n"
                      f"  UserKnownHostsFile {root / 'known_hosts'}\n  StrictHostKeyChecking accept-new\n"
                      f"  LogLevel ERROR\n")
    return process, port, config


@pytest.fixture(scope="session")
def ssh_device(tmp_path_factory):
    """A running sshd and the device's runtime-only Python; AVF_SSH_CONFIG and AVF_REMOTE_CACHE set for it."""
    root = tmp_path_factory.mktemp("device")
    process, port, config = start_sshd(root)
    previous = {name: os.environ.get(name) for name in ("AVF_SSH_CONFIG", "AVF_REMOTE_CACHE")}
    try:
        python = _device_python(root)
        os.environ["AVF_SSH_CONFIG"] = str(config)
        os.environ["AVF_REMOTE_CACHE"] = str(root / "cache")
        yield Device(port, config, python, root / "cache", process, root)
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        process.terminate()
        process.wait(timeout=10)
