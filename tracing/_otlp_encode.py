"""OTLP/protobuf encoding of spans, written by hand: the SDK encoder's exact bytes at a fraction of its cost.

The SDK's encoder (opentelemetry-exporter-otlp-proto-common) builds a protobuf object for every span,
attribute and value, and hashes each span's Resource (a JSON dump of its attributes) to group the spans.
Here the wire format is written directly, the Resource and scope blocks are encoded once per object and
kept, and the grouping compares objects by identity first (issue 12). Field order, grouping and every
value mirror ``trace_encoder.encode_spans(spans).SerializePartialToString()``; a test compares the bytes.

Whatever this module cannot encode exactly (an integer beyond 64 bits, a string that is not UTF-8, a
value of an unexpected type, ...) makes it hand the whole batch to the SDK's encoder, which then decides,
exactly as without this module, what to log, skip or raise.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from opentelemetry.attributes import BoundedAttributes
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as _upstream_encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Span
from opentelemetry.sdk.util import BoundedList
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanKind, StatusCode
from opentelemetry.trace.span import DEFAULT_TRACE_STATE

__all__ = ["encode_spans", "encode_spans_upstream"]

_log = logging.getLogger("tracing")

_U32 = 1 << 32
_U64_MASK = (1 << 64) - 1
_I64_MIN = -(1 << 63)
_I64_END = 1 << 63
_CACHE_LIMIT = 512
_KEY_CACHE_LIMIT = 4096
_ENTRY_CACHE_LIMIT = 2048
_CACHED_VALUE_LIMIT = 64

_pack_double = struct.Struct("<d").pack
_pack_fixed64 = struct.Struct("<Q").pack
_pack_times = struct.Struct("<BQBQ").pack

_BYTE = tuple(bytes((i,)) for i in range(128))
# A KeyValue's value field holding a short string: tag 2, AnyValue length, tag 1 (string), string length.
_SHORT_STRING = tuple(bytes((0x12, n + 2, 0x0A, n)) for n in range(126))
_SMALL_INT = tuple(bytes((0x12, 2, 0x18, n)) for n in range(128))
_TRUE = b"\x12\x02\x10\x01"
_FALSE = b"\x12\x02\x10\x00"
_NONE = b"\x12\x00"
_DOUBLE = b"\x12\x09\x21"

# Span field tags (trace.proto): the keys of the wire format, (field number << 3) | wire type.
_SPAN_ATTRIBUTE = b"\x4a"
_SPAN_EVENT = b"\x5a"
_SPAN_LINK = b"\x6a"
_EVENT_ATTRIBUTE = b"\x1a"
_LINK_ATTRIBUTE = b"\x22"
_SCOPE_ATTRIBUTE = b"\x1a"
_RESOURCE_ATTRIBUTE = b"\x0a"
_EMPTY_STATUS = b"\x7a\x00"
# flags (field 16, fixed32): SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK, plus IS_REMOTE for a remote parent.
_LOCAL_FLAGS = b"\x85\x01\x00\x01\x00\x00"
_REMOTE_FLAGS = b"\x85\x01\x00\x03\x00\x00"
_LINK_LOCAL_FLAGS = b"\x35\x00\x01\x00\x00"
_LINK_REMOTE_FLAGS = b"\x35\x00\x03\x00\x00"
_KINDS = {
    SpanKind.INTERNAL: b"\x30\x01",
    SpanKind.SERVER: b"\x30\x02",
    SpanKind.CLIENT: b"\x30\x03",
    SpanKind.PRODUCER: b"\x30\x04",
    SpanKind.CONSUMER: b"\x30\x05",
}
_KINDS_BY_ID = {id(kind): field for kind, field in _KINDS.items()}
_SDK_SPAN_TYPES = (ReadableSpan, Span)

_keys: dict[str, bytes] = {}
_names: dict[str, bytes] = {}
_entries: dict[tuple[bytes, str, str], bytes] = {}
_resources: dict[int, tuple[Resource, int, bytes, bytes]] = {}
_scopes: dict[int, tuple[InstrumentationScope, int, bytes, bytes]] = {}


class _UnsupportedError(Exception):
    """Something this module does not encode exactly as the SDK's encoder: the batch goes to the SDK's."""


def encode_spans_upstream(spans: Sequence[ReadableSpan]) -> bytes:
    """The SDK encoder's bytes for ``spans``: ``encode_spans(spans).SerializePartialToString()``."""
    data: bytes = _upstream_encode_spans(spans).SerializePartialToString()
    return data


