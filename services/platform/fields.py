"""Every field of every request checked at the edge (DESIGN §3.1 and §6): formats, lengths,
counts, enum values and time ranges, before a servicer's domain sees the request.

:func:`check_fields` walks a protobuf message by its descriptor and refuses, with
:class:`chain.errors.InvalidInputError` and an "expected X, got Y" message naming the field's
path, anything outside the rules below. The rules go by field name, so that one name means one
thing in every service (an ``organization_id`` is an organization id wherever it appears):

* strings: ids have their format (:mod:`chain.limits`: UUIDs, organization slugs, practitioner,
  subject and key ids), codes their alphabet, free text a length and no control characters
  (:data:`TEXT_RULES`; :data:`DEFAULT_TEXT` for a name not listed). An empty string is left to
  the domain, which knows whether the field is required;
* bytes: a maximum length (:data:`BYTES_LIMITS`; exact sizes are the domain's business);
* repeated fields: a maximum count (:data:`REPEATED_LIMITS`);
* enums: a value the enum defines (proto3 takes any number);
* ``google.protobuf.Timestamp``: within 1970-01-01 and 9999-12-31, nanos in [0, 999999999];
* nested messages: at most :data:`MAX_DEPTH` deep.

:func:`checked` applies this to every RPC of a servicer class, so a service cannot forget one;
services use :func:`check_fields` directly for messages they decode from bytes (a signed consent
directive). Integers are left to the domain, which knows their ranges. This module imports no
grpc, so domain code may use it.
"""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, TypeVar

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from chain.errors import InvalidInputError
from chain.limits import (
    FORMAT_TEXT,
    KEY_ID,
    MAX_ENTRY_BYTES,
    ORGANIZATION_ID,
    PRACTITIONER_ID,
    REASON_CODE,
    SUBJECT_ID,
    TIME_RANGE_TEXT,
    UUID_ANY,
    UUID_V4,
    shown,
    time_in_range,
)

__all__ = [
    "BYTES_LIMITS",
    "DEFAULT_TEXT",
    "MAX_DEPTH",
    "REPEATED_LIMITS",
    "TEXT_RULES",
    "Text",
    "check_fields",
    "checked",
    "describe_time",
    "nanos_of",
    "timestamp_nanos",
]

#: Control characters: never in a single-line field; in multi-line text only \t, \n and \r.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_CONTROL_IN_TEXT = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
#: A reference chosen by its holder (a hospital's record id, its reference to a patient or a
#: practitioner): printable ASCII without spaces, so that it is an id and not a sentence.
_REFERENCE = re.compile(r"[!-~]+")
#: A code from a vocabulary (data categories, purposes, role codes).
_CODE = re.compile(r"[A-Za-z0-9._-]+")
#: A certificate serial number in lower-case hex.
_SERIAL = re.compile(r"[0-9a-f]{1,40}")
#: A page token (services/platform/paging.py: unpadded base64url).
_TOKEN = re.compile(r"[A-Za-z0-9_-]+")

_FORMAT_TEXT: dict[re.Pattern[str], str] = {
    **FORMAT_TEXT,
    _REFERENCE: "printable ASCII without spaces",
    _CODE: "a code of [A-Za-z0-9._-]",
    _SERIAL: "a certificate serial number in lower-case hex",
    _TOKEN: "a page token from a previous response",
}


@dataclass(frozen=True)
class Text:
    """The rule for a string field: at most ``max_chars`` characters and, when not empty,
    ``pattern`` (whole string) or, without one, no control characters (but line breaks and tabs
    when ``multiline``)."""

    max_chars: int
    pattern: re.Pattern[str] | None = None
    multiline: bool = False


_UUID4 = Text(36, UUID_V4)
_UUID = Text(36, UUID_ANY)
_ORGANIZATION = Text(63, ORGANIZATION_ID)
_PRACTITIONER = Text(25, PRACTITIONER_ID)
_SUBJECT = Text(25, SUBJECT_ID)
_KEY = Text(128, KEY_ID)

