"""TFRecord framing: read and write the container format without TensorFlow.

Each record is ``uint64 length | masked crc32c(length) | payload | masked crc32c(payload)``.
Both CRCs are checked with CRC32C (google-crc32c), so a flipped byte anywhere in a shard is
reported with the file and the byte offset of the record it hit.

Files are read with ordinary buffered reads (never mmap), in chunks of whole records, so a
shard that another process truncates while it is read ends in a clean "truncated" error
instead of SIGBUS. Only regular files are opened (a FIFO or a device is refused before any
read could block).

Compression is decided by content, TFRecord framing first: a file whose first 12 bytes are a
valid TFRecord header (length and its CRC) is read as plain TFRecord, whatever its name;
otherwise a file starting with the GZIP magic ``1f 8b`` is read as GZIP. (A plain shard whose
first length happens to start with ``1f 8b`` is therefore still read as plain: a GZIP stream
passing the 32-bit header CRC by chance is a 1 in 4 billion event.) GZIP is inflated as a
stream, never whole: memory stays bounded by one read chunk plus one record, and the total
inflated size is capped (``max_gzip_bytes``) so a decompression bomb is refused, not inflated.
Byte offsets in errors for GZIP files are offsets in the decompressed stream.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import google_crc32c
import numpy as np

from avf.atomic import atomic_file
from avf.documents import open_regular
from avf.errors import RecordError

_HEADER = struct.Struct("<QI")
_CRC = struct.Struct("<I")
_MASK_DELTA = 0xA282EAD8
#: The default cap on one record: a YouTube-8M frame-level record is ~350 KB, so anything past
#: 256 MiB is a misread length. The YouTube-8M reader sets a far tighter cap from its frame cap.
MAX_RECORD_BYTES = 1 << 28
#: Bytes read (or inflated) per step; a chunk always ends on a record boundary.
CHUNK_BYTES = 1 << 23
#: GZIP inflation cap: 64 MiB plus 100x the compressed size (features compress ~1.1-2x).
GZIP_FLOOR_BYTES = 1 << 26
GZIP_MAX_RATIO = 100
_GZIP_MAGIC = b"\x1f\x8b"
_COMPRESSED_READ = 1 << 20


def masked_crc32c(data: bytes) -> int:
    """TFRecord's masked CRC32C: a CRC of data that itself holds CRCs stays informative."""
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def _open_regular(path: Path):
    """The shard opened for plain unbuffered reads, and its stat; anything but a regular file is refused."""
    fh = open_regular(path, "a TFRecord file", RecordError, buffering=0)
    return fh, os.fstat(fh.fileno())


class _PlainSource:
    def __init__(self, fh, head: bytes):
        self._fh, self._head = fh, head

    def read(self, n: int) -> bytes:
        if self._head:
            out, self._head = self._head, b""
            return out + self._read_exact(n - len(out)) if n > len(out) else out
        return self._read_exact(n)

    def _read_exact(self, n: int) -> bytes:
        parts, got = [], 0
        while got < n:
            part = self._fh.read(n - got)
            if not part:
                break
            parts.append(part)
            got += len(part)
        return b"".join(parts)


class _GzipError(Exception):
    pass


class _GzipSource:
    """Streaming, bounded GZIP inflation (multi-member streams included)."""

    def __init__(self, fh, head: bytes, limit: int):
        self._fh, self._pending, self._limit = fh, head, limit
        self._inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        self._total = 0
        self._eof = False

    def _compressed(self) -> bytes:
        if self._pending:
            data, self._pending = self._pending, b""
            return data
        return self._fh.read(_COMPRESSED_READ)

    def read(self, n: int) -> bytes:
        parts, got = [], 0
        while got < n and not self._eof:
            inflater = self._inflater
            if inflater.eof:
                rest = inflater.unused_data or self._compressed()
                if not rest:
                    self._eof = True
                    break
                if not rest.startswith(_GZIP_MAGIC[: len(rest)]):
                    raise _GzipError("trailing data after the GZIP stream is not GZIP")
                self._inflater = inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
                data = rest
            elif inflater.unconsumed_tail:
                data = inflater.unconsumed_tail
            else:
                data = self._compressed()
                if not data:
                    out = inflater.flush()
                    if not inflater.eof:
                        raise _GzipError("GZIP stream is truncated")
                    self._account(out)
                    parts.append(out)
                    got += len(out)
                    continue
            try:
                out = inflater.decompress(data, min(n - got, CHUNK_BYTES))
            except zlib.error as exc:
                raise _GzipError(f"corrupt GZIP stream ({exc})") from None
            self._account(out)
            parts.append(out)
            got += len(out)
        return b"".join(parts)

    def _account(self, out: bytes) -> None:
        self._total += len(out)
        if self._total > self._limit:
            raise _GzipError(f"decompressed size exceeds {self._limit} bytes (a decompression bomb?)")


