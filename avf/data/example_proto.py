"""tf.train.Example / SequenceExample on the wire: a strict decoder, and protobuf classes for writing.

Decoding (``parse_record``) is a small, strict reader of the protobuf wire format for exactly
the messages YouTube-8M uses. It accepts every legal encoding of the values TensorFlow
accepts (packed or unpacked floats and int64s, several blocks, any field order, unknown
top-level fields) and refuses, with a reason, what is malformed (truncated varints, lengths
past the end, packed float blocks that are not a multiple of 4 bytes, group wire types) or
ambiguous (a feature key given twice, a Feature holding more than one kind of list, unknown
fields inside Features, map entries, Feature or value lists, as TensorFlow refuses them).
It is the exact path: ``avf.data.fast_decode`` recognises the canonical video-level layout with
numpy for whole batches and ``avf.data.decode`` sends every other record here.

Writing uses protobuf's C implementation, with the messages declared at import time in a
private descriptor pool (so they never clash with TensorFlow's own when both are imported).
``RawRecord`` declares ``FloatList.value`` as ``repeated bytes``, so a float32 block can be
appended as one packed field (the exact bytes TensorFlow writes).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from google.protobuf import descriptor_pb2, descriptor_pool

try:  # protobuf >= 4.22
    from google.protobuf.message_factory import GetMessageClass as _message_class
except ImportError:  # pragma: no cover - older protobuf
    from google.protobuf.message_factory import MessageFactory

    _message_class = MessageFactory().GetPrototype

_F = descriptor_pb2.FieldDescriptorProto


def _build_file(package: str, float_as_bytes: bool) -> descriptor_pb2.FileDescriptorProto:
    fdp = descriptor_pb2.FileDescriptorProto(name=f"{package}.proto", package=package, syntax="proto3")

    def message(name, fields):
        msg = fdp.message_type.add(name=name)
        for field_name, number, ftype, label, type_name, packed in fields:
            field = msg.field.add(name=field_name, number=number, type=ftype, label=label)
            if type_name:
                field.type_name = f".{package}.{type_name}"
            if packed:
                field.options.packed = True
        return msg

    def map_of(msg, field_name, value_type):
        entry_name = "".join(part.title() for part in field_name.split("_")) + "Entry"
        entry = msg.nested_type.add(name=entry_name)
        entry.options.map_entry = True
        entry.field.add(name="key", number=1, type=_F.TYPE_STRING, label=_F.LABEL_OPTIONAL)
        entry.field.add(
            name="value", number=2, type=_F.TYPE_MESSAGE, label=_F.LABEL_OPTIONAL,
            type_name=f".{package}.{value_type}",
        )
        msg.field.add(
            name=field_name, number=1, type=_F.TYPE_MESSAGE, label=_F.LABEL_REPEATED,
            type_name=f".{package}.{msg.name}.{entry_name}",
        )

    rep, opt = _F.LABEL_REPEATED, _F.LABEL_OPTIONAL
    message("BytesList", [("value", 1, _F.TYPE_BYTES, rep, None, False)])
    if float_as_bytes:
        message("FloatList", [("value", 1, _F.TYPE_BYTES, rep, None, False)])
    else:
        message("FloatList", [("value", 1, _F.TYPE_FLOAT, rep, None, True)])
    message("Int64List", [("value", 1, _F.TYPE_INT64, rep, None, True)])
    message("Feature", [
        ("bytes_list", 1, _F.TYPE_MESSAGE, opt, "BytesList", False),
        ("float_list", 2, _F.TYPE_MESSAGE, opt, "FloatList", False),
        ("int64_list", 3, _F.TYPE_MESSAGE, opt, "Int64List", False),
    ])
    map_of(message("Features", []), "feature", "Feature")
    message("FeatureList", [("feature", 1, _F.TYPE_MESSAGE, rep, "Feature", False)])
    map_of(message("FeatureLists", []), "feature_list", "FeatureList")
    # Example.features (1) and SequenceExample.context (1) share a field number, so one
    # message with both fields parses either kind; feature_lists is set only for frame level.
    message("Record", [
        ("features", 1, _F.TYPE_MESSAGE, opt, "Features", False),
        ("feature_lists", 2, _F.TYPE_MESSAGE, opt, "FeatureLists", False),
    ])
    return fdp


_POOL = descriptor_pool.DescriptorPool()
_POOL.Add(_build_file("avf_tfexample_raw", float_as_bytes=True))

#: For writing: a float32 block goes in as one packed FloatList value (raw bytes).
RawRecord = _message_class(_POOL.FindMessageTypeByName("avf_tfexample_raw.Record"))


# ----------------------------------------------------------------------------- strict decoder


class WireError(Exception):
    """The payload is not a well-formed Example/SequenceExample (protobuf wire format)."""


class ShapeError(Exception):
    """Well-formed protobuf, but a feature is ambiguous or of the wrong kind."""


BYTES, FLOAT, INT64 = "bytes", "float", "int64"
_KIND_BY_FIELD = {1: BYTES, 2: FLOAT, 3: INT64}
KIND_NAMES = {BYTES: "a bytes list", FLOAT: "a float list", INT64: "an int64 list", None: "an empty Feature"}
_MASK64 = (1 << 64) - 1


def _varint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= end:
            raise WireError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result & _MASK64, pos
        shift += 7
        if shift >= 70:
            raise WireError("varint longer than 10 bytes")


def _fields(buf: bytes, pos: int, end: int):
    """Yield ``(field_number, wire_type, a, b)``: the value for varints, else its byte range."""
    while pos < end:
        key, pos = _varint(buf, pos, end)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise WireError("field number 0")
        if wire == 0:
            value, pos = _varint(buf, pos, end)
            yield number, 0, value, pos
        elif wire == 2:
            length, pos = _varint(buf, pos, end)
            if length > end - pos:
                raise WireError(f"field {number} of {length} bytes runs past the end of its message")
            yield number, 2, pos, pos + length
            pos += length
        elif wire == 5 or wire == 1:
            width = 4 if wire == 5 else 8
            if pos + width > end:
                raise WireError(f"field {number} runs past the end of its message")
            yield number, wire, pos, pos + width
            pos += width
        else:
            raise WireError(f"unsupported wire type {wire} (field {number})")


@dataclass(slots=True)
class Feature:
    """One decoded ``tf.train.Feature``: ``kind`` None (empty), BYTES (list of bytes), FLOAT
    (raw little-endian float32 bytes) or INT64 (int64 ndarray)."""

    kind: str | None
    values: object = None

    def count(self) -> int:
        if self.kind is None:
            return 0
        if self.kind == FLOAT:
            return len(self.values) // 4
        return len(self.values)


_SPLIT = "is split into several packed blocks or mixes packed and unpacked values (legal protobuf, but TensorFlow reads only part of it)"


def _int64_values(buf: bytes, pos: int, end: int, out: list[int]) -> None:
    packed = unpacked = 0
    for number, wire, a, b in _fields(buf, pos, end):
        if number != 1:
            raise WireError(f"unexpected field {number} in an Int64List")
        if wire == 0:
            unpacked += 1
            out.append(a)
        elif wire == 2:
            packed += 1
            while a < b:
                value, a = _varint(buf, a, b)
                out.append(value)
        else:
            raise WireError(f"Int64List value with wire type {wire}")
    if packed > 1 or (packed and unpacked):
        raise ShapeError(f"an int64 list {_SPLIT}")


def parse_feature(buf: bytes, pos: int, end: int) -> Feature:
    kind, start, stop = None, 0, 0
    for number, wire, a, b in _fields(buf, pos, end):
        if number not in _KIND_BY_FIELD or wire != 2:
            raise WireError(f"unexpected field {number} in a Feature")
        if kind is not None:
            raise ShapeError("a Feature holds more than one value list")
        kind, start, stop = _KIND_BY_FIELD[number], a, b
    if kind is None:
        return Feature(None)
    if kind == BYTES:
        values = []
        for number, wire, a, b in _fields(buf, start, stop):
            if number != 1 or wire != 2:
                raise WireError(f"unexpected field {number} in a BytesList")
            values.append(buf[a:b])
        return Feature(BYTES, values)
    if kind == FLOAT:
        blocks, packed = [], 0
        for number, wire, a, b in _fields(buf, start, stop):
            if number != 1 or wire not in (2, 5):
                raise WireError(f"unexpected field {number} (wire type {wire}) in a FloatList")
            if wire == 2:
                packed += 1
                if (b - a) % 4:
                    raise WireError(f"packed float block of {b - a} bytes is not a multiple of 4")
            blocks.append(buf[a:b])
        if packed > 1 or (packed and len(blocks) > packed):
            raise ShapeError(f"a float list {_SPLIT}")
        return Feature(FLOAT, b"".join(blocks))
    values: list[int] = []
    _int64_values(buf, start, stop, values)
    return Feature(INT64, np.array(values, dtype=np.uint64).view(np.int64))


def _map_entries(buf: bytes, pos: int, end: int, what: str):
    """``(key bytes, value start, value end)`` of a ``map<string, Message>`` field's entries."""
    for number, wire, a, b in _fields(buf, pos, end):
        if number != 1 or wire != 2:
            raise WireError(f"unexpected field {number} in {what}")
        key, value, seen_key, seen_value = b"", (b, b), False, False
        for n2, w2, c, d in _fields(buf, a, b):
            if n2 == 1 and w2 == 2 and not seen_key:
                key, seen_key = buf[c:d], True
            elif n2 == 2 and w2 == 2 and not seen_value:
                value, seen_value = (c, d), True
            else:
                raise WireError(f"unexpected or repeated field {n2} in a {what} entry")
        yield key, value[0], value[1]