#: String rules by field name (the same name means the same thing in every service).
TEXT_RULES: Final[dict[str, Text]] = {
    "entry_id": _UUID4,
    "entry_ids": _UUID4,
    "directive_id": _UUID4,
    "delegation_id": _UUID4,
    "request_id": _UUID,
    "challenge_id": _UUID,
    "flag_id": _UUID,
    "after_notification_id": _UUID,
    "organization_id": _ORGANIZATION,
    "practitioner_id": _PRACTITIONER,
    "author_practitioner_id": _PRACTITIONER,
    "patient_subject_id": _SUBJECT,
    "subject_id": _SUBJECT,
    "delegate_subject_id": _SUBJECT,
    "key_id": _KEY,
    "replaces_key_id": _KEY,
    "signer_key_id": _KEY,
    "device_key_id": _KEY,
    "reason_code": Text(32, REASON_CODE),
    "serial_number": Text(40, _SERIAL),
    "record_id": Text(256, _REFERENCE),
    "hospital_reference": Text(128, _REFERENCE),
    "display_ref": Text(128, _REFERENCE),
    "role_code": Text(64, _CODE),
    "data_category": Text(64, _CODE),
    "data_categories": Text(64, _CODE),
    "purpose": Text(64, _CODE),
    "purposes": Text(64, _CODE),
    "page_token": Text(2048, _TOKEN),
    "display_name": Text(200),
    "label": Text(64),
    "reason_text": Text(1000, multiline=True),
    "justification": Text(1000, multiline=True),
    "note": Text(2000, multiline=True),
    "csr_pem": Text(16 * 1024, multiline=True),
    "since_checkpoint": Text(64 * 1024, multiline=True),
}
#: The rule for a string field whose name is not in :data:`TEXT_RULES`.
DEFAULT_TEXT: Final = Text(1024)

#: Largest bytes fields by name; exact sizes (32-byte keys, 64-byte signatures) are checked by
#: the domain, with messages that say what the bytes are.
BYTES_LIMITS: Final[dict[str, int]] = {
    "signed_entry": MAX_ENTRY_BYTES,
    "directive": MAX_ENTRY_BYTES,
    "delegation": MAX_ENTRY_BYTES,
    "commitment": 64,
    "subject_tag": 64,
    "previous_version_commitment": 64,
    "public_key": 64,
    "new_public_key": 64,
    "signature": 128,
    "proof_of_possession": 128,
}
_DEFAULT_BYTES = MAX_ENTRY_BYTES

#: Largest repeated fields by name.
REPEATED_LIMITS: Final[dict[str, int]] = {
    "records": 1000,  # AnchorRecords: items per message (services/anchoring MAX_CHUNK_ITEMS)
    "entry_ids": 10_000,  # ExportEvidence: entries per export (audit MAX_EXPORT_ENTRIES)
    "kinds": 16,
    "scopes": 8,
    "purposes": 64,
    "data_categories": 64,
    "provisions": 32,
}
_DEFAULT_REPEATED = 1000

#: How deep messages may nest in a request (a consent provision nests at most 8 deep).
MAX_DEPTH: Final = 12

_TIMESTAMP = "google.protobuf.Timestamp"
_F = FieldDescriptor


def check_fields(message: Message, where: str = "") -> None:
    """Raise :class:`InvalidInputError` for the first field of ``message`` (recursively) that
    breaks its rule; ``where`` prefixes the field paths in messages (e.g. ``"directive."``)."""
    _check_message(message, where, 0)


