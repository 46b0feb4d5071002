"""Write outputs so that a crash or Ctrl-C never leaves a half-written file or directory."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from avf.errors import InputError


def _default_mode(directory: bool) -> int:
    """What a plain open()/mkdir() would give under the current umask (mkstemp/mkdtemp give 0o600/0o700)."""
    umask = os.umask(0)
    os.umask(umask)
    return (0o777 if directory else 0o666) & ~umask


@contextmanager
def atomic_file(final: str | Path, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temp path beside ``final``; it replaces ``final`` only if the block succeeds.

    The temp name keeps ``suffix`` (some writers pick the format from it, e.g. ``.tmp.onnx``);
    on any failure it is removed, so ``final`` is either the old file or the complete new one.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=suffix, dir=final.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        tmp.chmod(_default_mode(directory=False))
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(final: str | Path, text: str) -> None:
    with atomic_file(final) as tmp:
        tmp.write_text(text)


def check_can_create(final: Path, force: bool) -> None:
    if final.exists() and not force:
        raise InputError(final, "already exists (pass --force to replace it)")


@contextmanager
def atomic_directory(final: str | Path, force: bool = False) -> Iterator[Path]:
    """Yield a temp directory beside ``final``; rename it into place only if the block succeeds.

    With ``force`` an existing ``final`` is replaced, and removed only after the new one is in.
    """
    final = Path(final)
    check_can_create(final, force)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    tmp.chmod(_default_mode(directory=True))  # mkdtemp makes it private; the result gets normal permissions
    try:
        yield tmp
        if final.exists():
            trash = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".old", dir=final.parent))
            os.replace(final, trash / final.name)
            os.replace(tmp, final)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
