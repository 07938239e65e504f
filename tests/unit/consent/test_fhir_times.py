"""The FHIR Consent export's times (services/consent/fhir.py): a directive stored before the
edge refused far-off times still exports, with the last instant FHIR can say."""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp

from services.consent.fhir import _instant


def test_a_time_beyond_year_9999_exports_as_its_last_instant() -> None:
    assert _instant(Timestamp(seconds=2**40)) == "9999-12-31T23:59:59Z"


def test_an_ordinary_time_exports_as_it_is() -> None:
    assert _instant(Timestamp(seconds=1_765_000_000)) == "2025-12-06T05:46:40Z"
