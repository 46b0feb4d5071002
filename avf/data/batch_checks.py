"""The value checks of decoded records, over a whole batch at once.

Decoding establishes that a record has the YouTube-8M shape; these checks establish that its
values are usable (UTF-8 ids, labels inside the vocabulary, finite features, consistent segment
annotations). One vectorised pass per batch keeps them cheap, and running the same pass for
every reader is what keeps ``iter_records`` and ``iter_batches`` from ever disagreeing.
"""

from __future__ import annotations

import numpy as np

from avf.data.decode import DecodedRows, RowFailure
from avf.errors import InputError, SchemaError


def check_rows(rows: DecodedRows,
               num_classes: int | None) -> tuple[list[str], np.ndarray, np.ndarray, RowFailure | None]:
    """The value checks, over a whole batch: returns ids, label indptr and values, and the
    first failing row (if any) with its reason."""
    n = len(rows)
    problems: list[tuple[int, str]] = []
    try:
        ids = [raw.decode("utf-8") for raw in rows.ids]
    except UnicodeDecodeError:
        ids = []
        for i, raw in enumerate(rows.ids):
            try:
                ids.append(raw.decode("utf-8"))
            except UnicodeDecodeError:
                problems.append((i, "'id' is not UTF-8 text"))
                break
    counts = np.concatenate(rows.label_counts) if rows.label_counts else np.zeros(0, np.int64)
    if len(rows.labels) == 1:
        values = rows.labels[0]
    else:
        values = np.concatenate(rows.labels) if rows.labels else np.zeros(0, np.int64)
    indptr = np.zeros(n + 1, np.int64)
    np.cumsum(counts, out=indptr[1:])
    if values.size:
        bad = values < 0
        if num_classes is not None:
            bad |= values >= num_classes
        if bad.any():
            pos = int(np.argmax(bad))
            row = int(np.searchsorted(indptr, pos, side="right")) - 1
            value = int(values[pos])
            problems.append((row, f"negative label index {value}" if value < 0 else
                             f"label index {value} outside the vocabulary of {num_classes} classes"))
    for name, block in (("mean_rgb", rows.rgb[:n]), ("mean_audio", rows.audio[:n])):
        finite = np.isfinite(block).all(axis=1)
        if rows.frames:
            finite[list(rows.frames)] = True
        if not finite.all():
            problems.append((int(np.argmin(finite)), f"{name!r} holds NaN or inf values"))
    for row, frame in rows.frames.items():
        if frame.segment_labels is None:
            continue
        problem = None
        if frame.segment_start_times.size and frame.segment_start_times.min() < 0:
            problem = f"negative segment start time {int(frame.segment_start_times.min())}"
        elif frame.segment_labels.size and frame.segment_labels.min() < 0:
            problem = f"negative segment label {int(frame.segment_labels.min())}"
        elif num_classes is not None and frame.segment_labels.size and frame.segment_labels.max() >= num_classes:
            problem = (f"segment label {int(frame.segment_labels.max())} outside the vocabulary of "
                       f"{num_classes} classes")
        elif not np.isfinite(frame.segment_scores).all():
            problem = "'segment_scores' holds NaN or inf values"
        if problem:
            problems.append((row, problem))
    failure = None
    if problems:
        row, problem = min(problems, key=lambda item: item[0])
        failure = RowFailure(row, SchemaError, problem)
    return ids, indptr, values, failure


def failure_error(rows: DecodedRows, failure: RowFailure) -> InputError:
    """The error a refused row raises: its file, its video (when its id reads), its problem and byte offset."""
    row = failure.row
    raw = rows.ids[row] if row < len(rows.ids) else failure.video
    prefix = ""
    if raw:
        try:
            prefix = f"video {raw.decode('utf-8')!r}: "
        except UnicodeDecodeError:
            prefix = ""
    return failure.cls(rows.path_of(row), prefix + failure.problem, rows.offsets[row])
