"""Turn what a user types (a file, a directory, a glob, or a list of them) into shard paths.

An existing path is always taken literally, so a file whose name holds glob characters
(``clip[1].tfrecord``) is read, not treated as a pattern. Only regular files are returned: a
FIFO, socket or device is refused here (reading one could block forever).
"""

from __future__ import annotations

import glob as globlib
import os
from collections.abc import Iterable
from pathlib import Path

from avf.documents import check_regular_file
from avf.errors import InputError

#: Files a directory contributes: YouTube-8M names its shards ``train0000.tfrecord`` etc.
TFRECORD_PATTERNS = ("*.tfrecord", "*.tfrecords", "*.tfrecord.gz", "*.tfrecord-*")


def _regular(path: Path) -> bool:
    """True for a regular file; False for a directory; InputError for a FIFO/socket/device."""
    if path.is_dir():
        return False
    check_regular_file(path, "a TFRecord file")
    return True


def expand_sources(spec: str | Path | Iterable[str | Path]) -> list[Path]:
    """Sorted, de-duplicated shard paths; an error when a part of the spec matches nothing."""
    parts = [spec] if isinstance(spec, (str, Path)) else list(spec)
    if not parts:
        raise InputError(None, "no input given")
    found: dict[Path, None] = {}
    for part in parts:
        text = str(part)
        path = Path(text).expanduser()
        if path.is_dir():
            matches = sorted({m for pattern in TFRECORD_PATTERNS for m in path.glob(pattern)})
            matches = [m for m in matches if _regular(m)]
            if not matches:
                raise InputError(path, "directory holds no TFRecord files (*.tfrecord)")
        elif os.path.lexists(path):  # an existing literal path wins over globbing
            if not _regular(path):
                raise InputError(path, "is a directory, expected a TFRecord file")
            matches = [path]
        elif globlib.has_magic(text):
            matches = sorted(Path(m) for m in globlib.glob(str(path)))
            matches = [m for m in matches if _regular(m)]
            if not matches:
                raise InputError(text, "pattern matches no files")
        else:
            raise InputError(path, "file not found")
        for match in matches:
            found.setdefault(match, None)
    return list(found)
