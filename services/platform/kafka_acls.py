"""Who may do what on Kafka: the ACLs of every principal of the platform, in one table.

Pure data with no imports beyond the standard library and the topic names, like
``topics.py``: the local stack (``devstack/kafka.py``) creates these ACLs on its broker, the k8s
manifests state them as Strimzi ``KafkaUser`` resources, and tests check both against this.

A principal is a process (its certificate's subject): the three submitters (identity, anchoring,
consent) write ``chain.ordering.v1`` and their own event topics; the chain nodes read both chain
topics and write cosignatures, and write the ordering topic too, because a node sends the
time-to-cut messages that cut a block (``chain/node/ordering.py``) — an ACL cannot tell a TTC
from an entry, and an entry a node wrote would still need a valid signature to go on the log.
Every process reads ``identity.events.v1`` for the revocation list; audit reads every event
topic, in its consumer group. Nothing else is allowed: the brokers run with
``allow.everyone.if.no.acl.found=false``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from enum import Enum
from typing import Final

from services.platform.topics import (
    ACCESS_EVENTS_TOPIC,
    CONSENT_EVENTS_TOPIC,
    COSIGNATURES_TOPIC,
    EVENT_TOPICS,
    IDENTITY_EVENTS_TOPIC,
    ORDERING_TOPIC,
    RECORDS_EVENTS_TOPIC,
)

__all__ = [
    "AUDIT_GROUP",
    "CHAIN_NODE_ACCESS",
    "SERVICE_ACCESS",
    "KafkaAccess",
    "Operation",
    "ResourceKind",
    "Rule",
    "access_of",
]

#: The audit service's consumer group (``services/audit/main.py:AuditSettings.consumer_group``).
AUDIT_GROUP: Final = "audit"


class Operation(Enum):
    """A Kafka ACL operation the platform grants (Read and Write imply Describe)."""

    READ = "Read"
    WRITE = "Write"


class ResourceKind(Enum):
    """A Kafka resource type the platform grants on."""

    TOPIC = "topic"
    GROUP = "group"


@dataclass(frozen=True)
class Rule:
    """One ALLOW rule: ``operation`` on the resource ``kind``/``name`` (literal name)."""

    kind: ResourceKind
    name: str
    operation: Operation


@dataclass(frozen=True)
class KafkaAccess:
    """What one principal may do: the topics it writes and reads, the groups it reads in."""

    writes: tuple[str, ...] = ()
    reads: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()

    def rules(self) -> Iterator[Rule]:
        """The ALLOW rules that grant exactly this."""
        for topic in self.writes:
            yield Rule(ResourceKind.TOPIC, topic, Operation.WRITE)
        for topic in self.reads:
            yield Rule(ResourceKind.TOPIC, topic, Operation.READ)
        for group in self.groups:
            yield Rule(ResourceKind.GROUP, group, Operation.READ)

    def may_write(self, topic: str) -> bool:
        """Whether this principal may write ``topic``."""
        return topic in self.writes

    def may_read(self, topic: str) -> bool:
        """Whether this principal may read ``topic``."""
        return topic in self.reads

    def renamed(self, names: Mapping[str, str]) -> KafkaAccess:
        """The same access on other topics (``names``: table name -> name used), for test
        clusters that give the chain topics a suffix."""
        return replace(
            self,
            writes=tuple(names.get(t, t) for t in self.writes),
            reads=tuple(names.get(t, t) for t in self.reads),
        )


#: The services, by process name.
SERVICE_ACCESS: Final[Mapping[str, KafkaAccess]] = {
    "identity": KafkaAccess(
        writes=(ORDERING_TOPIC, IDENTITY_EVENTS_TOPIC), reads=(IDENTITY_EVENTS_TOPIC,)
    ),
    "anchoring": KafkaAccess(
        writes=(ORDERING_TOPIC, RECORDS_EVENTS_TOPIC), reads=(IDENTITY_EVENTS_TOPIC,)
    ),
    "consent": KafkaAccess(
        writes=(ORDERING_TOPIC, CONSENT_EVENTS_TOPIC, ACCESS_EVENTS_TOPIC),
        reads=(IDENTITY_EVENTS_TOPIC,),
    ),
    "audit": KafkaAccess(reads=EVENT_TOPICS, groups=(AUDIT_GROUP,)),
}

#: Every chain node (the consortium's members).
CHAIN_NODE_ACCESS: Final = KafkaAccess(
    writes=(ORDERING_TOPIC, COSIGNATURES_TOPIC),
    reads=(ORDERING_TOPIC, COSIGNATURES_TOPIC, IDENTITY_EVENTS_TOPIC),
)


def access_of(process: str, *, chain_node: bool = False) -> KafkaAccess:
    """The access of ``process`` (a service's name, or any name with ``chain_node``);
    KeyError for a process the table does not know."""
    if chain_node:
        return CHAIN_NODE_ACCESS
    return SERVICE_ACCESS[process]
