"""Run every benchmark under bench/ and print one table of their figures (``make bench``).

    python bench/run_all.py                 # the full runs (tens of minutes on 2 cores)
    python bench/run_all.py --quick         # every benchmark small
    python bench/run_all.py --only pymerkle_bench --only scale_bench

Each benchmark is a script that also runs alone (``python bench/<name>.py [--quick]``); this
one runs them one after another (never two at once: they would measure each other), shows
their output as it comes, and collects the ``FIGURE name=value unit`` lines they print
(``bench/common.py``). It exits non-zero if a script failed or printed no figure.

The full runs each run as their own process, and those that need the platform start their own.
The quick run starts one platform and runs the benchmarks of :data:`ON_PLATFORM` in this
process on it, one after another (``bench.common.shared_platform``): starting Kafka, FerretDB,
three nodes and four services takes half a minute on two cores, and the quick run is there to
show that every benchmark works, in under two minutes. (``chain_e2e_bench`` brings its own
three nodes and uses the platform's Kafka and FerretDB.)
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import json
import subprocess
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TextIO

ROOT = Path(__file__).resolve().parents[1]
for extra in (ROOT, ROOT / "protos"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

from bench.common import Figure, parse_figures, shared_platform  # noqa: E402

#: Every benchmark, in the order they run: in-process ones first, then those that start servers.
BENCHMARKS = (
    "chain_bench",
    "scale_bench",
    "pymerkle_bench",
    "sequencer_bench",
    "auth_bench",
    "grpc_floor_bench",
    "mirror_bench",
    "stream_bench",
    "chain_e2e_bench",
    "anchor_bench",
    "consent_bench",
    "audit_bench",
    "immudb_bench",
)
#: Those that run on the whole platform (``bench.common.bench_platform``) or on its Kafka and
#: FerretDB (``bench_servers``).
ON_PLATFORM = ("chain_e2e_bench", "anchor_bench", "consent_bench", "audit_bench", "immudb_bench")


@dataclass
class Outcome:
    """One script's run."""

    name: str
    returncode: int
    seconds: float
    figures: list[Figure] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """It exited 0 and printed at least one figure."""
        return self.returncode == 0 and bool(self.figures)


def run(name: str, quick: bool) -> Outcome:
    """Run ``bench/<name>.py``, echoing its output, and collect its figures."""
    argv = [sys.executable, str(ROOT / "bench" / f"{name}.py"), *(["--quick"] if quick else [])]
    print(f"== {name}{' --quick' if quick else ''}", flush=True)
    began = time.monotonic()
    lines: list[str] = []
    with subprocess.Popen(
        argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as process:
        assert process.stdout is not None
        for line in process.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
            lines.append(line)
    seconds = time.monotonic() - began
    return Outcome(name, process.returncode, seconds, parse_figures("".join(lines)))


class _Tee(io.StringIO):
    """Writes to the terminal and keeps a copy."""

    def __init__(self, terminal: TextIO) -> None:
        super().__init__()
        self._terminal = terminal

    def write(self, text: str) -> int:
        self._terminal.write(text)
        self._terminal.flush()
        return super().write(text)


def run_here(name: str, quick: bool) -> Outcome:
    """Run ``bench/<name>.py``'s ``main`` in this process (on the shared platform); a
    traceback is printed and counts as exit 1, as it would from the script."""
    argv = ["--quick"] if quick else []
    print(f"== {name}{' --quick' if quick else ''} (on the shared platform)", flush=True)
    began = time.monotonic()
    tee = _Tee(sys.stdout)
    with contextlib.redirect_stdout(tee):
        try:
            returncode = importlib.import_module(f"bench.{name}").main(argv)
        except SystemExit as exit_:
            returncode = exit_.code if isinstance(exit_.code, int) else 1
        except Exception:
            traceback.print_exc(file=sys.stdout)
            returncode = 1
    seconds = time.monotonic() - began
    return Outcome(name, returncode, seconds, parse_figures(tee.getvalue()))


def run_all(names: list[str], quick: bool) -> list[Outcome]:
    """Run ``names`` in order; in a quick run, those on the platform share one."""
    outcomes = [run(name, quick) for name in names if not quick or name not in ON_PLATFORM]
    here = [name for name in names if quick and name in ON_PLATFORM]
    if here:
        try:
            with shared_platform():
                outcomes += [run_here(name, quick) for name in here]
        except Exception:  # the platform did not start (or stop): those not run failed
            traceback.print_exc()
            ran = {outcome.name for outcome in outcomes}
            outcomes += [Outcome(name, 1, 0.0) for name in here if name not in ran]
    return outcomes


def print_table(outcomes: list[Outcome], quick: bool) -> None:
    """Every figure of every benchmark, one line each."""
    print()
    print(f"bench/run_all.py{' --quick' if quick else ''}: {len(outcomes)} benchmarks")
    width = max((len(f.name) for o in outcomes for f in o.figures), default=10)
    print(f"  {'benchmark':<16} {'figure':<{width}} {'value':>14}  unit")
    for outcome in outcomes:
        status = "ok" if outcome.ok else f"FAILED (exit {outcome.returncode})"
        print(f"  {outcome.name:<16} {'(run)':<{width}} {outcome.seconds:>14,.1f}  s, {status}")
        for fig in outcome.figures:
            value = f"{fig.value:,.3f}" if abs(fig.value) < 1000 else f"{fig.value:,.0f}"
            print(f"  {'':<16} {fig.name:<{width}} {value:>14}  {fig.unit}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="every benchmark small")
    parser.add_argument(
        "--only", action="append", choices=BENCHMARKS, help="run only this one (repeatable)"
    )
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    names = [name for name in BENCHMARKS if not args.only or name in args.only]
    began = time.monotonic()
    outcomes = run_all(names, args.quick)
    print_table(outcomes, args.quick)
    print(f"  {'all':<16} {'(run)':<10} {time.monotonic() - began:>14,.1f}  s")
    if args.json:
        args.json.write_text(json.dumps([asdict(o) for o in outcomes], indent=2) + "\n")
    failed = [o.name for o in outcomes if not o.ok]
    if failed:
        print(f"failed or printed no figure: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
