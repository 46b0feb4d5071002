"""What runs on the device: ``python3 -m avf.remote.agent COMMAND ...``, answering in JSON on stdout.

It needs only avf's runtime install (no PyTorch). Files arrive into a cache keyed by their sha256
(``$AVF_CACHE_DIR`` or ``~/.cache/avf``): each is written to a temporary name, hashed as it arrives,
and renamed into place only when its hash is the one announced, so an interrupted or corrupted
transfer leaves nothing usable behind. While a command runs, a watchdog reads stdin: when the
workstation goes away (Ctrl-C, a dropped connection) stdin ends, and the agent stops at once.
Errors are one ``error:`` line on stderr and exit 2, like every avf command.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

from avf.atomic import atomic_directory, atomic_file
from avf.errors import InputError

CACHE_VARIABLE = "AVF_CACHE_DIR"
#: Exit status when the workstation went away mid-command.
ORPHANED = 129
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


class AgentError(Exception):
    """Bad input to the agent: printed as one error line, exit 2."""


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_VARIABLE) or Path.home() / ".cache" / "avf")


def device_facts() -> dict:
    """Where a figure is measured: host, CPU, GPU (nvidia-smi) or Jetson model, power mode, runtimes."""
    from avf import __version__

    facts = {"avf": __version__, "python": platform.python_version(), "host": platform.node(),
             "machine": platform.machine(), "system": platform.platform(), "cpu": _cpu_model(),
             "gpu": _command(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"]),
             "jetson_model": _read("/proc/device-tree/model"),
             "power_mode": _command(["nvpmodel", "-q"]),
             "runtimes": {name: _version_of(name) for name in ("onnxruntime", "tensorrt", "torch", "numpy")}}
    return facts


def _cpu_model() -> str | None:
    text = _read("/proc/cpuinfo") or ""
    found = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
    return found.group(1).strip() if found else platform.processor() or None


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text(errors="replace").strip("\x00\n ") or None
    except OSError:
        return None


def _command(argv: list[str]) -> str | None:
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return " ".join(result.stdout.split()) or None if result.returncode == 0 else None


def _version_of(module: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    names = {"onnxruntime": ("onnxruntime", "onnxruntime-gpu"), "tensorrt": ("tensorrt", "tensorrt-cu12")}
    for name in names.get(module, (module,)):
        try:
            return version(name)
        except PackageNotFoundError:
            continue
    return None


def has(hashes: list[str]) -> dict:
    """Which of these blobs the cache already holds."""
    blobs = cache_dir() / "blobs"
    return {"present": [sha for sha in map(_checked_sha, hashes) if (blobs / sha).is_file()]}


def receive(sha: str) -> dict:
    """Store stdin as blob ``sha``, only if its sha256 is ``sha``."""
    sha = _checked_sha(sha)
    blobs = cache_dir() / "blobs"
    blobs.mkdir(parents=True, exist_ok=True)
    final = blobs / sha
    digest, size = hashlib.sha256(), 0
    with atomic_file(final) as tmp, open(tmp, "wb") as out:  # renamed into place only if the hash matches
        while block := sys.stdin.buffer.read(1 << 20):
            digest.update(block)
            out.write(block)
            size += len(block)
        if digest.hexdigest() != sha:
            raise AgentError(f"received {size} bytes whose sha256 is {digest.hexdigest()[:16]}..., not "
                             f"{sha[:16]}...: the transfer was cut or corrupted; nothing was stored")
    return {"stored": sha, "bytes": size}


def assemble(entries: list[str]) -> dict:
    """A folder of named files from cached blobs (``NAME=SHA ...``), keyed by its contents."""
    files = {}
    for entry in entries:
        name, _, sha = entry.partition("=")
        if not _NAME.match(name):
            raise AgentError(f"{name!r} is not a file name avf sends")
        files[name] = _checked_sha(sha)
    key = hashlib.sha256("".join(f"{n} {s}\n" for n, s in sorted(files.items())).encode()).hexdigest()
    final = cache_dir() / "folders" / key
    if final.is_dir():
        return {"path": str(final)}
    try:
        with atomic_directory(final, what="cached folder") as tmp:
            for name, sha in files.items():
                blob = cache_dir() / "blobs" / sha
                if not blob.is_file():
                    raise AgentError(f"{name}: blob {sha[:16]}... was not sent")
                try:
                    os.link(blob, tmp / name)
                except OSError:
                    shutil.copyfile(blob, tmp / name)
    except InputError:  # another run assembled the same folder meanwhile
        if not final.is_dir():
            raise
    return {"path": str(final)}


def bench(args: list[str]) -> dict:
    """avf-bench on the device, on a target the workstation sent: the same function, the same record."""
    import argparse

    from avf.deploy.bench import benchmark

    parser = argparse.ArgumentParser(prog="avf.remote.agent bench", exit_on_error=False)
    parser.add_argument("target")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--batch", default="")
    parser.add_argument("--scenario", default="")
    parser.add_argument("--duration", type=float, required=True)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision")
    parser.add_argument("--cuda-graphs", action="store_true")
    try:
        options = parser.parse_args(args)
    except (argparse.ArgumentError, SystemExit) as exc:
        raise AgentError(f"bench: {exc}") from None
    batches = [int(b) for b in options.batch.split(",") if b] or None
    scenarios = [s for s in options.scenario.split(",") if s] or None
    result = benchmark(options.target, options.backend, batches, scenarios, options.duration, options.threads,
                       options.device, say=lambda line: print(line, file=sys.stderr, flush=True),
                       precision=options.precision, cuda_graphs=options.cuda_graphs)
    return {"bench": result}


def check(args: list[str]) -> dict:
    """avf-deploy check's measurement on the device: the deployed form scored on the data sent."""
    import argparse

    from avf.deploy.check import measure_check

    parser = argparse.ArgumentParser(prog="avf.remote.agent check", exit_on_error=False)
    parser.add_argument("artifact")
    parser.add_argument("data")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--device", default="cpu")
    try:
        options = parser.parse_args(args)
    except (argparse.ArgumentError, SystemExit) as exc:
        raise AgentError(f"check: {exc}") from None
    return {"measured": measure_check(options.artifact, options.data, options.backend, options.batch_size,
                                      options.threads, options.device)}


def build(args: list[str]) -> dict:
    """avf-deploy build on the device: model.plan built in the device's copy of the artifact, where it runs."""
    from avf.deploy.build import build_engine_here

    if len(args) != 1:
        raise AgentError("build: expected the artifact's path on the device")
    return {"built": build_engine_here(args[0])}


def _checked_sha(sha: str) -> str:
    if not _SHA256.match(sha):
        raise AgentError(f"{sha!r} is not a sha256")
    return sha


def _watch_stdin() -> None:
    """Stop this process (and what it started) when the workstation's side goes away."""

    def watch():
        while sys.stdin.buffer.read(1 << 16):
            pass
        os._exit(ORPHANED)

    threading.Thread(target=watch, daemon=True).start()


COMMANDS = {
    "hello": lambda args: {"facts": device_facts()},
    "has": has,
    "receive": lambda args: receive(*args),
    "assemble": assemble,
    "bench": bench,
    "check": check,
    "build": build,
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in COMMANDS:
        print(f"error: avf agent: expected one of {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    command, args = argv[0], argv[1:]
    if command != "receive":
        _watch_stdin()
    try:
        result = COMMANDS[command](args)
    except (AgentError, InputError) as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # not sys.exit: the watchdog thread is blocked reading stdin, which finalization cannot interrupt