@dataclass(slots=True)
class RecordChunk:
    """Whole records of one file held in one buffer: record i is
    ``buf[starts[i] : starts[i] + lengths[i]]`` and begins at byte ``offsets[i]`` of the file."""

    path: Path
    buf: bytes
    offsets: list[int]
    starts: list[int]
    lengths: list[int]
    #: (first record, path) for each file the chunk holds records of (several small files
    #: may share one buffer); None: all of ``path``.
    segments: list[tuple[int, str]] | None = None

    def __post_init__(self):
        if self.segments is None:
            self.segments = [(0, str(self.path))]

    def __len__(self) -> int:
        return len(self.starts)

    def payload(self, i: int) -> bytes:
        start = self.starts[i]
        return self.buf[start : start + self.lengths[i]]


def iter_chunks(path: str | Path, chunk_bytes: int | None = None, max_gzip_bytes: int | None = None,
                max_record_bytes: int = MAX_RECORD_BYTES, too_large: str = "a misread length") -> Iterator[RecordChunk]:
    """Yield the file's records in chunks, both CRCs checked.

    On bad framing, the records before the bad one are yielded first, then RecordError is
    raised naming the file and the offset of the bad record: a truncated tail, a length CRC
    mismatch (not a TFRecord, or a corrupt header), a payload CRC mismatch, corrupt GZIP, a
    record longer than ``max_record_bytes`` (refused from its header, before it is read, so one
    record never costs more memory than that; ``too_large`` says what such a length means).
    """
    path = Path(path)
    chunk_bytes = chunk_bytes or CHUNK_BYTES
    fh, info = _open_regular(path)
    with fh:
        head = fh.read(_HEADER.size)
        source = _PlainSource(fh, head)
        if len(head) >= 2 and head[:2] == _GZIP_MAGIC and not _valid_header(head):
            limit = max_gzip_bytes if max_gzip_bytes is not None else GZIP_FLOOR_BYTES + GZIP_MAX_RATIO * info.st_size
            source = _GzipSource(fh, head, limit)
        yield from _frame(path, source, chunk_bytes, max_record_bytes, too_large)


def _valid_header(head: bytes) -> bool:
    if len(head) < _HEADER.size:
        return False
    _, length_crc = _HEADER.unpack_from(head, 0)
    return masked_crc32c(head[:8]) == length_crc


def _crc_table() -> np.ndarray:
    table = np.zeros(256, np.uint32)
    for i in range(256):
        crc = i
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
        table[i] = crc
    return table


_CRC_TABLE = _crc_table()


def _masked_header_crcs(a: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """Masked CRC32C of the 8 length bytes at each ``pos``, all headers at once."""
    crc = np.full(len(pos), 0xFFFFFFFF, np.uint32)
    for k in range(8):
        crc = _CRC_TABLE[(crc ^ a[pos + k]) & 0xFF] ^ (crc >> np.uint32(8))
    crc ^= np.uint32(0xFFFFFFFF)
    return ((crc >> np.uint32(15)) | (crc << np.uint32(17))) + np.uint32(_MASK_DELTA)


def _le32(a: np.ndarray, pos: np.ndarray) -> np.ndarray:
    b = a[pos[:, None] + np.arange(4)].astype(np.uint32)
    return b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16) | (b[:, 3] << 24)


