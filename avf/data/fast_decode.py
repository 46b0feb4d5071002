"""The numpy path of the decoder: canonical video-level records of a whole chunk at once.

Nearly every video-level record is laid out the way TensorFlow writes it (four features, each
one packed block). Recognising that layout for a whole chunk in a few vectorised passes, and
gathering the features straight out of the buffer, is what makes the reader several times
faster than a per-record parse. Anything it does not recognise is left to the exact decoder
(``avf.data.decode``), so this path can only be faster, never different.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from avf.data.schema import AUDIO_DIM, RGB_DIM

RGB_BYTES, AUDIO_BYTES = 4 * RGB_DIM, 4 * AUDIO_DIM
#: Entries the numpy path follows per record; a record with more goes to the exact decoder.
_MAX_ENTRIES = 8
#: The context keys the numpy path knows, by code: 0 id, 1 labels, 2 mean_rgb, 3 mean_audio
#: (with their Feature kind tags), 4 anything starting "segment_" of the segment keys' lengths
#: (sent to the exact decoder). Looked up by key length, then compared in one step.
_KNOWN = [(b"id", 0x0A), (b"labels", 0x1A), (b"mean_rgb", 0x12), (b"mean_audio", 0x12)]
_KEY_WIDTH = 19  # len("segment_start_times"), the longest
_HEAD_WIDTH = 5 + _KEY_WIDTH  # 0a ELEN(2) 0a KLEN KEY
_KEY_CODE = np.full(256, -1, np.int64)
_KEY_BYTES = np.zeros((6, _KEY_WIDTH), np.uint8)
_KEY_MASK = np.zeros((6, _KEY_WIDTH), bool)
_KEY_KIND = np.full(6, -1, np.int64)
for _code, (_key, _kind) in enumerate(_KNOWN + [(b"segment_", -1)]):
    _KEY_BYTES[_code, : len(_key)] = np.frombuffer(_key, np.uint8)
    _KEY_MASK[_code, : len(_key)] = True
    _KEY_KIND[_code] = _kind
    for _length in ([len(_key)] if _kind >= 0 else [len("segment_labels"), len("segment_start_times")]):
        _KEY_CODE[_length] = _code
_KEY_MASK[5] = True  # row -1: never matches (code -1 is masked out anyway)


@dataclass(slots=True)
class FastRecords:
    """What the numpy path decoded of a run of records.

    ``ok[j]``: record j was decoded here; ``counts[j]``: its number of labels (0 where not
    decoded); ``labels``: the decoded records' labels, in record order; ``data_start`` and
    ``data_len`` (rows 0 id, 1 labels, 2 mean_rgb, 3 mean_audio): where each record's values lie.
    """

    ok: np.ndarray
    counts: np.ndarray
    labels: np.ndarray
    data_start: np.ndarray
    data_len: np.ndarray

    @property
    def rows(self) -> np.ndarray:
        return np.flatnonzero(self.ok)


def nothing_decoded(n: int) -> FastRecords:
    """The result of leaving all ``n`` records to the exact decoder."""
    zeros = np.zeros((4, n), np.int64)
    return FastRecords(np.zeros(n, bool), np.zeros(n, np.int64), np.zeros(0, np.int64), zeros, zeros)


def decode_canonical(a: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> FastRecords:
    """Decode the canonical records among ``a[starts[j]:ends[j]]``: their layout, then their labels.

    A record whose packed label block is malformed is handed back undecoded: the exact decoder
    says why.
    """
    ok, data_start, data_len = scan_video_layout(a, starts, ends)
    counts = np.zeros(len(starts), np.int64)
    labels = np.zeros(0, np.int64)
    fast = np.flatnonzero(ok)
    if fast.size:
        labels_ok, label_counts, labels = packed_varints(a, data_start[1, fast], data_len[1, fast])
        if not labels_ok.all():
            ok[fast[~labels_ok]] = False
            fast = fast[labels_ok]
            _, label_counts, labels = packed_varints(a, data_start[1, fast], data_len[1, fast])
        counts[fast] = label_counts
    return FastRecords(ok, counts, labels, data_start, data_len)


def feature_blocks(a: np.ndarray, decoded: FastRecords, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The mean_rgb and mean_audio bytes of the decoded ``rows``, (k, 4096) and (k, 512) uint8.

    A row gather from a sliding-window view: no per-record work, one copy.
    """
    rgb = sliding_window_view(a, RGB_BYTES)[decoded.data_start[2, rows]]
    audio = sliding_window_view(a, AUDIO_BYTES)[decoded.data_start[3, rows]]
    return rgb, audio


