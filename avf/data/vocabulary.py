"""YouTube-8M ``vocabulary.csv``: class names for reports and the hash that ties a model to them."""

from __future__ import annotations

import csv
import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

from avf.documents import open_regular
from avf.errors import InputError

VOCABULARY_FILE = "vocabulary.csv"


@dataclass(frozen=True)
class Vocabulary:
    path: str
    names: tuple[str, ...]
    sha256: str

    @property
    def num_classes(self) -> int:
        return len(self.names)

    def name(self, index: int) -> str:
        return self.names[index] if 0 <= index < len(self.names) and self.names[index] else f"class {index}"


def file_sha256(path: str | Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open_regular(Path(path), "a file") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def load_vocabulary(path: str | Path) -> Vocabulary:
    """Read the Index and Name columns; every index 0..N-1 exactly once, or one error naming the line.

    The bytes are read once: the names and the sha256 come from the same read.
    """
    path = Path(path)
    with open_regular(path, "a vocabulary.csv file") as fh:
        data = fh.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(path, "not UTF-8 text") from None
    try:
        reader = csv.DictReader(io.StringIO(text, newline=""))
        missing = [column for column in ("Index", "Name") if column not in (reader.fieldnames or [])]
        if missing:
            raise InputError(path, f"not a YouTube-8M vocabulary (no {' or '.join(map(repr, missing))} column)")
        rows: dict[int, str] = {}
        for line, row in enumerate(reader, start=2):
            try:
                index = int(row["Index"])
            except (TypeError, ValueError):
                raise InputError(path, f"line {line}: Index {row['Index']!r} is not an integer") from None
            if index < 0:
                raise InputError(path, f"line {line}: negative Index {index}")
            if index in rows:
                raise InputError(path, f"line {line}: Index {index} appears twice")
            rows[index] = (row.get("Name") or "").strip()
    except csv.Error as exc:
        raise InputError(path, f"malformed CSV: {exc}") from None
    if not rows:
        raise InputError(path, "vocabulary has no classes")
    absent = sorted(set(range(max(rows) + 1)) - rows.keys())
    if absent:
        shown = ", ".join(map(str, absent[:5])) + (", ..." if len(absent) > 5 else "")
        raise InputError(path, f"indices must run 0..{max(rows)} without gaps; missing {len(absent)}: {shown}")
    names = tuple(rows[i] for i in range(len(rows)))
    return Vocabulary(str(path), names, hashlib.sha256(data).hexdigest())


def check_same_vocabulary(expected_sha256: str | None, expected_from: str | Path,
                          actual_sha256: str | None, actual_from: str | Path) -> None:
    """Refuse to pair a model, data or a vocabulary.csv with data or a model of another vocabulary.csv.

    The class count alone cannot tell two vocabularies apart, and class 7 of one is not class 7 of
    the other: scores and names would be silently wrong. Checkpoints, artifacts and data record the
    sha256 of the vocabulary.csv they were made with; where either side records none (data without
    a vocabulary.csv), there is nothing to compare and the pair is allowed.
    """
    if expected_sha256 and actual_sha256 and expected_sha256 != actual_sha256:
        raise InputError(actual_from, f"vocabulary.csv sha256 {actual_sha256[:12]}… differs from {expected_sha256[:12]}… "
                                      f"recorded by {expected_from}: its class indices would name other classes")


def find_vocabulary(shards: list[Path]) -> Vocabulary | None:
    """The ``vocabulary.csv`` beside the first shard, as YouTube-8M downloads lay it out."""
    for shard in shards[:1]:
        candidate = shard.parent / VOCABULARY_FILE
        if candidate.is_file():
            return load_vocabulary(candidate)
    return None