@dataclass(slots=True)
class ParsedRecord:
    """The features of one record that the YouTube-8M schema reads (others are skipped)."""

    context: dict[str, Feature] = field(default_factory=dict)
    #: feature list name -> list of (start, end) byte ranges of its FeatureList messages
    lists: dict[str, tuple[int, int]] = field(default_factory=dict)
    list_count: int = 0


def parse_record(buf: bytes, pos: int, end: int, context_keys: dict[bytes, str], list_keys: dict[bytes, str]) -> ParsedRecord:
    """Strictly decode an Example or SequenceExample in ``buf[pos:end]``.

    Only features named in ``context_keys``/``list_keys`` are decoded. A wanted key that occurs
    twice with byte-identical values is read once, as TensorFlow reads it; twice with different
    values it is refused: protobuf's map semantics keep the last one, but a record carrying two ids
    or two label lists is a damaged or merged record, and picking one would mislabel a video.
    """
    out = ParsedRecord()
    seen: dict[str, bytes] = {}
    for number, wire, a, b in _fields(buf, pos, end):
        if wire != 2 or number not in (1, 2):
            continue  # unknown top-level fields are legal and skipped, as TensorFlow does
        if number == 1:
            for key, c, d in _map_entries(buf, a, b, "Features"):
                name = context_keys.get(key)
                if name is None:
                    continue
                if name in out.context:
                    if seen[name] == buf[c:d]:
                        continue
                    raise ShapeError(f"feature {name!r} appears more than once, with different values")
                seen[name] = buf[c:d]
                try:
                    out.context[name] = parse_feature(buf, c, d)
                except (WireError, ShapeError) as exc:
                    raise type(exc)(f"{name!r}: {exc}") from None
        else:
            for key, c, d in _map_entries(buf, a, b, "FeatureLists"):
                out.list_count += 1
                name = list_keys.get(key)
                if name is None:
                    continue
                if name in out.lists:
                    first = out.lists[name]
                    if buf[first[0] : first[1]] == buf[c:d]:
                        continue
                    raise ShapeError(f"feature list {name!r} appears more than once, with different values")
                out.lists[name] = (c, d)
    return out


