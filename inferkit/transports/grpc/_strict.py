"""A strict check of a received message against its betterproto2 class, before it is parsed.

betterproto2's parser is lenient where protobuf's is not: it reads bytes that are no protobuf
at all as an empty message, a length that runs past the end as whatever bytes are there, and a
field of the wrong wire type as a value of the wrong Python type (``name=1``), which then fails
somewhere deep in the server. So every message other than ``ModelInferRequest`` (read by
:mod:`._wire`, strict already) is checked here first, with the same field reader as
:mod:`._wire`: every field must lie within its message; a field the class knows must have the
wire type of its declared type (a repeated number packed or not), strings must be UTF-8, and
nested messages and map entries are checked the same way. Unknown fields are skipped, as
protobuf does. :func:`check` raises ``ValueError`` naming the first field at fault.
"""

from __future__ import annotations

from typing import Any

from ._wire import _FIXED32, _FIXED64, _LEN, _VARINT, _fields, _varint

__all__ = ["check"]

# The wire type each betterproto2 proto_type is written with (packed repeated numbers aside).
_WIRE_TYPE: dict[str, int] = {
    **dict.fromkeys(
        ("enum", "bool", "int32", "int64", "uint32", "uint64", "sint32", "sint64"), _VARINT
    ),
    **dict.fromkeys(("float", "fixed32", "sfixed32"), _FIXED32),
    **dict.fromkeys(("double", "fixed64", "sfixed64"), _FIXED64),
    **dict.fromkeys(("string", "bytes", "message", "map"), _LEN),
}
_WIRE_NAMES = {_VARINT: "varint", _FIXED64: "64-bit", _LEN: "length-delimited", _FIXED32: "32-bit"}
_WIDTH = {_FIXED32: 4, _FIXED64: 8}


def check(message_type: Any, data: bytes) -> None:
    """Raise ``ValueError`` unless ``data`` is a well-formed ``message_type`` (a betterproto2
    class); classes without betterproto2's metadata are not checked."""
    if getattr(message_type, "_betterproto", None) is not None:
        _check(message_type, data, 0, len(data), "")


def _check(message_type: Any, data: bytes, pos: int, end: int, path: str) -> None:
    meta = message_type._betterproto
    try:
        fields = _fields(data, pos, end)
    except IndexError:
        raise ValueError(f"{_at(path)}a field runs past the end of the message") from None
    except ValueError as exc:
        raise ValueError(f"{_at(path)}{exc}") from None
    for number, wire_type, start, stop in fields:
        name = meta.field_name_by_number.get(number)
        if name is None:
            continue  # an unknown field: skipped, as protobuf does
        field = meta.meta_by_field_name[name]
        where = f"{path}.{name}" if path else name
        expected = _WIRE_TYPE[field.proto_type]
        if wire_type == _LEN and expected != _LEN and field.repeated:
            _check_packed(data, start, stop, expected, where)
        elif wire_type != expected:
            raise ValueError(
                f"{_at(where)}wire type {_WIRE_NAMES.get(wire_type, wire_type)}, "
                f"expected {_WIRE_NAMES[expected]} for a {field.proto_type}"
            )
        elif field.proto_type == "string":
            try:
                data[start:stop].decode("utf-8")
            except UnicodeDecodeError:
                raise ValueError(f"{_at(where)}a string that is not UTF-8") from None
        elif field.proto_type in ("message", "map"):
            _check(meta.cls_by_field[name], data, start, stop, where)


def _check_packed(data: bytes, pos: int, end: int, element: int, where: str) -> None:
    width = _WIDTH.get(element)
    if width is not None:
        if (end - pos) % width:
            raise ValueError(f"{_at(where)}packed values of {width} bytes do not fill the field")
        return
    try:
        while pos < end:
            _, pos = _varint(data, pos)
    except (IndexError, ValueError):
        pos = end + 1
    if pos != end:
        raise ValueError(f"{_at(where)}packed varints end inside a value")


def _at(path: str) -> str:
    return f"at `{path}`: " if path else ""
