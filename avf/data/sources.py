"""Turn what a user types (a file, a directory, a glob, or a list of them) into shard paths."""

from __future__ import annotations

import glob as globlib
from collections.abc import Iterable
from pathlib import Path

from avf.errors import InputError

#: Files a directory contributes: YouTube-8M names its shards ``train0000.tfrecord`` etc.
TFRECORD_PATTERNS = ("*.tfrecord", "*.tfrecords", "*.tfrecord.gz", "*.tfrecord-*")


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
            if not matches:
                raise InputError(path, "directory holds no TFRecord files (*.tfrecord)")
        elif globlib.has_magic(text):
            matches = sorted(Path(m) for m in globlib.glob(str(path)) if Path(m).is_file())
            if not matches:
                raise InputError(text, "pattern matches no files")
        elif path.exists():
            matches = [path]
        else:
            raise InputError(path, "file not found")
        for match in matches:
            found.setdefault(match, None)
    return list(found)
