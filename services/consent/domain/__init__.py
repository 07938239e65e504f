"""The consent service's domain: patient-signed directives and delegations, access decisions,
break-glass, and what each of them puts on the log. No gRPC, no database, no Kafka, no clock:
time is passed in (see services/consent/servicer.py for the gRPC face).

Every accepted directive or delegation version is checked first — a signature by an active
device key of the patient (or of a delegate allowed to manage consents), the next version
number, a well-formed document — and becomes a CONSENT entry signed by the consent service's
genesis key, carrying the patient's signature. Every access decision becomes an ACCESS entry that
names the deciding directive version. Entries and events leave through :class:`Outgoing` items:
the store keeps them durably first, a sender hands them to Kafka afterwards, so a request never
waits for Kafka and nothing accepted is lost.

The current state (every directive and delegation version) is kept in memory and written
through to the store: decisions read memory only. One consent process owns a database.

Modules: ``records`` (versions, decisions, the store protocol), ``versions`` (the versions in
memory), ``parts`` (what each part works with), ``directives``, ``delegations``,
``signatures``, ``reading`` (history and paged listings), ``decisions`` (CheckAccess,
BreakGlass) with ``policy`` (the rules), ``entries`` (CONSENT and ACCESS entry bytes),
``notifications`` (events and patients' notifications), ``directory`` (what identity
announced), and ``book`` (:class:`ConsentBook`, all of them composed).
"""

from services.consent.domain.book import DEVICE_KEY_GRACE_SECONDS, ConsentBook
from services.consent.domain.directory import DeviceKey, Directory
from services.consent.domain.notifications import (
    ACCESS_TOPIC,
    CONSENT_TOPIC,
    PRODUCER,
    NotificationSink,
    Outgoing,
)
from services.consent.domain.reading import ConsentPage
from services.consent.domain.records import AcceptedVersion, ConsentStore, StoredDecision

__all__ = [
    "ACCESS_TOPIC",
    "CONSENT_TOPIC",
    "DEVICE_KEY_GRACE_SECONDS",
    "PRODUCER",
    "AcceptedVersion",
    "ConsentBook",
    "ConsentPage",
    "ConsentStore",
    "DeviceKey",
    "Directory",
    "NotificationSink",
    "Outgoing",
    "StoredDecision",
]
