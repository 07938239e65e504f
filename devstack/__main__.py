"""``python -m devstack``: prepare and run the local infrastructure.

* ``bootstrap`` — fetch the Kafka jars and build FerretDB (first run only), with timings.
* ``infra`` — run Kafka and FerretDB in the foreground until Ctrl-C (manual testing); data and
  logs in ``.stack/run/`` unless ``--data-dir`` says otherwise.

A missing toolchain prints one line and exits 2; a failed download, build or start prints what
failed (with the log tail) and exits 1.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from devstack.ferretdb import FerretDB, ensure_ferretdb
from devstack.kafka import KafkaBroker, create_topics, ensure_kafka
from devstack.paths import cache_dir, run_dir
from devstack.process import ProcessError
from devstack.toolchain import BootstrapError, ToolchainMissing, find_go, find_java, find_maven


def _say(line: str) -> None:
    print(line, flush=True)


def bootstrap(cache: Path | None = None) -> None:
    """Check the toolchain, then make sure the Kafka jars and the FerretDB binary exist."""
    began = time.monotonic()
    # Check everything first, so a missing tool is reported before minutes of work.
    java, mvn, go = find_java(), find_maven(), find_go()
    _say(f"toolchain: java {java.version} ({java.path}), mvn {mvn.path}, {go.version} ({go.path})")
    where = cache or cache_dir()
    step = time.monotonic()
    home = ensure_kafka(cache)
    _say(f"kafka: {home / 'libs'} ({time.monotonic() - step:.1f}s)")
    step = time.monotonic()
    binary = ensure_ferretdb(cache)
    _say(f"ferretdb: {binary} ({time.monotonic() - step:.1f}s)")
    _say(f"bootstrap done in {time.monotonic() - began:.1f}s (cache: {where})")


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def infra(
    kafka_port: int, controller_port: int, mongo_port: int, data_dir: Path, fresh: bool
) -> int:
    """Run Kafka and FerretDB until Ctrl-C / SIGTERM, or until one of them dies."""
    bootstrap()
    if fresh:
        shutil.rmtree(data_dir / "kafka", ignore_errors=True)
        shutil.rmtree(data_dir / "ferretdb", ignore_errors=True)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    broker = KafkaBroker(data_dir / "kafka", port=kafka_port, controller_port=controller_port)
    mongo = FerretDB(data_dir / "ferretdb", port=mongo_port)
    try:
        mongo.start()
        broker.start()
        _say(f"ferretdb: ready in {mongo.wait_ready():.1f}s at {mongo.uri} (log {mongo.log_path})")
        _say(
            f"kafka: ready in {broker.wait_ready():.1f}s at {broker.bootstrap} "
            f"(log {broker.log_path})"
        )
        created = create_topics(broker.bootstrap)
        _say(f"kafka: topics created: {', '.join(created) if created else 'none (all existed)'}")
        _say("running; Ctrl-C to stop")
        while broker.process.is_running() and mongo.process.is_running():
            time.sleep(0.5)
        dead = broker.process if not broker.process.is_running() else mongo.process
        print(dead.error(f"exited unexpectedly with status {dead.returncode}"), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        _say("stopping…")
        return 0
    finally:
        broker.stop()
        mongo.stop()
        _say("stopped")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devstack", description="Swiftchain Health local infrastructure"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("bootstrap", help="fetch the Kafka jars and build FerretDB (first run only)")
    run = sub.add_parser("infra", help="run Kafka and FerretDB in the foreground until Ctrl-C")
    run.add_argument("--kafka-port", type=int, default=9092)
    run.add_argument("--controller-port", type=int, default=9093)
    run.add_argument("--mongo-port", type=int, default=27017)
    run.add_argument(
        "--data-dir", type=Path, default=None, help="data and logs (default: .stack/run)"
    )
    run.add_argument("--fresh", action="store_true", help="delete existing data first")
    args = parser.parse_args(argv)
    try:
        if args.command == "bootstrap":
            bootstrap()
            return 0
        return infra(
            args.kafka_port,
            args.controller_port,
            args.mongo_port,
            args.data_dir or run_dir(),
            args.fresh,
        )
    except ToolchainMissing as exc:
        print(exc, file=sys.stderr)
        return 2
    except (BootstrapError, ProcessError) as exc:
        print(exc, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
