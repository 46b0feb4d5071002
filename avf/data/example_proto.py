"""tf.train.Example / SequenceExample wire schema, built at import time for protobuf's C parser.

No TensorFlow and no generated code: the messages are declared in a private descriptor pool
(so they never clash with TensorFlow's own when both are imported).

One deliberate twist makes decoding vectorised: ``FloatList.value`` is a packed repeated float,
which on the wire is a single length-delimited field, exactly like ``bytes``. Declaring it as
``repeated bytes`` lets the C parser hand us the raw little-endian float32 block, which
``numpy.frombuffer`` views with no per-float Python work. (A writer that emitted unpacked
floats, legal but unused by TensorFlow, shows up as a size mismatch and is re-read with the
standard ``float`` schema.)
"""

from __future__ import annotations

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
_POOL.Add(_build_file("avf_tfexample", float_as_bytes=False))

#: Fast view: float lists arrive as raw float32 bytes.
RawRecord = _message_class(_POOL.FindMessageTypeByName("avf_tfexample_raw.Record"))
#: Standard view (floats as floats), used to re-read unusual encodings.
Record = _message_class(_POOL.FindMessageTypeByName("avf_tfexample.Record"))