def encode_spans(spans: Sequence[ReadableSpan]) -> bytes:
    """Encode ``spans`` as a serialized OTLP ``ExportTraceServiceRequest``.

    Args:
        spans: finished spans, in the order the exporter received them.

    Returns:
        Exactly the bytes of :func:`encode_spans_upstream`.

    Raises:
        Exception: only what the SDK's encoder raises for the same batch.
    """
    if type(spans) is not list and type(spans) is not tuple:
        spans = list(spans)  # the SDK's encoder may need a second pass
    try:
        return _encode(spans)
    except Exception as error:
        _log.debug("tracing: span batch handed to the SDK's OTLP encoder (%r)", error)
    return encode_spans_upstream(spans)


def _varint(value: int) -> bytes:
    if 0 <= value < 0x80:
        return _BYTE[value]
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _length_delimited(tag: bytes, body: bytes) -> bytes:
    size = len(body)
    return tag + (_BYTE[size] if size < 0x80 else _varint(size)) + body


def _string_field(tag: bytes, value: Any) -> bytes:
    """A string field as protobuf writes it: absent when None or empty."""
    if value is None:
        return b""
    data = str.encode(value)
    return _length_delimited(tag, data) if data else b""


def _count_field(tag: bytes, value: Any) -> bytes:
    """A uint32 field: absent when 0."""
    if type(value) is not int or not 0 <= value < _U32:
        raise _UnsupportedError(value)
    return tag + _varint(value) if value else b""


def _key_field(key: Any) -> bytes:
    """A KeyValue's ``key`` field."""
    if type(key) is not str:
        if not isinstance(key, str):
            raise _UnsupportedError(key)
        return _string_field(b"\x0a", key)
    field = _keys.get(key)
    if field is None:
        field = _string_field(b"\x0a", key)
        if len(_keys) >= _KEY_CACHE_LIMIT:
            _keys.clear()
        _keys[key] = field
    return field


def _any_value(value: Any) -> bytes:
    """An AnyValue message body, in the type order of the SDK encoder's ``_encode_value``."""
    if value is None:
        return b""
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, str):
        # str.encode, bytes(memoryview) and int.__index__ read a subclass's own data, as protobuf does.
        return _length_delimited(b"\x0a", str.encode(value))
    if isinstance(value, int):
        number = int.__index__(value)
        if not _I64_MIN <= number < _I64_END:
            raise _UnsupportedError(number)
        return b"\x18" + _varint(number & _U64_MASK)
    if isinstance(value, float):
        return b"\x21" + _pack_double(value)
    if isinstance(value, bytes):
        return _length_delimited(b"\x3a", bytes(memoryview(value)))
    if isinstance(value, Sequence):
        items = b"".join([_length_delimited(b"\x0a", _any_value(item)) for item in value])
        return _length_delimited(b"\x2a", items)
    if isinstance(value, Mapping):
        entries = b"".join(
            [
                _length_delimited(b"\x0a", _key_field(str(key)) + _value_field(item))
                for key, item in value.items()
            ]
        )
        return _length_delimited(b"\x32", entries)
    raise _UnsupportedError(type(value))


