"""The anchoring service's side of the log writer: what each settled entry means for the
versions it anchors, and the seal deadline.

:class:`SealWatch` receives the platform log writer's reports (sealed at a checkpoint, rejected)
and hands them to the :class:`~services.anchoring.domain.tracking.SealTracker` with the time, and
every :data:`DEADLINE_POLL` seconds reports the versions past their promised deadline.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from services.anchoring.domain.tracking import SealTracker
from services.anchoring.observability import SealObserver
from services.platform.log_writer import Rejected, Sealed
from services.platform.threads import start_supervised

_log = logging.getLogger(__name__)
#: Seconds between two looks for versions past their deadline.
DEADLINE_POLL = 0.25


class SealWatch:
    """See the module docstring: an :class:`~services.platform.log_writer.EntryFates`, and
    the deadline loop (:meth:`start`, :meth:`stop`)."""

    def __init__(
        self,
        tracker: SealTracker,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        observer: SealObserver | None = None,
    ) -> None:
        self._tracker = tracker
        self._observer = observer or SealObserver()
        self._clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def entries_sealed(self, sealed: Sequence[Sealed]) -> None:
        """Record the versions among ``sealed``, in one write."""
        now = self._clock()
        versions = self._tracker.on_sealed(
            [(s.entry_id, s.leaf_index, s.tree_size) for s in sealed], now
        )
        self._observer.sealed(versions, now)

    def entries_rejected(self, rejected: Sequence[Rejected]) -> None:
        """Settle the versions among ``rejected`` with a RecordRejected event each."""
        for item in rejected:
            self._tracker.on_rejected(item.entry_id, item.reason, item.detail, self._clock())

    def start(self) -> None:
        """Start the deadline loop."""
        self._thread = start_supervised("deadlines", self._deadline_loop)

    def stop(self) -> None:
        """Stop the deadline loop and wait for it."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _deadline_loop(self) -> None:
        while not self._stop.wait(DEADLINE_POLL):
            try:
                self._tracker.miss_deadlines(self._clock())
            except Exception:
                _log.warning("checking seal deadlines failed; will retry", exc_info=True)