def _check_message(message: Message, prefix: str, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise InvalidInputError(
            f"expected messages nested at most {MAX_DEPTH} deep, got deeper at {prefix or 'top'}"
        )
    if message.DESCRIPTOR.full_name == _TIMESTAMP:
        _check_time(message, prefix.rstrip("."))
        return
    for field, value in message.ListFields():
        path = prefix + field.name
        if field.is_repeated:
            limit = REPEATED_LIMITS.get(field.name, _DEFAULT_REPEATED)
            if len(value) > limit:
                within = f" in {prefix.rstrip('.')}" if prefix else ""
                raise InvalidInputError(
                    f"expected at most {limit} {field.name}{within}, got {len(value)}"
                )
            for index, item in enumerate(value):
                _check_value(field, item, f"{path}[{index}]", depth)
        else:
            _check_value(field, value, path, depth)


def _check_value(field: FieldDescriptor, value: Any, path: str, depth: int) -> None:
    kind = field.type
    if kind == _F.TYPE_STRING:
        _check_text(TEXT_RULES.get(field.name, DEFAULT_TEXT), value, path)
    elif kind == _F.TYPE_BYTES:
        limit = BYTES_LIMITS.get(field.name, _DEFAULT_BYTES)
        if len(value) > limit:
            raise InvalidInputError(
                f"expected {path} of at most {limit:,} bytes, got {len(value):,}"
            )
    elif kind == _F.TYPE_ENUM:
        enum = field.enum_type
        if enum is not None and value not in enum.values_by_number:
            raise InvalidInputError(f"expected {path} to be a known {enum.name}, got {value}")
    elif kind == _F.TYPE_MESSAGE:
        _check_message(value, path + ".", depth + 1)


def _check_text(rule: Text, value: str, path: str) -> None:
    if not value:
        return
    if len(value) > rule.max_chars:
        raise InvalidInputError(
            f"expected {path} of at most {rule.max_chars:,} characters, got {len(value):,}"
        )
    if rule.pattern is not None:
        if rule.pattern.fullmatch(value) is None:
            raise InvalidInputError(
                f"expected {path} to be {_FORMAT_TEXT[rule.pattern]}, got {shown(value)}"
            )
        return
    control = (_CONTROL_IN_TEXT if rule.multiline else _CONTROL).search(value)
    if control is not None:
        raise InvalidInputError(
            f"expected {path} without control characters, got {control.group()!r} "
            f"at character {control.start()}"
        )


def _check_time(timestamp: Message, path: str) -> None:
    seconds, nanos = timestamp.seconds, timestamp.nanos  # type: ignore[attr-defined]
    if not time_in_range(seconds, nanos):
        raise InvalidInputError(
            f"expected {path} to be {TIME_RANGE_TEXT}, got seconds {seconds}, nanos {nanos}"
        )


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def nanos_of(moment: datetime) -> int:
    """Nanoseconds since the epoch of ``moment`` (naive means UTC), to compare with
    :func:`timestamp_nanos`."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


def timestamp_nanos(timestamp: Timestamp) -> int:
    """Nanoseconds since the epoch of a stored ``Timestamp``, whatever its value: protobuf's
    own conversions (``ToDatetime``, ``ToNanoseconds``) fail outside years 1-9999, and a
    record stored before times were checked must still be compared."""
    return timestamp.seconds * 1_000_000_000 + timestamp.nanos


def describe_time(timestamp: Timestamp) -> str:
    """A stored ``Timestamp`` for a message: RFC 3339 when it is a time the platform accepts,
    else its seconds."""
    if time_in_range(timestamp.seconds, timestamp.nanos):
        return timestamp.ToJsonString()
    return f"{timestamp.seconds} s after 1970"


# --- servicers ------------------------------------------------------------------------------

_S = TypeVar("_S", bound=type)


def _checked_requests(requests: Iterator[Any]) -> Iterator[Any]:
    for index, request in enumerate(requests):
        check_fields(request, f"message[{index}].")
        yield request


async def _checked_requests_async(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    index = 0
    async for request in requests:
        check_fields(request, f"message[{index}].")
        index += 1
        yield request


def _checked_input(request: Any) -> Any:
    """The request checked (a message), or the stream of requests checked as they come."""
    if isinstance(request, Message):
        check_fields(request)
        return request
    if hasattr(request, "__aiter__"):
        return _checked_requests_async(request)
    return _checked_requests(request)


def _wrap(method: Callable[..., Any]) -> Callable[..., Any]:
    if inspect.isasyncgenfunction(method):

        @functools.wraps(method)
        async def stream_async(self: Any, request: Any, context: Any) -> AsyncIterator[Any]:
            request = _checked_input(request)
            async for response in method(self, request, context):
                yield response

        return stream_async
    if inspect.iscoroutinefunction(method):

        @functools.wraps(method)
        async def unary_async(self: Any, request: Any, context: Any) -> Any:
            return await method(self, _checked_input(request), context)

        return unary_async

    @functools.wraps(method)
    def plain(self: Any, request: Any, context: Any) -> Any:
        return method(self, _checked_input(request), context)

    return plain


def checked(servicer: _S) -> _S:
    """Class decorator: every RPC method the servicer class defines (a name starting with an
    upper-case letter) checks its request, or each message of a request stream, with
    :func:`check_fields` before it runs. Sync and asyncio handlers keep their kind."""
    for name, method in list(vars(servicer).items()):
        if name[:1].isupper() and inspect.isfunction(method):
            setattr(servicer, name, _wrap(method))
    return servicer
