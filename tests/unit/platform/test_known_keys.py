"""KnownKeys (services/platform/known_keys.py): a key announced a moment after a hospital uses it
is waited for, once per key id."""

from __future__ import annotations

import threading
import time

import pytest

from chain.entry import ParsedEntry, parse_entry
from chain.validation import EntryRejectedError
from tests.unit.anchoring.fakes import HOSPITAL_KEY, drafts, key_registered, known_keys, sdk


def signed_entry() -> ParsedEntry:
    [message] = sdk().sign(drafts(1))
    return parse_entry(message.signed_entry)


def test_a_key_announced_during_the_grace_period_is_accepted() -> None:
    keys = known_keys(registered=False, grace=5.0)
    announce = threading.Timer(0.1, keys.apply, [key_registered("hospital-a", HOSPITAL_KEY)])
    began = time.monotonic()
    announce.start()
    keys.check(signed_entry())
    assert time.monotonic() - began < 4.0


def test_an_unknown_key_is_waited_for_once_then_refused_at_once() -> None:
    keys = known_keys(registered=False, grace=1.0)
    entry = signed_entry()
    began = time.monotonic()
    with pytest.raises(EntryRejectedError) as first:
        keys.check(entry)
    waited = time.monotonic() - began
    assert first.value.reason == "UNKNOWN_KEY" and waited >= 1.0
    began = time.monotonic()
    with pytest.raises(EntryRejectedError):
        keys.check(entry)
    assert time.monotonic() - began < 1.0  # no second wait