def _value_field(value: Any) -> bytes:
    """A KeyValue's ``value`` field (tag and length included)."""
    kind = type(value)
    if kind is str:
        data: bytes = value.encode()
        size = len(data)
        if size < 126:
            return _SHORT_STRING[size] + data
    elif kind is bool:
        return _TRUE if value else _FALSE
    elif kind is int:
        if 0 <= value < 0x80:
            small: bytes = _SMALL_INT[value]
            return small
    elif kind is float:
        return _DOUBLE + _pack_double(value)
    elif value is None:
        return _NONE
    return _length_delimited(b"\x12", _any_value(value))


def _pairs(attributes: Any) -> Iterable[tuple[Any, Any]]:
    kind = type(attributes)
    if kind is dict:
        return attributes.items()  # type: ignore[no-any-return]
    if kind is BoundedAttributes:
        # Its Mapping.items() yields the same pairs in the same order, one Python call per key.
        return attributes._dict.items()  # type: ignore[no-any-return]
    return attributes.items()  # type: ignore[no-any-return]


def _attributes(parts: list[bytes], tag: bytes, attributes: Any) -> None:
    """Append one ``tag`` field per attribute (a KeyValue each); nothing for None or empty."""
    if not attributes:
        return
    # Most string attributes repeat from span to span (messaging.system, a task name, a state): their
    # whole field is kept, keyed by tag, key and value (all exact str, so equality is plain).
    entries = _entries
    for key, value in _pairs(attributes):
        if type(value) is str and type(key) is str:
            cache_key = (tag, key, value)
            entry = entries.get(cache_key)
            if entry is None:
                entry = _length_delimited(tag, _key_field(key) + _value_field(value))
                if len(value) <= _CACHED_VALUE_LIMIT:
                    if len(entries) >= _ENTRY_CACHE_LIMIT:
                        entries.clear()
                    entries[cache_key] = entry
        else:
            entry = _length_delimited(tag, _key_field(key) + _value_field(value))
        parts.append(entry)


def _attributes_block(tag: bytes, attributes: Any) -> bytes:
    parts: list[bytes] = []
    _attributes(parts, tag, attributes)
    return b"".join(parts)


def _resource(resource: Resource) -> tuple[Resource, int, bytes, bytes]:
    """The resource, its hash, its ResourceSpans ``resource`` field and ``schema_url`` field, cached."""
    cached = _resources.get(id(resource))
    if cached is not None and cached[0] is resource:
        return cached
    body = _attributes_block(_RESOURCE_ATTRIBUTE, resource.attributes)
    entry = (
        resource,
        hash(resource),
        _length_delimited(b"\x0a", body),
        _string_field(b"\x1a", resource.schema_url),
    )
    if len(_resources) >= _CACHE_LIMIT:
        _resources.clear()
    _resources[id(resource)] = entry
    return entry


def _scope(scope: InstrumentationScope) -> tuple[InstrumentationScope, int, bytes, bytes]:
    """The scope, its hash, its ScopeSpans ``scope`` field and ``schema_url`` field, cached."""
    cached = _scopes.get(id(scope))
    if cached is not None and cached[0] is scope:
        return cached
    body = (
        _string_field(b"\x0a", scope.name)
        + _string_field(b"\x12", scope.version)
        + _attributes_block(_SCOPE_ATTRIBUTE, scope.attributes)
    )
    entry = (scope, hash(scope), _length_delimited(b"\x0a", body), _string_field(b"\x1a", scope.schema_url))
    if len(_scopes) >= _CACHE_LIMIT:
        _scopes.clear()
    _scopes[id(scope)] = entry
    return entry


# A span without a scope: an empty InstrumentationScope and no schema_url, as the SDK's encoder writes it.
_NO_SCOPE = (None, 0, b"\x0a\x00", b"")
_NOTHING = object()


class _Group:
    """Spans of one resource (or one scope within it), keyed like the SDK encoder's dicts."""

    __slots__ = ("by_id", "fields", "hash", "key", "members", "spans")

    def __init__(self, key: object, hash_: int, fields: tuple[bytes, bytes]) -> None:
        self.key = key
        self.hash = hash_
        self.fields = fields
        self.by_id: dict[int, _Group] = {}
        self.members: list[_Group] = []
        self.spans: list[bytes] = []


