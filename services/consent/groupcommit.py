"""Group commit: concurrent callers share one durable write instead of paying one each.

A caller of :meth:`GroupCommit.submit` that finds no commit running becomes the leader: it
takes everything queued (up to ``max_batch``), runs the commit function on it outside the lock,
hands every waiter its result, and returns its own. Callers that arrive while a commit runs queue
up and are committed together by the next leader. Nobody waits for a timer: under light load a
batch is one item and costs one write; under heavy load batches grow with the write's own
duration, so the write rate stays bounded while every caller still returns only after its item
is committed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class _Slot(Generic[T, R]):
    __slots__ = ("done", "error", "item", "result")

    def __init__(self, item: T) -> None:
        self.item = item
        self.done = False
        self.result: R | None = None
        self.error: BaseException | None = None


class GroupCommit(Generic[T, R]):
    """See the module docstring. ``commit(items)`` returns one result per item, in order; an
    exception it raises is raised to every caller of that batch."""

    def __init__(self, commit: Callable[[Sequence[T]], Sequence[R]], max_batch: int = 500) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._commit = commit
        self._max_batch = max_batch
        self._cond = threading.Condition()
        self._queue: list[_Slot[T, R]] = []
        self._busy = False

    @property
    def waiting(self) -> int:
        """Callers queued behind the commit that is running."""
        with self._cond:
            return len(self._queue)

    def submit(self, item: T) -> R:
        """Commit ``item`` (with whatever else is queued); its result once it is committed."""
        slot: _Slot[T, R] = _Slot(item)
        with self._cond:
            self._queue.append(slot)
            while not slot.done:
                if self._busy:
                    self._cond.wait()
                    continue
                self._busy = True
                batch = self._queue[: self._max_batch]
                del self._queue[: self._max_batch]
                self._cond.release()
                try:
                    self._run(batch)
                finally:
                    self._cond.acquire()
                    self._busy = False
                    self._cond.notify_all()
        if slot.error is not None:
            raise slot.error
        return slot.result  # type: ignore[return-value]  # set by _run when error is None

    def _run(self, batch: list[_Slot[T, R]]) -> None:
        try:
            results = self._commit([slot.item for slot in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"commit returned {len(results)} results for {len(batch)} items")
        except BaseException as error:  # every caller of the batch learns it failed
            for slot in batch:
                slot.error = error
                slot.done = True
            return
        for slot, result in zip(batch, results, strict=True):
            slot.result = result
            slot.done = True
