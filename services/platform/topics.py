"""The Kafka topics of Swiftchain Health (DESIGN.md §3.2 and §5), in one table.

Pure data with no imports beyond the standard library, so that production code (settings,
producers, consumers, k8s tooling) can import the same names and settings the local stack
creates. ``devstack.kafka.create_topics`` creates them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final

__all__ = [
    "ACCESS_EVENTS_TOPIC",
    "CONSENT_EVENTS_TOPIC",
    "COSIGNATURES_TOPIC",
    "EVENT_TOPICS",
    "IDENTITY_EVENTS_TOPIC",
    "ORDERING_TOPIC",
    "RECORDS_EVENTS_TOPIC",
    "TOPICS",
    "TopicSpec",
    "min_insync_replicas_for",
    "topic_spec",
]


def _frozen(config: Mapping[str, str]) -> Mapping[str, str]:
    return MappingProxyType(dict(config))


@dataclass(frozen=True)
class TopicSpec:
    """A topic: its name, partition count and topic-level configs.

    ``min.insync.replicas`` is not part of ``config``: it follows the replication factor
    (see :func:`min_insync_replicas_for`).
    """

    name: str
    partitions: int
    config: Mapping[str, str] = field(default_factory=lambda: _frozen({}))
    description: str = ""


ORDERING_TOPIC: Final = "chain.ordering.v1"
COSIGNATURES_TOPIC: Final = "chain.cosignatures.v1"
IDENTITY_EVENTS_TOPIC: Final = "identity.events.v1"
RECORDS_EVENTS_TOPIC: Final = "records.events.v1"
CONSENT_EVENTS_TOPIC: Final = "consent.events.v1"
ACCESS_EVENTS_TOPIC: Final = "access.events.v1"

_KEEP_FOREVER: Final = {"retention.ms": "-1"}
_EVENT_PARTITIONS: Final = 3

#: Every topic, chain topics first.
TOPICS: Final[tuple[TopicSpec, ...]] = (
    TopicSpec(
        ORDERING_TOPIC,
        partitions=1,  # one partition = one total order
        config=_frozen(
            {
                **_KEEP_FOREVER,
                "retention.bytes": "-1",
                # the broker stamps each record, so every node derives the same cut times
                "message.timestamp.type": "LogAppendTime",
            }
        ),
        description="chain entries and time-to-cut messages, in the one order every node applies",
    ),
    TopicSpec(
        COSIGNATURES_TOPIC,
        partitions=1,
        config=_frozen(_KEEP_FOREVER),
        description="checkpoint signature lines published by chain nodes",
    ),
    *(
        TopicSpec(
            name,
            partitions=_EVENT_PARTITIONS,
            config=_frozen(_KEEP_FOREVER),  # the audit read models rebuild from these
            description=f"{name.split('.')[0]} events (EventEnvelope), keyed for per-key order",
        )
        for name in (
            IDENTITY_EVENTS_TOPIC,
            RECORDS_EVENTS_TOPIC,
            CONSENT_EVENTS_TOPIC,
            ACCESS_EVENTS_TOPIC,
        )
    ),
)

#: The four service event topics (the audit service consumes all of them).
EVENT_TOPICS: Final[tuple[str, ...]] = (
    IDENTITY_EVENTS_TOPIC,
    RECORDS_EVENTS_TOPIC,
    CONSENT_EVENTS_TOPIC,
    ACCESS_EVENTS_TOPIC,
)


def topic_spec(name: str) -> TopicSpec:
    """The spec of one topic by name (KeyError if it is not in :data:`TOPICS`)."""
    for spec in TOPICS:
        if spec.name == name:
            return spec
    raise KeyError(name)


def min_insync_replicas_for(replication_factor: int) -> int:
    """``min.insync.replicas`` for a replication factor: 2 of 3 in production (DESIGN §3.2),
    never more than one below the replica count, at least 1 (a single local broker)."""
    if replication_factor < 1:
        raise ValueError("replication factor must be at least 1")
    return max(1, min(2, replication_factor - 1))
