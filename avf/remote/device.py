"""A device reached over SSH, as avf's commands use it: check it, send it files, run the agent there.

The agent's answers are JSON, parsed and validated here like local documents; files are sent once
(the device's cache is keyed by sha256, so a second run sends nothing new).
"""

from __future__ import annotations

import json
import os
import shlex
from collections.abc import Callable
from pathlib import Path

from avf.data.vocabulary import file_sha256
from avf.remote.ssh import RemoteError, SshConnection, SshTarget

#: Where the agent keeps what it is sent on the device (default ~/.cache/avf there).
REMOTE_CACHE_VARIABLE = "AVF_REMOTE_CACHE"


class RemoteDevice:
    def __init__(self, target: SshTarget, timeout_s: float = 600, say: Callable[[str], None] | None = None):
        self.target = target
        self.connection = SshConnection(target, timeout_s)
        self.say = say or (lambda line: None)
        self.sent_bytes = 0
        self._facts: dict | None = None

    def agent(self, *args: str, stdin: Path | bytes | None = None, what: str = "the avf agent",
              timeout_s: float | None = None) -> dict:
        """Run ``python -m avf.remote.agent ARGS`` on the device; its JSON answer."""
        prefix = []
        cache = os.environ.get(REMOTE_CACHE_VARIABLE)
        if cache:
            prefix = ["env", f"AVF_CACHE_DIR={cache}"]
        out = self.connection.run([*prefix, self.target.python, "-m", "avf.remote.agent", *args], stdin=stdin,
                                  what=what, timeout_s=timeout_s)
        lines = [line for line in out.splitlines() if line.strip()]
        try:
            answer = json.loads(lines[-1]) if lines else None
        except json.JSONDecodeError:
            answer = None
        if not isinstance(answer, dict):
            raise RemoteError(self.target.name, f"{what} answered something that is not avf's JSON: "
                                                f"{shlex.quote(out[-200:]) if out else 'nothing'}")
        return answer

    def facts(self) -> dict:
        """The device's facts; refuses a device whose avf is another version than this one."""
        from avf import __version__

        if self._facts is None:
            facts = self.agent("hello", what="checking avf on the device", timeout_s=120).get("facts")
            if not isinstance(facts, dict) or not isinstance(facts.get("avf"), str):
                raise RemoteError(self.target.name, "the device's avf did not describe itself")
            if facts["avf"] != __version__:
                raise RemoteError(self.target.name, f"the device has avf {facts['avf']}, this machine {__version__}: "
                                                    "install the same version there (pip install 'avf[runtime]')")
            self._facts = facts
        return self._facts

    def send_folder(self, folder: Path, names: list[str]) -> str:
        """Send these files of ``folder`` (those the device lacks); the folder's path on the device."""
        hashes = {name: file_sha256(folder / name) for name in names}
        return self.send_files({name: (folder / name, sha) for name, sha in hashes.items()})

    def send_files(self, files: dict[str, tuple[Path, str]]) -> str:
        """Files by the name they get on the device: (local path, sha256). Returns the remote folder."""
        present = set(self.agent("has", *(sha for _, sha in files.values()), what="listing the device's cache")
                      .get("present", []))
        for name, (path, sha) in files.items():
            if sha in present:
                continue
            size = path.stat().st_size
            self.say(f"sending {name} ({size / 1e6:.1f} MB) to {self.target.name}")
            self.agent("receive", sha, stdin=path, what=f"sending {path}")
            self.sent_bytes += size
            present.add(sha)
        answer = self.agent("assemble", *(f"{name}={sha}" for name, (_, sha) in files.items()),
                            what="assembling the files on the device")
        remote = answer.get("path")
        if not isinstance(remote, str):
            raise RemoteError(self.target.name, "the device did not say where it put the files")
        return remote


def device_for(target_text: str | None, remote_python: str = "python3", say=None) -> RemoteDevice | None:
    """The device a ``--target`` names, checked (reachable, same avf); None for ``local``."""
    from avf.remote.ssh import parse_target

    target = parse_target(target_text, remote_python)
    if target is None:
        return None
    device = RemoteDevice(target, say=say)
    device.facts()
    return device

