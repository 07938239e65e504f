"""What each part of the consent book (directives, delegations, decisions) works with."""

from __future__ import annotations

from services.consent.domain.directory import Directory
from services.consent.domain.entries import EntryWriter
from services.consent.domain.notifications import Announcer
from services.consent.domain.records import ConsentStore
from services.consent.domain.versions import Versions


class BookPart:
    """A part of the book: it reads and adds versions, stores what it accepts, checks parties
    against the directory, signs entries and announces what it accepted."""

    def __init__(
        self,
        versions: Versions,
        store: ConsentStore,
        directory: Directory,
        entries: EntryWriter,
        announcer: Announcer,
        key_grace_seconds: float,
    ) -> None:
        self._versions = versions
        self._store = store
        self._directory = directory
        self._entries = entries
        self._announcer = announcer
        #: How long a change waits for a party or device key that identity announced a moment
        #: ago.
        self._key_grace = key_grace_seconds