def _group(groups: _Group, obj: object, entry: tuple[Any, int, bytes, bytes]) -> _Group:
    """The group of ``obj`` within ``groups``: an equal key with an equal hash, as a dict lookup finds it."""
    hash_ = entry[1]
    for group in groups.members:
        if group.hash == hash_ and (group.key is obj or group.key == obj):
            groups.by_id[id(obj)] = group
            return group
    group = _Group(obj, hash_, (entry[2], entry[3]))
    groups.by_id[id(obj)] = group
    groups.members.append(group)
    return group


def _encode(spans: Sequence[ReadableSpan]) -> bytes:
    resources = _Group(None, 0, (b"", b""))
    last_resource: object = _NOTHING
    last_scope: object = _NOTHING
    resource_group = scope_group = resources
    for span in spans:
        resource = span.resource
        if resource is not last_resource:
            found = resources.by_id.get(id(resource))
            resource_group = found if found is not None else _group(resources, resource, _resource(resource))
            last_resource, last_scope = resource, _NOTHING
        scope = span.instrumentation_scope or None
        if scope is not last_scope:
            found = resource_group.by_id.get(id(scope))
            if found is None:
                entry = _NO_SCOPE if scope is None else _scope(scope)
                found = _group(resource_group, scope, entry)
            scope_group, last_scope = found, scope
        scope_group.spans.append(_span(span))

    parts: list[bytes] = []
    for resource_group in resources.members:
        resource_field, resource_schema = resource_group.fields
        scope_blocks: list[tuple[bytes, int]] = []
        size = len(resource_field) + len(resource_schema)
        for scope_group in resource_group.members:
            scope_field, scope_schema = scope_group.fields
            scope_size = len(scope_field) + sum(map(len, scope_group.spans)) + len(scope_schema)
            head = b"\x12" + _varint(scope_size)
            scope_blocks.append((head, scope_size))
            size += len(head) + scope_size
        parts += (b"\x0a", _varint(size), resource_field)
        for scope_group, (head, _) in zip(resource_group.members, scope_blocks, strict=True):
            parts += (head, scope_group.fields[0])
            parts += scope_group.spans
            parts.append(scope_group.fields[1])
        parts.append(resource_schema)
    return b"".join(parts)


