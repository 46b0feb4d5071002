"""Targets and the SSH transport: where a measurement runs, and every way reaching it can fail.

A target is ``local`` or ``ssh://[user@]host[:port]`` (or a bare host name, so a ``~/.ssh/config``
alias works). Every remote step is one ``ssh`` call in batch mode (no password is ever asked for or
handled by avf); ``AVF_SSH_CONFIG`` names another ssh configuration file (``ssh -F``). Each failure
(unreachable host, refused key, unknown host key, timeout, dropped connection, a remote command that
fails) is one InputError naming the host and what failed. Files go to a cache folder on the device
keyed by their sha256 (written to a temporary name there, hashed as they arrive, renamed when they
match), so a second run sends nothing new and nothing half-sent is ever used.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

from avf.errors import InputError

#: The ssh configuration file to use instead of ~/.ssh/config (``ssh -F``).
SSH_CONFIG_VARIABLE = "AVF_SSH_CONFIG"
#: Seconds to wait for a connection; seconds without an answer from the server before it counts as dropped.
CONNECT_TIMEOUT_S = 15
ALIVE_INTERVAL_S, ALIVE_COUNT = 5, 3
#: OpenSSH's own exit status for "ssh itself failed" (connection, authentication, host key).
SSH_FAILED = 255

_HOST = re.compile(r"^[A-Za-z0-9_.:%\[\]-]+$")


@dataclass(frozen=True)
class SshTarget:
    """A device reached over SSH; ``python`` is its interpreter that has avf installed."""

    host: str
    user: str | None = None
    port: int | None = None
    python: str = "python3"

    @property
    def name(self) -> str:
        user = f"{self.user}@" if self.user else ""
        port = f":{self.port}" if self.port else ""
        return f"ssh://{user}{self.host}{port}"

    def __str__(self) -> str:
        return self.name


def parse_target(text: str | None, python: str = "python3") -> SshTarget | None:
    """``local`` (or nothing) -> None; ``ssh://[user@]host[:port]`` or a bare host name -> SshTarget."""
    text = (text or "local").strip()
    if text == "local":
        return None
    rest = text[len("ssh://"):] if text.startswith("ssh://") else text
    if "://" in text and not text.startswith("ssh://"):
        raise InputError(None, f"--target {text!r}: expected local, ssh://[user@]host[:port] or a host name")
    user, _, hostport = rest.rpartition("@")
    host, port = hostport, None
    if hostport.startswith("["):  # [IPv6]:port
        host, _, tail = hostport[1:].partition("]")
        port = tail[1:] if tail.startswith(":") else None
    elif hostport.count(":") == 1:
        host, port = hostport.split(":")
    if not host or not _HOST.match(host) or host.startswith("-") or (user and (user.startswith("-") or not _HOST.match(user))):
        raise InputError(None, f"--target {text!r}: not a host name (expected ssh://[user@]host[:port])")
    if port is not None and not (port.isdigit() and 0 < int(port) < 65536):
        raise InputError(None, f"--target {text!r}: port {port!r} is not a port number")
    if not python.strip():
        raise InputError(None, "--remote-python: give the device's Python interpreter (default python3)")
    return SshTarget(host, user or None, int(port) if port else None, python)


class RemoteError(InputError):
    """A remote step failed: names the target and what failed."""


class RemoteCommandFailed(RemoteError):
    """The remote command ran and exited non-zero; ``code`` is its exit status."""

    def __init__(self, target: SshTarget, problem: str, code: int):
        super().__init__(target.name, problem)
        self.code = code

    def __reduce__(self):
        return (InputError, (self.path, self.problem, self.offset))


def _ssh_failure(target: SshTarget, stderr: str) -> str:
    """What OpenSSH's own failure (exit 255) means, in one line."""
    text = " ".join(stderr.split())
    unreachable = "cannot reach the device: "
    dropped = "the connection to the device dropped"
    known = (("Permission denied", unreachable + "authentication failed (the key was refused; avf uses your ssh keys "
                                   "and agent and never asks for a password)"),
             ("Host key verification failed", unreachable + "the host key is unknown or has changed (connect once "
                                              "with ssh to accept it)"),
             ("Could not resolve hostname", unreachable + "the host name does not resolve"),
             ("Connection refused", unreachable + "the connection was refused (no SSH server on that port?)"),
             ("Connection timed out", unreachable + "the host did not answer (connection timed out)"),
             ("Operation timed out", unreachable + "the host did not answer (connection timed out)"),
             ("No route to host", unreachable + "there is no route to the host"),
             ("Network is unreachable", unreachable + "the network is unreachable"),
             ("Timeout, server", dropped + " (the server stopped answering)"),
             ("Connection reset", dropped + " (reset by the peer)"),
             ("Broken pipe", dropped + " (broken pipe)"),
             ("closed by remote host", dropped + " (closed by the device)"),
             ("Connection closed", dropped + " (closed by the device)"))
    for needle, meaning in known:
        if needle in text:
            return meaning
    return f"ssh failed: {text[:300] or 'no message'}"


