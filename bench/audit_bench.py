"""End-to-end benchmark of the audit service's read model: how fast a burst of anchored record
versions becomes a sealed, queryable trail, everything real and on this machine.

    python bench/audit_bench.py              # 10,000 versions for one patient
    python bench/audit_bench.py --quick      # 300 versions

The versions are anchored through one ``AnchorRecords`` stream; the clock starts at the first
send. Figures: when the log had sealed them all (a chain node's view), when the audit service's
trail of that patient held every one of them sealed (polled with ``QueryTrail``, as a regulator
would), and the lag between the two. ``--profile-seconds N`` runs py-spy (if on PATH) on the
audit process for N seconds after the anchors, into ``audit-profile.txt``.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for extra in (ROOT, ROOT / "protos"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

from bench.common import bench_hospital, bench_platform, figure  # noqa: E402
from services.platform.caller import Role  # noqa: E402
from swiftchain.audit.v1 import audit_service_pb2 as apb  # noqa: E402
from swiftchain.audit.v1 import audit_service_pb2_grpc  # noqa: E402
from swiftchain.common.v1 import common_pb2  # noqa: E402

SUBJECT = "pt-AUDITBENCHAUDITBENCH00"


def sealed_in_trail(stub: audit_service_pb2_grpc.AuditServiceStub) -> int:
    """How many items of the patient's trail are sealed (every page)."""
    sealed = 0
    token = ""
    while True:
        page = stub.QueryTrail(
            apb.QueryTrailRequest(
                filter=apb.TrailFilter(patient_subject_id=SUBJECT),
                page_size=1000,
                page_token=token,
            ),
            timeout=120,
        )
        sealed += sum(1 for i in page.items if i.proof.state == common_pb2.ENTRY_STATE_SEALED)
        token = page.next_page_token
        if not token:
            return sealed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small run")
    parser.add_argument("--versions", type=int, default=None)
    parser.add_argument("--profile-seconds", type=float, default=0.0)
    args = parser.parse_args(argv)
    count = args.versions or (300 if args.quick else 10_000)
    with bench_platform() as platform:
        hospital = bench_hospital(platform)
        regulator = platform.register_organization("reg", Role.REGULATOR, "regulator-bench")
        assert hospital.signing_key is not None
        client = platform.hospital_client(hospital)
        drafts = [
            client.record_version(f"a-{n}", 1, f"document {n}".encode(), subject_id=SUBJECT)
            for n in range(count)
        ]
        audit = audit_service_pb2_grpc.AuditServiceStub(platform.channel(regulator, "audit"))
        print(f"anchoring {count:,} versions for one patient...")
        began = time.perf_counter()
        results = client.anchor(drafts, timeout=600)
        accepted = time.perf_counter() - began
        profiler = None
        spy = shutil.which("py-spy")
        if args.profile_seconds and spy:
            audit_pid = next(
                p.process.pid for p in platform.stack.grpc_processes if p.name == "audit"
            )
            profiler = subprocess.Popen(
                [
                    spy,
                    "record",
                    "--pid",
                    str(audit_pid),
                    "--duration",
                    str(int(args.profile_seconds)),
                    "--format",
                    "raw",
                    "-o",
                    "audit-profile.txt",
                    "--nonblocking",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        # The stream's versions are sealed in order: the last one's receipt means all.
        client.receipt(results[-1].receipt.entry_id, wait=True)
        sealed_at = time.perf_counter() - began
        print(f"  the log sealed them all after {sealed_at:.1f} s; waiting for the trail...")
        seen = 0
        while seen < count:
            seen = sealed_in_trail(audit)
            print(
                f"  trail: {seen:,} of {count:,} sealed after {time.perf_counter() - began:.1f} s",
                flush=True,
            )
            if seen < count:
                time.sleep(2.0)
        in_trail = time.perf_counter() - began
        if profiler is not None:
            profiler.wait(timeout=args.profile_seconds + 60)
    figure("anchored_s", accepted, "s")
    figure("sealed_on_log_s", sealed_at, "s")
    figure("sealed_in_trail_s", in_trail, "s")
    figure("read_model_per_s", count / in_trail, "versions/s")
    figure("lag_s", in_trail - sealed_at, "s")
    print(f"{'benchmark':<60} {'figure':>10}")
    print(f"{'versions anchored (promise receipts), s':<60} {accepted:>10.1f}")
    print(f"{'all sealed on the log, s':<60} {sealed_at:>10.1f}")
    print(f"{'all sealed in the audit trail, s':<60} {in_trail:>10.1f}")
    print(f"{'audit read model, versions/s end to end':<60} {count / in_trail:>10,.0f}")
    print(f"{'audit lag behind the log, s':<60} {in_trail - sealed_at:>10.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
