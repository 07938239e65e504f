"""Conversions between Python values and protobuf well-known types, shared by every service."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp

from chain.errors import InvalidInputError


def timestamp(value: datetime) -> Timestamp:
    """A protobuf Timestamp for ``value``."""
    stamp = Timestamp()
    stamp.FromDatetime(value)
    return stamp


def aware(stamp: Timestamp) -> datetime:
    """A protobuf Timestamp as an aware UTC datetime."""
    return stamp.ToDatetime(tzinfo=UTC)


def page_token(offset: int) -> str:
    """An opaque ``next_page_token`` for a listing that continues at ``offset``."""
    return base64.urlsafe_b64encode(json.dumps({"offset": offset}).encode()).decode()


def page_offset(token: str) -> int:
    """The offset a ``page_token`` from :func:`page_token` stands for (0 for none);
    InvalidInputError for anything else."""
    if not token:
        return 0
    try:
        offset = json.loads(base64.urlsafe_b64decode(token.encode()))["offset"]
    except (ValueError, KeyError, TypeError):
        raise InvalidInputError(
            f"expected a page token from a previous response, got {token!r}"
        ) from None
    if not isinstance(offset, int) or offset < 0:
        raise InvalidInputError(f"expected a page token from a previous response, got {token!r}")
    return offset
