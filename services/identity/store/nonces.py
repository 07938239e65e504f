"""The nonces of recently accepted signed requests, kept inside their owner's document.

They live in the patient's or organization's own document and are written with the change the
request made, under the same version check, so a replayed request and the one it repeats cannot
both be accepted. Mongo keeps times to the millisecond, which is enough to tell when a nonce is
old enough to drop.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime

import mongoengine as me

from services.platform.mongo import as_utc


class RequestNonceDoc(me.EmbeddedDocument):
    """One nonce and the request time it was signed with."""

    nonce = me.BinaryField(required=True)
    request_time = me.DateTimeField(required=True)


def nonce_docs(nonces: Mapping[bytes, datetime]) -> list[RequestNonceDoc]:
    """The stored form of an owner's recent nonces."""
    return [RequestNonceDoc(nonce=nonce, request_time=time) for nonce, time in nonces.items()]


def nonces_of(docs: Iterable[RequestNonceDoc]) -> dict[bytes, datetime]:
    """An owner's recent nonces from their stored form."""
    return {bytes(doc.nonce): as_utc(doc.request_time) for doc in docs}
