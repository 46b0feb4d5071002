"""Write outputs so that a crash or Ctrl-C never leaves a half-written file or directory."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from avf.errors import InputError


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
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp makes it private; the finished directory gets normal permissions
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
