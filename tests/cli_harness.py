"""Run the real ``avf`` command (in this process, or as its own process) and watch what it touches: the tests'
one harness."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from pathlib import Path

#: A command that reads a FIFO or loops would otherwise hang the whole suite.
HANG_SECONDS = 300


def cli(*args) -> tuple[int, str, str]:
    """Run ``avf ARGS`` in this process, through the same ``run`` the console scripts use; returns
    (exit code, stdout, stderr). A command still running after HANG_SECONDS fails the test."""
    from avf.cli.app import run

    def hung(signum, frame):
        raise TimeoutError(f"avf {' '.join(map(str, args))} hung")

    out, err = io.StringIO(), io.StringIO()
    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(HANG_SECONDS)
    try:
        with redirect_stdout(out), redirect_stderr(err):
            try:
                run([str(a) for a in args])
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    return code, out.getvalue(), err.getvalue()


def avf_process(*args, cwd=None, timeout: float = 900) -> subprocess.CompletedProcess:
    """Run ``python -m avf ARGS`` as a process of its own (what a user's shell runs: its own imports, signals
    and exit), capturing its text output; a command still running after ``timeout`` seconds fails the test."""
    return subprocess.run([sys.executable, "-m", "avf", *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          timeout=timeout)


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under ``root`` (hidden ones included) with its size and modification time."""
    state = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            info = path.lstat()
            state[str(path.relative_to(root))] = (info.st_size if path.is_file() else -1, info.st_mtime_ns)
    return state


@contextmanager
def working_in(folder: Path):
    """Run the enclosed commands from ``folder``, so that they name their files as a user in it would
    (``data/train*.tfrecord``, ``run/best.pt``); the previous working folder is back afterwards."""
    previous = os.getcwd()
    os.chdir(folder)
    try:
        yield folder
    finally:
        os.chdir(previous)
