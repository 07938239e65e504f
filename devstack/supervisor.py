"""Restarting what dies, as Kubernetes would, so the local stack behaves like its deployment.

A :class:`Supervisor` watches units (the broker, FerretDB, the chain nodes, the services). A unit
that has exited is started again after a back-off that doubles with each crash in a row (1 s,
2 s, 4 s … up to 30 s, like a pod's CrashLoopBackOff) and starts from 1 s again once the unit
has run for a minute; every restart is said in one line. The other units keep running: one
crash never stops the stack. Only :meth:`Supervisor.run`'s stop event (Ctrl-C in ``make up``)
ends the watch.

Time is passed in (``clock``), so the back-off is tested without waiting.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

__all__ = ["FIRST_BACKOFF", "MAX_BACKOFF", "STABLE_AFTER", "Supervisor", "Unit"]

#: Seconds before the first restart of a unit that crashed.
FIRST_BACKOFF = 1.0
#: The longest wait between two restarts.
MAX_BACKOFF = 30.0
#: A unit that ran this long before it exited starts its back-off from the first step again.
STABLE_AFTER = 60.0


class Unit(Protocol):
    """Something the supervisor keeps running."""

    @property
    def name(self) -> str:
        """What the lines say."""

    def running(self) -> bool:
        """Whether it is up (its process has not exited)."""

    def exit_status(self) -> int | None:
        """How its last process ended (negative: killed by that signal), None if running."""

    def restart(self) -> None:
        """Reap what is left and start it again; raises if it cannot be started."""


@dataclass
class _Watch:
    unit: Unit
    started: float
    crashes: int = 0
    due: float | None = None
    restarts: int = 0


class Supervisor:
    """See the module docstring."""

    def __init__(
        self,
        units: Sequence[Unit],
        say: Callable[[str], None],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._say = say
        self._clock = clock
        now = clock()
        self._watches = [_Watch(unit, started=now) for unit in units]
        self._lock = threading.Lock()

    def restarts(self, name: str) -> int:
        """How many times unit ``name`` was restarted."""
        with self._lock:
            return next(w.restarts for w in self._watches if w.unit.name == name)

    def check(self) -> None:
        """One look at every unit: schedule the dead ones, restart those whose back-off ended."""
        with self._lock:
            for watch in self._watches:
                self._check(watch)

    def _check(self, watch: _Watch) -> None:
        now = self._clock()
        unit = watch.unit
        if watch.due is None:
            if unit.running():
                return
            ran = now - watch.started
            watch.crashes = 1 if ran >= STABLE_AFTER else watch.crashes + 1
            delay = min(FIRST_BACKOFF * 2 ** (watch.crashes - 1), MAX_BACKOFF)
            watch.due = now + delay
            self._say(
                f"{unit.name:<10} exited ({_status(unit.exit_status())}) after {ran:.0f}s; "
                f"restarting in {delay:.0f}s (crash {watch.crashes} in a row)"
            )
            return
        if now < watch.due:
            return
        try:
            unit.restart()
        except Exception as error:  # a start that fails counts as one more crash
            watch.started = self._clock()
            watch.due = None
            self._say(f"{unit.name:<10} could not be started again: {_first_line(error)}")
            return
        watch.started = self._clock()
        watch.due = None
        watch.restarts += 1
        self._say(f"{unit.name:<10} restarted (restart {watch.restarts})")

    def run(self, stop: threading.Event, interval: float = 0.5) -> None:
        """Check every ``interval`` seconds until ``stop`` is set."""
        while not stop.wait(interval):
            self.check()


def _status(status: int | None) -> str:
    if status is None:
        return "status unknown"
    if status < 0:
        return f"killed by signal {-status}"
    return f"exit status {status}"


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