def _frame_prefix(width: int) -> bytes:
    """Bytes before each frame's data in a canonical FeatureList of one-bytes-value Features."""
    def varint(value: int) -> bytes:
        out = bytearray()
        while True:
            out.append((value & 0x7F) | (0x80 if value > 0x7F else 0))
            value >>= 7
            if not value:
                return bytes(out)

    inner = b"\x0a" + varint(width)
    bytes_list = len(inner) + width
    feature = b"\x0a" + varint(bytes_list) + inner
    return b"\x0a" + varint(len(feature) + width) + feature


_PREFIXES: dict[int, np.ndarray] = {}


def parse_frames(buf: bytes, pos: int, end: int, width: int, name: str) -> np.ndarray:
    """A FeatureList of one ``width``-byte string per frame as a (frames, width) uint8 array."""
    prefix = _PREFIXES.get(width)
    if prefix is None:
        prefix = _PREFIXES[width] = np.frombuffer(_frame_prefix(width), np.uint8)
    stride = len(prefix) + width
    if (end - pos) % stride == 0:  # canonical layout: check every frame's prefix at once
        block = np.frombuffer(buf, np.uint8, end - pos, pos).reshape(-1, stride)
        if (block[:, : len(prefix)] == prefix).all():
            return block[:, len(prefix):].copy()
    frames = []
    for number, wire, a, b in _fields(buf, pos, end):
        if number != 1 or wire != 2:
            raise WireError(f"unexpected field {number} in a FeatureList")
        feature = parse_feature(buf, a, b)
        i = len(frames)
        if feature.kind != BYTES:
            raise ShapeError(f"{name!r} frame {i} is {KIND_NAMES[feature.kind]}, expected one byte string")
        if len(feature.values) != 1:
            raise ShapeError(f"{name!r} frame {i} holds {len(feature.values)} byte strings, expected 1")
        if len(feature.values[0]) != width:
            raise ShapeError(f"{name!r} frame {i} has {len(feature.values[0])} bytes, expected {width}")
        frames.append(feature.values[0])
    return np.frombuffer(b"".join(frames), np.uint8).reshape(len(frames), width).copy()
