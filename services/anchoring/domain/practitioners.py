"""The practitioners each hospital registered, as ``identity.events.v1`` announces them
(``PractitionerRegistered``), so that a RECORD entry's ``author_ref`` names a practitioner of the
anchoring hospital and nothing else: not another hospital's practitioner, not an id nobody
issued (which could be anything of the right shape). Fed by a
:class:`services.platform.revocations.IdentityEventFeed`; thread-safe.
"""

from __future__ import annotations

import threading

from chain.errors import InvalidInputError
from chain.limits import shown
from swiftchain.events.v1 import events_pb2

#: How long a check waits for a practitioner not announced yet: identity answers
#: RegisterPractitioner before its event reaches this process, and a hospital may anchor a
#: record by that practitioner right away.
UNKNOWN_PRACTITIONER_GRACE = 3.0
#: Unknown ids remembered as waited for (each is waited for once); beyond, the memory restarts.
_MAX_WAITED = 10_000


class Practitioners:
    """Practitioner id -> hospital, from identity's events."""

    def __init__(self, grace: float = UNKNOWN_PRACTITIONER_GRACE) -> None:
        self._hospital_of: dict[str, str] = {}
        self._announced = threading.Condition()
        self._grace = grace
        self._waited: set[str] = set()

    def apply(self, event: events_pb2.EventEnvelope) -> None:
        """Take in one identity event (others change nothing)."""
        if not event.payload.Is(events_pb2.PractitionerRegistered.DESCRIPTOR):
            return
        registered = events_pb2.PractitionerRegistered()
        event.payload.Unpack(registered)
        with self._announced:
            # The first registration stands: identity never moves a practitioner.
            self._hospital_of.setdefault(registered.practitioner_id, registered.organization_id)
            self._announced.notify_all()

    def check_author(self, organization_id: str, practitioner_id: str) -> None:
        """:class:`InvalidInputError` unless ``practitioner_id`` is a practitioner that
        ``organization_id`` registered (an unknown id is waited for once, up to the grace)."""
        with self._announced:
            hospital = self._hospital_of.get(practitioner_id)
            if hospital is None and practitioner_id not in self._waited:
                if len(self._waited) >= _MAX_WAITED:
                    self._waited.clear()
                self._waited.add(practitioner_id)
                self._announced.wait_for(
                    lambda: practitioner_id in self._hospital_of, timeout=self._grace
                )
                hospital = self._hospital_of.get(practitioner_id)
        if hospital is None:
            raise InvalidInputError(
                f"expected the author to be a practitioner {organization_id} registered, "
                f"got {shown(practitioner_id)}, which identity never registered"
            )
        if hospital != organization_id:
            raise InvalidInputError(
                f"expected the author to be a practitioner {organization_id} registered, "
                f"got {shown(practitioner_id)} of {hospital}"
            )