class SshConnection:
    """Runs commands on one target with the system ssh client; each call is one ssh process."""

    def __init__(self, target: SshTarget, timeout_s: float = 600):
        self.target = target
        self.timeout_s = timeout_s

    def ssh_command(self, remote: list[str]) -> list[str]:
        """The local argv that runs ``remote`` (an argv, quoted for the remote shell) on the target."""
        argv = ["ssh", "-o", "BatchMode=yes", "-o", f"ConnectTimeout={CONNECT_TIMEOUT_S}",
                "-o", f"ServerAliveInterval={ALIVE_INTERVAL_S}", "-o", f"ServerAliveCountMax={ALIVE_COUNT}"]
        config = os.environ.get(SSH_CONFIG_VARIABLE)
        if config:
            argv += ["-F", config]
        if self.target.port:
            argv += ["-p", str(self.target.port)]
        if self.target.user:
            argv += ["-l", self.target.user]
        return argv + [self.target.host, "--", " ".join(shlex.quote(part) for part in remote)]

    def run(self, remote: list[str], *, stdin: bytes | Path | None = None, what: str = "the remote command",
            timeout_s: float | None = None) -> str:
        """Run ``remote`` on the target; its stdout as text. Any failure is one RemoteError naming the host.

        The remote side sees its stdin close when this process stops (Ctrl-C, SIGTERM, a timeout): the
        agent watches for that and stops too, so nothing is left running on the device.
        """
        timeout_s = timeout_s or self.timeout_s
        try:
            process = subprocess.Popen(self.ssh_command(remote), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                       stderr=subprocess.PIPE, start_new_session=True)
        except FileNotFoundError:
            raise RemoteError(self.target.name, "the ssh client is not installed on this machine (install "
                                                "OpenSSH's client: apt install openssh-client)") from None
        out, err = bytearray(), bytearray()
        threads = [threading.Thread(target=_feed, args=(process, stdin), daemon=True),
                   threading.Thread(target=_drain, args=(process.stdout, out), daemon=True),
                   threading.Thread(target=_drain, args=(process.stderr, err), daemon=True)]
        for thread in threads:
            thread.start()
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _stop(process)
            raise RemoteError(self.target.name, f"{what} did not finish within {timeout_s:g} s; stopped it") from None
        except BaseException:  # Ctrl-C, SIGTERM: end ssh, which closes the remote side's stdin
            _stop(process)
            raise
        finally:
            _close(process.stdin)
        for thread in threads[1:]:
            thread.join()
        stderr = bytes(err).decode("utf-8", "replace")
        if process.returncode == SSH_FAILED:
            raise RemoteError(self.target.name, _ssh_failure(self.target, stderr))
        if process.returncode != 0:
            raise RemoteCommandFailed(self.target, _remote_problem(what, stderr, process.returncode),
                                      process.returncode)
        return bytes(out).decode("utf-8", "replace")


def _feed(process: subprocess.Popen, stdin: bytes | Path | None) -> None:
    """Send ``stdin`` (bytes or a file's contents) and close it, its end marking the end of the data; with
    nothing to send, keep the pipe open until the command ends: the agent stops when its stdin reaches end
    of file, which is how the device notices this side going away."""
    if stdin is None:
        return
    try:
        if isinstance(stdin, Path):
            with open(stdin, "rb") as fh:
                while block := fh.read(1 << 20):
                    process.stdin.write(block)
        else:
            process.stdin.write(stdin)
    except (BrokenPipeError, OSError, ValueError):
        pass
    _close(process.stdin)


def _drain(stream, into: bytearray) -> None:
    while block := stream.read(1 << 16):
        into.extend(block)


def _close(stream) -> None:
    try:
        stream.close()
    except (BrokenPipeError, OSError, ValueError):
        pass


def _stop(process: subprocess.Popen) -> None:
    import signal

    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _remote_problem(what: str, stderr: str, code: int) -> str:
    """The remote side's own ``error:`` line when it printed one, else the last line it printed."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    if errors:
        return f"{what} failed on the device: {errors[-1][len('error:'):].strip()}"
    if any("No module named avf" in line or "No module named 'avf'" in line for line in lines):
        return "avf is not installed on the device (pip install 'avf[runtime]' there, or name its interpreter with --remote-python)"
    if code == 127:
        return f"{what} failed on the device: command not found ({lines[-1] if lines else 'no message'})"
    return f"{what} failed on the device (exit {code}): {lines[-1][:300] if lines else 'no message'}"
