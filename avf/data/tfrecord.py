"""TFRecord framing: read and write the container format without TensorFlow.

Each record is ``uint64 length | masked crc32c(length) | payload | masked crc32c(payload)``.
Both CRCs are checked with a hardware CRC32C (google-crc32c), so a flipped byte anywhere in
a shard is reported with the file and the byte offset of the record it hit.
"""

from __future__ import annotations

import gzip
import mmap
import os
import struct
import tempfile
from collections.abc import Iterator
from pathlib import Path

import google_crc32c

from avf.errors import RecordError

_HEADER = struct.Struct("<QI")
_CRC = struct.Struct("<I")
_MASK_DELTA = 0xA282EAD8
# A YouTube-8M frame-level record is ~350 KB; anything past 1 GiB is a misread length.
_MAX_RECORD_BYTES = 1 << 30


def masked_crc32c(data: bytes | memoryview) -> int:
    """TFRecord's masked CRC32C: a CRC of data that itself holds CRCs stays informative."""
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def _open_bytes(path: Path) -> tuple[bytes | mmap.mmap, object | None]:
    """Whole file as a buffer: mmap for plain shards, decompressed bytes for GZIP ones."""
    try:
        fh = open(path, "rb")
    except FileNotFoundError:
        raise RecordError(path, "file not found") from None
    except IsADirectoryError:
        raise RecordError(path, "is a directory, expected a TFRecord file") from None
    except PermissionError:
        raise RecordError(path, "permission denied") from None
    with fh:
        magic = fh.read(2)
        if magic == b"\x1f\x8b":
            fh.seek(0)
            try:
                return gzip.decompress(fh.read()), None
            except (OSError, EOFError) as exc:
                raise RecordError(path, f"GZIP-compressed TFRecord is corrupt: {exc}") from None
        if os.fstat(fh.fileno()).st_size == 0:
            return b"", None
        mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        return mm, mm


def iter_payloads(path: str | Path) -> Iterator[tuple[int, bytes]]:
    """Yield ``(byte_offset, payload)`` for every record, checking both CRCs.

    Raises RecordError naming the file and the offset of the first bad record: a truncated
    tail, a length CRC mismatch (not a TFRecord, or a corrupt header), or a payload CRC
    mismatch (corrupt data).
    """
    path = Path(path)
    buf, closer = _open_bytes(path)
    try:
        size = len(buf)
        offset = 0
        unpack = _HEADER.unpack_from
        unpack_crc = _CRC.unpack_from
        while offset < size:
            if size - offset < _HEADER.size:
                raise RecordError(
                    path, f"truncated: {size - offset} trailing bytes, a record header needs 12", offset
                )
            length, length_crc = unpack(buf, offset)
            if masked_crc32c(buf[offset : offset + 8]) != length_crc:
                what = "not a TFRecord file" if offset == 0 else "corrupt record header"
                raise RecordError(path, f"{what} (length CRC mismatch)", offset)
            if length > _MAX_RECORD_BYTES:
                raise RecordError(path, f"implausible record length {length}", offset)
            start = offset + _HEADER.size
            end = start + length
            if end + 4 > size:
                raise RecordError(
                    path, f"truncated: record of {length} bytes runs past the end of the file", offset
                )
            payload = buf[start:end]
            (data_crc,) = unpack_crc(buf, end)
            if masked_crc32c(payload) != data_crc:
                raise RecordError(path, "corrupt record payload (data CRC mismatch)", offset)
            yield offset, payload
            offset = end + 4
    finally:
        if closer is not None:
            closer.close()


class TFRecordWriter:
    """Write records atomically: data goes to a temp file that is renamed on a clean close.

    An exception inside the ``with`` block removes the temp file, so a crash never leaves a
    half-written shard under the final name.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        self._tmp = Path(tmp)
        self._fh = os.fdopen(fd, "wb")
        self.records = 0

    def write(self, payload: bytes) -> None:
        header = struct.pack("<Q", len(payload))
        self._fh.write(header)
        self._fh.write(_CRC.pack(masked_crc32c(header)))
        self._fh.write(payload)
        self._fh.write(_CRC.pack(masked_crc32c(payload)))
        self.records += 1

    def close(self) -> None:
        if self._fh.closed:
            return
        self._fh.close()
        os.replace(self._tmp, self.path)

    def abort(self) -> None:
        if not self._fh.closed:
            self._fh.close()
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> TFRecordWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
