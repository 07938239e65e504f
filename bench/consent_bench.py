"""End-to-end benchmark of CheckAccess: hospital (mTLS) -> consent service -> decision stored
and answered -> ACCESS entry to Kafka -> three chain nodes, everything real on this machine.

    python bench/consent_bench.py            # 10 s at 1,000 requests/s
    python bench/consent_bench.py --quick    # 2 s at 200 requests/s

Requests are sent at a steady rate from a pool of client threads (one channel each), each with a
fresh request id; the latency is the client's, from send to response. The decision is stored
durably before the response and its ACCESS entry is handed to Kafka afterwards, so the figure
includes the durable write but not Kafka. Afterwards the run checks that every decision's
ACCESS entry reached the log (sequenced or sealed): a decision lost would fail the run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc

ROOT = Path(__file__).resolve().parents[1]
for extra in (ROOT, ROOT / "protos"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

from devstack.ferretdb import ensure_ferretdb  # noqa: E402
from devstack.kafka import ensure_kafka  # noqa: E402
from sdk.consent import PERMIT, PatientDevice, bearer, organization, provision  # noqa: E402
from swiftchain.chain.v1 import chain_service_pb2, chain_service_pb2_grpc  # noqa: E402
from swiftchain.common.v1 import common_pb2  # noqa: E402
from swiftchain.consent.v1 import consent_service_pb2 as pb  # noqa: E402
from swiftchain.consent.v1 import consent_service_pb2_grpc  # noqa: E402
from tests.e2e.platform import Platform, wait_for  # noqa: E402

P99_TARGET_MS = 10.0
CLIENTS = 16
_ON_LOG = (common_pb2.ENTRY_STATE_SEQUENCED, common_pb2.ENTRY_STATE_SEALED)


def drive(
    stubs: list[consent_service_pb2_grpc.ConsentServiceStub],
    patient: str,
    rate: int,
    seconds: float,
) -> tuple[list[float], list[str]]:
    """Send CheckAccess at ``rate`` per second for ``seconds``; (latencies in ms, entry ids)."""
    latencies: list[float] = []
    entries: list[str] = []
    lock = threading.Lock()
    total = int(rate * seconds)
    start = time.perf_counter() + 0.2

    def one(index: int) -> None:
        due = start + index / rate
        pause = due - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
        sent = time.perf_counter()
        answer = stubs[index % len(stubs)].CheckAccess(
            pb.CheckAccessRequest(
                patient_subject_id=patient,
                data_category="laboratory",
                purpose="TREAT",
                request_id=str(uuid.uuid4()),
            ),
            timeout=30,
        )
        took = (time.perf_counter() - sent) * 1000
        assert answer.decision == common_pb2.ACCESS_DECISION_PERMIT
        with lock:
            latencies.append(took)
            entries.append(answer.access_entry_id)

    with ThreadPoolExecutor(CLIENTS * 4) as pool:
        list(pool.map(one, range(total)))
    return latencies, entries


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small run")
    parser.add_argument("--rate", type=int, default=None, help="requests/s")
    parser.add_argument("--seconds", type=float, default=None, help="run length")
    args = parser.parse_args()
    rate = args.rate or (200 if args.quick else 1000)
    seconds = args.seconds or (2.0 if args.quick else 10.0)
    ensure_kafka(log=lambda line: None)
    ensure_ferretdb(log=lambda line: None)
    with tempfile.TemporaryDirectory(prefix="swiftchain-consent-bench-") as tmp:
        platform = Platform(Path(tmp))
        try:
            print("starting the platform (Kafka, FerretDB, 3 chain nodes, services)...")
            platform.start()
            hospital = platform.hospital
            patient = platform.register_patient("bench patient", hospital)
            assert patient.device_dir is not None
            device = PatientDevice.from_folder(patient.device_dir)
            patient_stub = consent_service_pb2_grpc.ConsentServiceStub(
                platform.channel(patient, "consent")
            )
            signed = device.sign_directive(
                device.directive(grantee=organization(hospital.id), provision=provision(PERMIT))
            )

            def granted() -> bool:
                try:
                    patient_stub.GrantConsent(
                        pb.GrantConsentRequest(signed_directive=signed),
                        metadata=bearer(patient.token),
                        timeout=10,
                    )
                except grpc.RpcError as error:
                    if error.code() == grpc.StatusCode.NOT_FOUND:
                        return False  # identity's events are on their way
                    raise
                return True

            wait_for("the grant", granted, 30)
            stubs = [
                consent_service_pb2_grpc.ConsentServiceStub(platform.channel(hospital, "consent"))
                for _ in range(CLIENTS)
            ]
            drive(stubs, patient.id, min(rate, 200), 1.0)  # warm-up: connections, caches
            print(f"CheckAccess at {rate:,} requests/s for {seconds:.0f} s...")
            began = time.perf_counter()
            latencies, entries = drive(stubs, patient.id, rate, seconds)
            achieved = len(latencies) / (time.perf_counter() - began)
            chain = chain_service_pb2_grpc.ChainServiceStub(
                platform.channel(platform.admin, "hospital-a")
            )
            print(f"checking that all {len(entries):,} ACCESS entries reached the log...")
            missing = set(entries)
            deadline = time.monotonic() + 120
            while missing and time.monotonic() < deadline:
                for entry_id in list(missing):
                    try:
                        status = chain.GetEntryStatus(
                            chain_service_pb2.GetEntryStatusRequest(entry_id=entry_id), timeout=10
                        )
                    except grpc.RpcError as error:
                        if error.code() == grpc.StatusCode.NOT_FOUND:
                            continue
                        raise
                    if status.state in _ON_LOG:
                        missing.discard(entry_id)
                if missing:
                    time.sleep(1)
        finally:
            platform.stop()
    p50 = statistics.median(latencies)
    p99 = statistics.quantiles(latencies, n=100)[98]
    print(f"{'benchmark':<56} {'figure':>12}  target")
    print(f"{'CheckAccess requests/s achieved':<56} {achieved:>12,.0f}  {rate:,}")
    print(f"{'CheckAccess p50 at ' + format(rate, ',') + ' requests/s (ms)':<56} {p50:>12.2f}")
    print(
        f"{'CheckAccess p99 at ' + format(rate, ',') + ' requests/s (ms)':<56} {p99:>12.2f}  "
        f"<= {P99_TARGET_MS:.0f}"
    )
    print(f"{'decisions without an ACCESS entry on the log':<56} {len(missing):>12,}  0")
    return 1 if missing else 0


if __name__ == "__main__":
    raise SystemExit(main())
