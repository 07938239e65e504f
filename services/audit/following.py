"""Followed trail streams (StreamTrail with ``follow``): one look at the store serves them all.

Every :data:`FOLLOW_POLL` s one look reads the items of the last :data:`FOLLOW_LOOKBACK` (as a
watcher who sees everything) and hands each followed stream the new or changed items of its own
trail: its query's conditions applied to the items in hand (``TrailQuery.includes``). So the
store is read once per look however many streams follow; a stream that re-read its trail on every
change let one hostile regulator's hundred followers keep the database busy.

A stream registers (:meth:`TrailChanges.follow`) before it reads its stored pages, so an item
stored meanwhile reaches it in those pages or in a later look, and every look hands out what it
finds, the first too; the stream remembers what it sent (:class:`SentItems`) and skips repeats.
A stream whose caller does not read holds at most :data:`MAX_BACKLOG` handed items; past that it
drops them and reads its recent trail from the store once instead (:attr:`Handed.fell_behind`).
"""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from services.audit.domain import AuditBook, TrailFilterSpec, TrailRecord
from services.audit.domain.records import TrailQuery
from services.platform.aio import Pulse, run_blocking
from services.platform.caller import Caller, Role

#: Seconds between two looks for new or changed items, one look for all followed streams.
FOLLOW_POLL = 0.5
#: How far back a look reads (events about one patient come on several topics, so an item's
#: time may be a little behind the moment it is stored).
FOLLOW_LOOKBACK = timedelta(seconds=60)
#: The most item states one followed stream remembers (see :class:`SentItems`).
MAX_SENT_STATES = 5_000
#: The most handed items a stream holds for a caller that does not read.
MAX_BACKLOG = 5_000
#: Most items one read of the store returns.
PAGE = 1000
#: Who looks for changes on behalf of the followed streams: it sees every item, and each stream
#: keeps only those of its own caller's trail.
_WATCHER = Caller(Role.REGULATOR, "audit-follow")
_log = logging.getLogger(__name__)


class SentItems:
    """What a followed stream has sent: each item's state, kept only as far back as the stream
    still looks (so the map does not grow with the stream's age), and at most ``cap`` items
    (so neither does it with a long trail sent first, nor with a burst of items): past the cap,
    what lies before the look-back window goes first, then the items noted first. An item
    forgotten within the window is sent again if a look finds it, unchanged or not."""

    def __init__(self, cap: int = MAX_SENT_STATES, lookback: timedelta = FOLLOW_LOOKBACK) -> None:
        self._states: dict[str, tuple[int, datetime]] = {}
        self.latest: datetime | None = None
        self._cap = cap
        self._lookback = lookback

    def add(self, item: TrailRecord) -> bool:
        """Note ``item``; False when it was sent already in this state."""
        known = self._states.get(item.entry_id)
        if known is not None and known[0] == item.state:
            return False
        self._states[item.entry_id] = (item.state, item.time)
        if self.latest is None or item.time > self.latest:
            self.latest = item.time
        if len(self._states) > self._cap:
            self._shrink()
        return True

    def _shrink(self) -> None:
        # Down to three quarters of the cap, so that the next shrink is cap / 4 items away.
        if self.latest is not None:
            self.forget_before(self.latest - self._lookback)
        excess = len(self._states) - self._cap * 3 // 4
        if excess > 0:
            for entry_id in list(itertools.islice(self._states, excess)):
                del self._states[entry_id]

    def __len__(self) -> int:
        return len(self._states)

    def forget_before(self, since: datetime) -> None:
        """Forget items older than ``since``: the stream no longer looks at them."""
        for entry_id, (_, time) in list(self._states.items()):
            if time < since:
                del self._states[entry_id]


@dataclass
class Handed:
    """What the looks handed a stream since it last asked."""

    items: list[TrailRecord] = field(default_factory=list)
    #: True when more came than :data:`MAX_BACKLOG`: the items were dropped, and the stream
    #: reads its recent trail from the store instead.
    fell_behind: bool = False


class Follower:
    """A followed stream's mailbox: the items of its trail the looks found new or changed."""

    def __init__(self, query: TrailQuery, backlog: int | None = None) -> None:
        self.query = query
        self._event = asyncio.Event()
        self._handed = Handed()
        self._backlog = MAX_BACKLOG if backlog is None else backlog

    def hand(self, items: list[TrailRecord]) -> None:
        """Take the items of this stream's trail among ``items`` (on the event loop)."""
        mine = [item for item in items if self.query.includes(item)]
        if not mine:
            return
        if not self._handed.fell_behind:
            self._handed.items.extend(mine)
            if len(self._handed.items) > self._backlog:
                self._handed = Handed(fell_behind=True)
        self._event.set()

    async def next(self, timeout: float) -> Handed:
        """What was handed since the last call, waiting up to ``timeout`` s for something."""
        await Pulse.wait(self._event, timeout)
        self._event.clear()
        handed, self._handed = self._handed, Handed()
        return handed


class TrailChanges:
    """The one look of a process for all its followed streams (on the server's event loop; it
    runs while a stream is followed)."""

    def __init__(
        self, book: AuditBook, clock: Callable[[], datetime], stopping: threading.Event
    ) -> None:
        self._book = book
        self._clock = clock
        self._stopping = stopping
        self._followers: set[Follower] = set()
        self._seen = SentItems()
        self._task: asyncio.Task[None] | None = None

    def follow(self, query: TrailQuery) -> Follower:
        """Register a followed stream (on the event loop), before it reads its stored pages."""
        follower = Follower(query)
        self._followers.add(follower)
        if self._task is None or self._task.done():
            # In a context of its own: the look serves every stream, not the one that started it
            # (whose caller's turns at the thread pool it would otherwise take).
            look = self._look()
            self._task = asyncio.get_running_loop().create_task(look, context=contextvars.Context())
        return follower

    def unfollow(self, follower: Follower) -> None:
        """Forget a followed stream."""
        self._followers.discard(follower)

    async def _look(self) -> None:
        loop = asyncio.get_running_loop()
        while self._followers and not self._stopping.is_set():
            began = loop.time()
            try:
                changed = await run_blocking(self._changed)
            except Exception:  # the store failed: the streams wait for the next look
                _log.warning("looking for new trail items failed", exc_info=True)
                changed = []
            if changed:
                for follower in list(self._followers):
                    follower.hand(changed)
            # A look reads the store for at most a third of the time, however slow it gets.
            await asyncio.sleep(max(FOLLOW_POLL, 2 * (loop.time() - began)))

    def _changed(self) -> list[TrailRecord]:
        since = self._clock() - FOLLOW_LOOKBACK
        window = TrailFilterSpec(start_time=since)
        found = read_trail(self._book, _WATCHER, window)
        changed = [item for item in found if self._seen.add(item)]
        self._seen.forget_before(since)
        return changed


def read_trail(book: AuditBook, caller: Caller, spec: TrailFilterSpec) -> list[TrailRecord]:
    """Every item of ``caller``'s trail for ``spec``, page after page (blocking)."""
    items: list[TrailRecord] = []
    token = ""
    while True:
        page = book.trail(caller, spec, token, PAGE)
        items.extend(page.items)
        token = page.next_page_token
        if not token:
            return items


def recent(spec: TrailFilterSpec, since: datetime) -> TrailFilterSpec:
    """``spec`` narrowed to items at or after ``since``."""
    start = since if spec.start_time is None else max(since, spec.start_time)
    return replace(spec, start_time=start)
