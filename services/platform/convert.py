"""Conversions between Python values and protobuf well-known types, shared by every service."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp


def timestamp(value: datetime) -> Timestamp:
    """A protobuf Timestamp for ``value``."""
    stamp = Timestamp()
    stamp.FromDatetime(value)
    return stamp


def aware(stamp: Timestamp) -> datetime:
    """A protobuf Timestamp as an aware UTC datetime."""
    return stamp.ToDatetime(tzinfo=UTC)