def _len2(a: np.ndarray, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Length varints of at most 2 bytes (< 16384) at ``pos``: values and the position after.
    A longer one gets a value no range check can pass, leaving its record to the exact path."""
    b0 = a.take(pos, mode="clip")
    b1 = a.take(pos + 1, mode="clip")
    two = b0 >= 0x80
    value = np.where(two, (b0 & 0x7F) | (b1.astype(np.int64) << 7), b0)
    bad = two & (b1 >= 0x80)
    if bad.any():
        value[bad] = 1 << 40
    return value, pos + 1 + two


def scan_video_layout(a: np.ndarray, starts: np.ndarray, ends: np.ndarray):
    """Recognise canonical video-level records (a whole chunk at once).

    Returns ``ok`` and, per record, where the id, labels, mean_rgb and mean_audio data start
    and how long they are. A record is ``ok`` only when every byte of its structure is
    accounted for: top-level ``features`` (then nothing, or an empty ``feature_lists``), at
    most 8 map entries of the form key/value, each Feature one list of one block, the four
    wanted keys once each with the right kinds and sizes (labels optional, packed), lengths
    below 16384. Anything else is left to the exact decoder. Every byte read for an accepted
    record lies inside it (reads past the buffer are clipped, and only happen for records that
    are then refused).
    """
    n = len(starts)
    size = len(a)
    if size < RGB_BYTES + AUDIO_BYTES:
        zeros = np.zeros((4, n), np.int64)
        return np.zeros(n, bool), zeros, zeros
    ok = (a.take(starts, mode="clip") == 0x0A) & (starts < ends) & (ends <= size)
    flen, fstart = _len2(a, starts + 1)
    fend = fstart + flen
    ok &= (fend == ends) | ((fend + 2 == ends) & (a.take(fend, mode="clip") == 0x12)
                            & (a.take(fend + 1, mode="clip") == 0))
    seen = np.zeros((5, n), np.int64)
    data_start = np.zeros((5, n), np.int64)
    data_len = np.zeros((5, n), np.int64)
    window = sliding_window_view(a, _HEAD_WIDTH)
    cur = fstart
    for _ in range(_MAX_ENTRIES):
        active = ok & (cur < fend)
        if not active.any():
            break
        idx = np.flatnonzero(active)
        c = cur[idx]
        # one gather holds the entry's tag, its length varint, the key's tag and length and
        # the key itself: 0a ELEN(1-2 bytes) 0a KLEN KEY...
        head = window[np.minimum(c, size - _HEAD_WIDTH)]
        e0, e1 = head[:, 1], head[:, 2]
        two = e0 >= 0x80
        elen = np.where(two, (e0 & 0x7F) | (e1.astype(np.int64) << 7), e0)
        q = c + 2 + two
        qend = q + elen
        klen = np.where(two, head[:, 4], head[:, 3]).astype(np.int64)
        keyb = np.where(two[:, None], head[:, 5:], head[:, 4:-1])
        kend = q + 2 + klen
        vlen, fs = _len2(a, kend + 1)
        llen, ls = _len2(a, fs + 1)
        dlen, ds = _len2(a, ls + 1)
        tag = a.take(fs, mode="clip")
        empty = llen == 0
        good = ((head[:, 0] == 0x0A) & (np.where(two, head[:, 3], head[:, 2]) == 0x0A) & ~(two & (e1 >= 0x80))
                & (c <= size - _HEAD_WIDTH) & (klen < 0x80)
                & (a.take(kend, mode="clip") == 0x12) & (qend <= fend[idx]) & (vlen > 0)
                & (fs + vlen == qend) & (ls + llen == qend)
                & (empty | ((a.take(ls, mode="clip") == 0x0A) & (ds + dlen == qend))))
        dlen[empty] = 0
        # which wanted key (if any): one table lookup by key length, one compare
        code = _KEY_CODE[klen & 0xFF]
        match = (code >= 0) & ((keyb == _KEY_BYTES[code]) | ~_KEY_MASK[code]).all(axis=1)
        # segment annotations, or a wanted key of the wrong kind: the exact decoder decides
        good &= ~match | ((code < 4) & (tag == _KEY_KIND[code]))
        sel = np.flatnonzero(match & good)
        rows, kind = idx[sel], code[sel]
        seen[kind, rows] += 1  # one entry per record per step: no repeated (kind, row) pairs
        data_start[kind, rows] = ds[sel]
        data_len[kind, rows] = dlen[sel]
        ok[idx[~good]] = False
        cur = cur.copy() if cur is fstart else cur
        cur[idx] = qend
    ok &= cur >= fend
    ok &= (seen[0] == 1) & (data_len[0] > 0) & (seen[1] <= 1) & (seen[2] == 1) & (seen[3] == 1)
    ok &= (data_len[2] == RGB_BYTES) & (data_len[3] == AUDIO_BYTES)
    return ok, data_start, data_len


def packed_varints(a: np.ndarray, starts: np.ndarray, lengths: np.ndarray):
    """Decode packed int64 blocks: (ok per block, counts per block, values)."""
    total = int(lengths.sum())
    n = len(starts)
    if total == 0:
        return np.ones(n, bool), np.zeros(n, np.int64), np.zeros(0, np.int64)
    first = np.zeros(n, np.int64)
    np.cumsum(lengths[:-1], out=first[1:])
    idx = np.repeat(starts - first, lengths) + np.arange(total)
    b = a[idx]
    last = b < 0x80
    block_end = first + lengths - 1
    ok = np.ones(n, bool)
    nonempty = lengths > 0
    ok[nonempty] = last[block_end[nonempty]]
    # the value each byte belongs to, and the byte's place in it
    value_id = np.cumsum(last) - last
    value_start = np.flatnonzero(np.r_[True, last[:-1]])
    place = np.arange(total) - value_start[np.minimum(value_id, len(value_start) - 1)]
    too_long = place >= 10
    if too_long.any():
        block_of_byte = np.repeat(np.arange(n), lengths)
        ok[np.unique(block_of_byte[too_long])] = False
        place = np.minimum(place, 9)
    contrib = (b & 0x7F).astype(np.uint64) << (7 * place).astype(np.uint64)
    values = np.bitwise_or.reduceat(contrib, value_start) if value_start.size else np.zeros(0, np.uint64)
    ends_before = np.zeros(total + 1, np.int64)
    np.cumsum(last, out=ends_before[1:])
    counts = ends_before[first + lengths] - ends_before[first]
    if not last[-1]:
        values = values[: int(last.sum())]  # a last, unterminated value belongs to a refused block
    return ok, counts, values.view(np.int64)
