"""The local stack's supervisor (devstack/supervisor.py): a unit that dies is restarted after a
back-off that doubles while it keeps crashing and starts over once it ran a minute; the others
are left alone; a start that fails is one more crash."""

from __future__ import annotations

from dataclasses import dataclass, field

from devstack.supervisor import Supervisor


@dataclass
class Clock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class FakeUnit:
    name: str
    up: bool = True
    status: int | None = None
    starts: int = 0
    fail_starts: int = 0
    log: list[str] = field(default_factory=list)

    def running(self) -> bool:
        return self.up

    def exit_status(self) -> int | None:
        return self.status

    def restart(self) -> None:
        if self.fail_starts:
            self.fail_starts -= 1
            raise RuntimeError("port 50052 is held by python (pid 4242)\nmore detail")
        self.starts += 1
        self.up, self.status = True, None

    def die(self, status: int) -> None:
        self.up, self.status = False, status


def make(*units: FakeUnit) -> tuple[Supervisor, Clock, list[str]]:
    clock, said = Clock(), list[str]()
    return Supervisor(list(units), said.append, clock=clock), clock, said


def test_a_unit_that_dies_is_restarted_after_a_second_and_the_others_keep_running() -> None:
    node, service = FakeUnit("hospital-a"), FakeUnit("consent")
    supervisor, clock, said = make(node, service)
    clock.now += 120
    node.die(-9)
    supervisor.check()
    assert node.starts == 0 and said == [
        "hospital-a exited (killed by signal 9) after 120s; restarting in 1s (crash 1 in a row)"
    ]
    clock.now += 0.5
    supervisor.check()
    assert node.starts == 0, "not before its back-off"
    clock.now += 0.5
    supervisor.check()
    assert node.starts == 1 and service.starts == 0
    assert said[-1] == "hospital-a restarted (restart 1)"
    assert supervisor.restarts("hospital-a") == 1 and supervisor.restarts("consent") == 0


def test_the_back_off_doubles_while_a_unit_keeps_crashing_up_to_thirty_seconds() -> None:
    unit = FakeUnit("audit")
    supervisor, clock, said = make(unit)
    delays = []
    for _ in range(7):
        unit.die(1)
        supervisor.check()
        delays.append(said[-1].split("restarting in ")[1].split("s")[0])
        clock.now += 60  # long enough for any back-off, too short to count as stable
        supervisor.check()
        clock.now += 1
    assert delays == ["1", "2", "4", "8", "16", "30", "30"]
    assert unit.starts == 7


def test_a_unit_that_ran_a_minute_starts_its_back_off_over() -> None:
    unit = FakeUnit("kafka")
    supervisor, clock, said = make(unit)
    for _ in range(3):
        unit.die(1)
        supervisor.check()
        clock.now += 20
        supervisor.check()
    assert "restarting in 4s" in said[-2]
    clock.now += 61
    unit.die(1)
    supervisor.check()
    assert said[-1].endswith("restarting in 1s (crash 1 in a row)")


def test_a_start_that_fails_is_said_in_one_line_and_counts_as_a_crash() -> None:
    unit = FakeUnit("anchoring", fail_starts=1)
    supervisor, clock, said = make(unit)
    clock.now += 100
    unit.die(2)
    supervisor.check()
    clock.now += 1
    supervisor.check()
    assert (
        said[-1] == "anchoring  could not be started again: port 50052 is held by python (pid 4242)"
    )
    assert unit.starts == 0
    supervisor.check()  # still down: scheduled again, with a longer back-off
    assert "restarting in 2s (crash 2 in a row)" in said[-1]
    clock.now += 2
    supervisor.check()
    assert unit.starts == 1 and said[-1] == "anchoring  restarted (restart 1)"