def _frame(path: Path, source, chunk_bytes: int, max_record_bytes: int, too_large: str) -> Iterator[RecordChunk]:
    """Walk the records of each buffer on their lengths alone, then verify what the walk
    trusted: every header CRC at once (numpy), then the payload CRCs of the records before
    the first bad header. An error is reported at the first bad record in file order."""
    unpack_length = struct.Struct("<Q").unpack_from
    crc = google_crc32c.value
    base = 0  # file offset of buf[0]
    buf = _read(path, source, chunk_bytes, 0)
    while buf:
        size = len(buf)
        pos = 0
        heads, lengths = [], []
        while size - pos >= 12:
            length = unpack_length(buf, pos)[0]
            end = pos + 16 + length
            if end > size or length > max_record_bytes:  # the header is checked and the length refused below
                break
            heads.append(pos)
            lengths.append(length)
            pos = end
        a = np.frombuffer(buf, np.uint8)
        check = heads + [pos] if size - pos >= 12 else heads
        error = None
        good = len(heads)
        if check:
            at = np.array(check, np.int64)
            bad = _masked_header_crcs(a, at) != _le32(a, at + 8)
            if bad.any():
                first = int(np.argmax(bad))
                what = "not a TFRecord file" if base + check[first] == 0 else "corrupt record header"
                error = RecordError(path, f"{what} (length CRC mismatch)", base + check[first])
                good = min(good, first)
        if error is None and size - pos >= 12:
            length = unpack_length(buf, pos)[0]
            if length > max_record_bytes:
                error = RecordError(path, f"record of {length:,} bytes exceeds the cap of {max_record_bytes:,} bytes "
                                          f"({too_large})", base + pos)
        starts = [head + 12 for head in heads[:good]]
        lengths = lengths[:good]
        if starts:
            ends = np.array(starts, np.int64) + np.array(lengths, np.int64)
            computed = np.array([crc(buf[start : start + length]) for start, length in zip(starts, lengths)], np.uint32)
            masked = ((computed >> np.uint32(15)) | (computed << np.uint32(17))) + np.uint32(_MASK_DELTA)
            bad = masked != _le32(a, ends)
            if bad.any():
                first = int(np.argmax(bad))
                error = RecordError(path, "corrupt record payload (data CRC mismatch)", base + heads[first])
                starts, lengths = starts[:first], lengths[:first]
        if starts:
            yield RecordChunk(path, buf, [base + start - 12 for start in starts], starts, lengths)
        if error is not None:
            raise error
        need = chunk_bytes
        if size - pos >= 12:
            need = max(chunk_bytes, pos + 16 + unpack_length(buf, pos)[0] - size)
        tail = buf[pos:]
        base += pos
        more = _read(path, source, need, base)
        if not more:
            if not tail:
                return
            if len(tail) < 12:
                raise RecordError(path, f"truncated: {len(tail)} trailing bytes, a record header needs 12", base)
            length = unpack_length(tail, 0)[0]
            raise RecordError(path, f"truncated: record of {length} bytes runs past the end of the file", base)
        buf = tail + more if tail else more


def _read(path: Path, source, n: int, offset: int) -> bytes:
    try:
        return source.read(n)
    except _GzipError as exc:
        raise RecordError(path, str(exc), offset) from None
    except OSError as exc:
        raise RecordError(path, f"read failed ({exc.strerror or exc})", offset) from None


def iter_payloads(path: str | Path) -> Iterator[tuple[int, bytes]]:
    """Yield ``(byte_offset, payload)`` for every record, checking both CRCs.

    Raises RecordError naming the file and the offset of the first bad record: a truncated
    tail, a length CRC mismatch (not a TFRecord, or a corrupt header), or a payload CRC
    mismatch (corrupt data).
    """
    for chunk in iter_chunks(path):
        for i, offset in enumerate(chunk.offsets):
            yield offset, chunk.payload(i)


class _Aborted(Exception):
    """Handed to the atomic write on :meth:`TFRecordWriter.abort`: the shard is not to replace anything."""


class TFRecordWriter:
    """Write records atomically, through :func:`avf.atomic.atomic_file`: data goes to a temporary beside the
    shard that is renamed into place on a clean close.

    An exception inside the ``with`` block (or :meth:`abort`) removes the temporary, so a crash never leaves
    a half-written shard under the final name, and a full disk is one error naming the shard.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        with ExitStack() as stack:  # a failure to open leaves no temporary behind
            tmp = stack.enter_context(atomic_file(self.path))
            self._fh = stack.enter_context(open(tmp, "wb"))
            self._stack = stack.pop_all()  # kept open until close() or abort()
        self.records = 0

    def write(self, payload: bytes) -> None:
        header = struct.pack("<Q", len(payload))
        self._fh.write(header)
        self._fh.write(_CRC.pack(masked_crc32c(header)))
        self._fh.write(payload)
        self._fh.write(_CRC.pack(masked_crc32c(payload)))
        self.records += 1

    def close(self) -> None:
        """Flush, close and rename the shard into place (a second call does nothing)."""
        self._stack.close()

    def abort(self) -> None:
        """Close and remove the temporary; whatever was at the shard's path stays."""
        self._stack.__exit__(_Aborted, _Aborted(), None)

    def __enter__(self) -> TFRecordWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self._stack.__exit__(exc_type, exc, tb)
