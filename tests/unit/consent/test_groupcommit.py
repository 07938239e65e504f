"""Group commit (services/consent/groupcommit.py): callers that arrive while a commit runs are
committed together by the next one, each gets its own result, and a failure reaches every
caller of the failed batch."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import pytest

from services.consent.groupcommit import GroupCommit


class GatedCommit:
    """A commit function that holds its first call until released, so that callers pile up."""

    def __init__(self, fail_on: int | None = None) -> None:
        self.batches: list[list[int]] = []
        self.entered = threading.Event()
        self.release = threading.Event()
        self.fail_on = fail_on

    def __call__(self, items: Sequence[int]) -> list[int]:
        self.batches.append(list(items))
        if len(self.batches) == 1:
            self.entered.set()
            assert self.release.wait(10)
        if self.fail_on is not None and self.fail_on in items:
            raise OSError("the database went away")
        return [item * 10 for item in items]


class Callers:
    """Threads that each submit one item; their results (or errors) by item."""

    def __init__(self, group: GroupCommit[int, int]) -> None:
        self.group = group
        self.results: dict[int, int | OSError] = {}
        self.threads: list[threading.Thread] = []

    def submit(self, *items: int) -> None:
        for item in items:
            thread = threading.Thread(target=self._one, args=(item,))
            thread.start()
            self.threads.append(thread)

    def _one(self, item: int) -> None:
        try:
            self.results[item] = self.group.submit(item)
        except OSError as error:
            self.results[item] = error

    def join(self) -> dict[int, int | OSError]:
        for thread in self.threads:
            thread.join(10)
        return self.results


def wait_queued(group: GroupCommit[int, int], count: int) -> None:
    """Until ``count`` callers wait behind the running commit."""
    for _ in range(1000):
        if group.waiting == count:
            return
        threading.Event().wait(0.01)
    raise AssertionError(f"expected {count} queued callers, got {group.waiting}")


def test_callers_that_arrive_during_a_commit_share_the_next_one() -> None:
    commit = GatedCommit()
    group = GroupCommit(commit)
    callers = Callers(group)
    callers.submit(1)
    assert commit.entered.wait(10)
    callers.submit(2, 3, 4, 5)
    wait_queued(group, 4)
    commit.release.set()
    assert callers.join() == {1: 10, 2: 20, 3: 30, 4: 40, 5: 50}
    assert commit.batches[0] == [1]
    assert sorted(commit.batches[1]) == [2, 3, 4, 5] and len(commit.batches) == 2


def test_a_batch_never_exceeds_max_batch() -> None:
    commit = GatedCommit()
    group = GroupCommit(commit, max_batch=2)
    callers = Callers(group)
    callers.submit(1)
    assert commit.entered.wait(10)
    callers.submit(2, 3, 4, 5, 6)
    wait_queued(group, 5)
    commit.release.set()
    assert callers.join() == {i: i * 10 for i in range(1, 7)}
    assert [len(b) for b in commit.batches] == [1, 2, 2, 1]


def test_a_failed_commit_fails_every_caller_of_its_batch_and_no_other() -> None:
    commit = GatedCommit(fail_on=3)
    group = GroupCommit(commit)
    callers = Callers(group)
    callers.submit(1)
    assert commit.entered.wait(10)
    callers.submit(2, 3)
    wait_queued(group, 2)
    commit.release.set()
    results = callers.join()
    assert results[1] == 10
    assert all(isinstance(results[i], OSError) for i in (2, 3))
    assert group.submit(7) == 70  # the group still works afterwards


def test_a_commit_must_answer_every_item() -> None:
    group: GroupCommit[int, int] = GroupCommit(lambda items: [])
    with pytest.raises(RuntimeError, match="0 results for 1 items"):
        group.submit(1)
    with pytest.raises(ValueError):
        GroupCommit(lambda items: list(items), max_batch=0)
