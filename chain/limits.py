"""The formats and limits of the platform's fields (DESIGN §3.1: "Entries are at most 64 KiB;
every field has a format and a length limit checked at the edge").

One place for what an id looks like and how large a thing may be, shared by the entry parser
(:mod:`chain.entry`, run by every node), the services' domain checks and the request checks of
every RPC (:mod:`services.platform.fields`). Ids are ids, not free text: each has a fixed alphabet
and length, so that a name or a diagnosis can never pass for one.
"""

from __future__ import annotations

import re
from typing import Final

#: The largest serialized ``ChainEntry``: 64 KiB less one byte, the most a C2SP tlog-tiles entry
#: bundle holds (an entry's length there is a big-endian uint16; ``chain.tiles``). Well under
#: what Kafka takes in one message (1 MiB by default), so an entry the platform accepted can
#: always be sent, alone or in a batch record.
MAX_ENTRY_BYTES: Final = 64 * 1024 - 1
#: The most references one entry body may carry (a RECORD merge names two, a delegate-signed
#: CONSENT entry two).
MAX_REFERENCES: Final = 8
#: The most hashes in a batch inclusion path: a batch of 2**64 leaves needs 64.
MAX_BATCH_PATH: Final = 64

#: Timestamps the platform accepts: 1970-01-01T00:00:00Z to 9999-12-31T23:59:59.999999999Z.
#: Every such time converts to a ``datetime`` (which ends at year 9999) and to milliseconds.
MIN_TIME_SECONDS: Final = 0
MAX_TIME_SECONDS: Final = 253_402_300_799
MAX_NANOS: Final = 999_999_999
TIME_RANGE_TEXT: Final = "a time between 1970-01-01 and 9999-12-31 with nanos in [0, 999999999]"

#: An entry id, directive id, delegation id or request id: a random UUID v4 in lower case.
UUID_V4: Final = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
#: Any UUID in lower case (flag ids and event ids are UUID v5).
UUID_ANY: Final = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
#: An organization id (hospitals, regulators, app operators) or a platform service's id
#: ("identity", "consent"): a slug of 1-63 characters.
ORGANIZATION_ID: Final = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
#: A practitioner id as identity issues it: "pr-" and 128 random bits, base64url.
PRACTITIONER_ID: Final = re.compile(r"pr-[A-Za-z0-9_-]{22}")
#: A patient's subject id as identity issues it: "pt-" and 128 random bits, base64url.
SUBJECT_ID: Final = re.compile(r"pt-[A-Za-z0-9_-]{22}")
#: A key id on the log or a device key id: 1-128 characters of ``[A-Za-z0-9._:#/-]``.
KEY_ID: Final = re.compile(r"[A-Za-z0-9._:#/-]{1,128}")
#: A short code from a vocabulary (reason codes): 1-32 characters of ``[a-z0-9-]``.
REASON_CODE: Final = re.compile(r"[a-z0-9-]{1,32}")

#: What each format is called in messages ("expected <description>, got ...").
FORMAT_TEXT: Final[dict[re.Pattern[str], str]] = {
    UUID_V4: "a lower-case UUID v4",
    UUID_ANY: "a lower-case UUID",
    ORGANIZATION_ID: "an organization id of 1-63 characters [a-z0-9-] starting with a letter or "
    "digit",
    PRACTITIONER_ID: 'a practitioner id as identity issues it ("pr-" and 22 characters '
    "[A-Za-z0-9_-])",
    SUBJECT_ID: 'a subject id as identity issues it ("pt-" and 22 characters [A-Za-z0-9_-])',
    KEY_ID: "a key id of 1-128 characters [A-Za-z0-9._:#/-]",
    REASON_CODE: "a code of 1-32 characters [a-z0-9-]",
}


def time_in_range(seconds: int, nanos: int) -> bool:
    """True if (seconds, nanos) since the epoch lie in the range the platform accepts."""
    return MIN_TIME_SECONDS <= seconds <= MAX_TIME_SECONDS and 0 <= nanos <= MAX_NANOS


def shown(value: str, limit: int = 80) -> str:
    """``value`` for an error message: quoted, and cut after ``limit`` characters with its
    length, so that a 2 MB string never travels back whole in a status message."""
    if len(value) <= limit:
        return repr(value)
    return f"{value[:limit]!r}… ({len(value):,} characters)"