def _span(span: ReadableSpan) -> bytes:  # noqa: PLR0912, PLR0915  # one call per span, on the hot path
    """One ``spans`` field of ScopeSpans: the Span message, tag and length included."""
    context: Any
    if type(span) in _SDK_SPAN_TYPES:
        # Their properties return these fields as they are, except attributes behind a read-only proxy
        # (whose items() costs a Python call per key) and events and links copied into tuples.
        context, parent, name, kind = span._context, span._parent, span._name, span._kind
        start, end, status = span._start_time, span._end_time, span._status
        attributes: Any = span._attributes
        events: Any = span._events
        links: Any = span._links
        if events is None or links is None:
            raise _UnsupportedError("no events or links: the properties fail")
        dropped_attributes = attributes.dropped if isinstance(attributes, BoundedAttributes) else 0
        dropped_events = dropped_links = 0
        if isinstance(events, BoundedList):
            # Its __len__ and __iter__ are Python calls around this deque (untouched once the span ended).
            dropped_events = events.dropped
            events = events._dq if type(events) is BoundedList else events  # type: ignore[attr-defined]
        if isinstance(links, BoundedList):
            dropped_links = links.dropped
            links = links._dq if type(links) is BoundedList else links  # type: ignore[attr-defined]
    else:
        context, parent, name, kind = span.get_span_context(), span.parent, span.name, span.kind
        start, end, status = span.start_time, span.end_time, span.status
        attributes, events, links = span.attributes, span.events, span.links
        dropped_attributes, dropped_events = span.dropped_attributes, span.dropped_events
        dropped_links = span.dropped_links
    parts = [
        b"\x0a\x10" + context.trace_id.to_bytes(16, "big") + b"\x12\x08" + context.span_id.to_bytes(8, "big")
    ]
    trace_state = context.trace_state
    if trace_state is not None and trace_state is not DEFAULT_TRACE_STATE:
        state = ",".join([f"{key}={value}" for key, value in trace_state.items()])
        parts.append(_string_field(b"\x1a", state))
    if parent:
        parts.append(b"\x22\x08" + parent.span_id.to_bytes(8, "big"))
    if name is not None:
        name_field = _names.get(name) if type(name) is str else None
        if name_field is None:
            name_field = _string_field(b"\x2a", name)
            if type(name) is str:
                if len(_names) >= _KEY_CACHE_LIMIT:
                    _names.clear()
                _names[name] = name_field
        parts.append(name_field)
    kind_field = _KINDS_BY_ID.get(id(kind))
    parts.append(kind_field if kind_field is not None else _KINDS[kind])
    if type(start) is int and type(end) is int and start and end:
        parts.append(_pack_times(0x39, start, 0x41, end))
    else:
        parts.append(_time_field(b"\x39", start) + _time_field(b"\x41", end))
    _attributes(parts, _SPAN_ATTRIBUTE, attributes)
    if dropped_attributes:
        parts.append(_count_field(b"\x50", dropped_attributes))
    if events:
        parts.append(_events(events))
    if dropped_events:
        parts.append(_count_field(b"\x60", dropped_events))
    if links:
        parts.append(_links(links))
    if dropped_links:
        parts.append(_count_field(b"\x70", dropped_links))
    parts.append(_status(status))
    parts.append(_REMOTE_FLAGS if parent and parent.is_remote else _LOCAL_FLAGS)
    return _length_delimited(b"\x12", b"".join(parts))


def _events(events: Iterable[Any]) -> bytes:
    """The Span's ``events`` fields."""
    fields = []
    for event in events:
        body = (
            _time_field(b"\x09", event.timestamp)
            + _string_field(b"\x12", event.name)
            + _attributes_block(_EVENT_ATTRIBUTE, event.attributes)
            + _count_field(b"\x20", event.dropped_attributes)
        )
        fields.append(_length_delimited(_SPAN_EVENT, body))
    return b"".join(fields)


def _links(links: Iterable[Any]) -> bytes:
    """The Span's ``links`` fields; like the SDK's encoder, without the linked context's trace_state."""
    fields = []
    for link in links:
        linked = link.context
        body = (
            b"\x0a\x10"
            + linked.trace_id.to_bytes(16, "big")
            + b"\x12\x08"
            + linked.span_id.to_bytes(8, "big")
            + _attributes_block(_LINK_ATTRIBUTE, link.attributes)
            + _count_field(b"\x28", link.dropped_attributes)
            + (_LINK_REMOTE_FLAGS if linked and linked.is_remote else _LINK_LOCAL_FLAGS)
        )
        fields.append(_length_delimited(_SPAN_LINK, body))
    return b"".join(fields)


def _time_field(tag: bytes, value: Any) -> bytes:
    """A fixed64 timestamp: absent when None or 0."""
    if value is None:
        return b""
    if type(value) is not int:
        raise _UnsupportedError(value)
    return tag + _pack_fixed64(value) if value else b""


def _status(status: Any) -> bytes:
    if status is None:
        return b""
    code = status.status_code
    description = status.description
    if code is StatusCode.UNSET and description is None:
        return _EMPTY_STATUS
    number = code.value
    if type(number) is not int or not 0 <= number < 0x80:
        raise _UnsupportedError(number)
    body = _string_field(b"\x12", description) + (b"\x18" + _BYTE[number] if number else b"")
    return _length_delimited(b"\x7a", body)
