"""What authentication and authorization cost per call.

Prints, in one run on this machine:

* the interceptor's core per call (caller from a cached certificate, revocation check, role and
  owner check) and a patient token's verification (EdDSA), in microseconds;
* unary gRPC round trips per second on a local server: plaintext without the interceptor, mTLS
  with the interceptor (certificate caller), and server-only TLS with the interceptor and a
  bearer token — the ratio to plaintext is the figure that holds across machines.

Run: ``.venv/bin/python bench/auth_bench.py [--calls N]``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # plain `python bench/auth_bench.py`
    sys.path.insert(0, str(ROOT))

from grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: E402

from bench.common import figure  # noqa: E402
from devstack.pki import ADMIN, IDENTITY, ensure_pki  # noqa: E402
from devstack.process import free_port  # noqa: E402
from services.platform.auth import AuthInterceptor, Authorizer, certificate_caller  # noqa: E402
from services.platform.authz import rule_for  # noqa: E402
from services.platform.revocations import RevocationList  # noqa: E402
from services.platform.server import build_server  # noqa: E402
from services.platform.settings import ProcessSettings  # noqa: E402
from services.platform.tls import (  # noqa: E402
    CERT_FILE,
    TOKEN_SIGNING_FILE,
    TOKEN_VERIFY_FILE,
    open_channel,
    open_public_channel,
)
from services.platform.tokens import load_token_issuer, load_token_verifier  # noqa: E402
from swiftchain.identity.v1 import identity_service_pb2  # noqa: E402

ROTATE = "/swiftchain.identity.v1.IdentityService/RotateOrganizationKey"


def per_call_micros(repeat: int, action: object) -> float:
    assert callable(action)
    began = time.perf_counter()
    for _ in range(repeat):
        action()
    return (time.perf_counter() - began) / repeat * 1e6


def round_trips_per_second(
    stub: health_pb2_grpc.HealthStub, calls: int, metadata: tuple[tuple[str, str], ...]
) -> float:
    request = health_pb2.HealthCheckRequest()
    for _ in range(50):  # warm up the connection
        stub.Check(request, metadata=metadata, timeout=5)
    began = time.perf_counter()
    for _ in range(calls):
        stub.Check(request, metadata=metadata, timeout=5)
    return calls / (time.perf_counter() - began)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=3000, help="round trips per variant")
    parser.add_argument("--quick", action="store_true", help="a small run (300 round trips)")
    args = parser.parse_args()
    if args.quick:
        args.calls = 300
    root = Path(tempfile.mkdtemp(prefix="auth-bench-"))
    pki = ensure_pki(root, [("bench", "service"), (IDENTITY, "service")])
    server_dir = pki.tls_dir("bench")
    issuer = load_token_issuer(
        pki.tls_dir(IDENTITY) / TOKEN_SIGNING_FILE,
        issuer="swiftchain-identity",
        audience="swiftchain",
    )
    verifier = load_token_verifier(
        server_dir / TOKEN_VERIFY_FILE, issuer="swiftchain-identity", audience="swiftchain"
    )
    token = issuer.issue("pt-bench", "dev-bench", datetime.now(UTC)).token
    authorizer = Authorizer(RevocationList(), verifier)
    admin_pem = (pki.tls_dir(ADMIN) / CERT_FILE).read_bytes()
    rule = rule_for(ROTATE)
    request = identity_service_pb2.RotateOrganizationKeyRequest(organization_id="hospital-a")

    def admit_certificate() -> None:
        caller = authorizer.resolve(admin_pem, None)
        Authorizer.check_owner(ROTATE, Authorizer.check_role(ROTATE, rule, caller), caller, request)

    certificate_caller(admin_pem)  # the interceptor caches the parse per certificate
    core = per_call_micros(20000, admit_certificate)
    now = datetime.now(UTC)
    fresh = iter([issuer.issue("pt-bench", "dev-bench", now).token for _ in range(2000)])
    first_cost = per_call_micros(2000, lambda: verifier.verify(next(fresh), now))
    again_cost = per_call_micros(20000, lambda: verifier.verify(token, now))
    figure("interceptor_core_us", core, "us")
    figure("token_first_verify_us", first_cost, "us")
    figure("token_again_us", again_cost, "us")
    print(f"interceptor core, certificate caller: {core:.1f} µs/call")
    print(f"bearer token, first verification (EdDSA JWT): {first_cost:.1f} µs/token")
    print(f"bearer token, presented again (cached; times rechecked): {again_cost:.1f} µs/call")

    plain = build_server(ProcessSettings(process_name="bench-plain"), [])
    secure = build_server(
        ProcessSettings(process_name="bench-tls", tls_dir=server_dir, public_port=0),
        [],
        interceptors=[AuthInterceptor(authorizer)],
    )
    public = build_server(
        ProcessSettings(process_name="bench-public", tls_dir=server_dir, public_port=free_port()),
        [],
        interceptors=[AuthInterceptor(authorizer)],
    )
    try:
        with open_channel(f"127.0.0.1:{plain.port}", None) as channel:
            plain_rate = round_trips_per_second(health_pb2_grpc.HealthStub(channel), args.calls, ())
        with open_channel(f"localhost:{secure.port}", pki.tls_dir(ADMIN)) as channel:
            mtls_rate = round_trips_per_second(health_pb2_grpc.HealthStub(channel), args.calls, ())
        bearer = (("authorization", f"Bearer {token}"),)
        with open_public_channel(f"localhost:{public.public_port}", pki.ca_pem) as channel:
            token_rate = round_trips_per_second(
                health_pb2_grpc.HealthStub(channel), args.calls, bearer
            )
    finally:
        for server in (plain, secure, public):
            server.stop(0)
    figure("plaintext_per_s", plain_rate, "calls/s")
    figure("mtls_authz_per_s", mtls_rate, "calls/s")
    figure("tls_token_authz_per_s", token_rate, "calls/s")
    print(f"unary round trips, plaintext, no interceptor: {plain_rate:,.0f}/s")
    ratio = mtls_rate / plain_rate
    print(f"unary round trips, mTLS + authorization: {mtls_rate:,.0f}/s ({ratio:.2f}x)")
    print(
        f"unary round trips, TLS + bearer token + authorization: {token_rate:,.0f}/s "
        f"({token_rate / plain_rate:.2f}x)"
    )


if __name__ == "__main__":
    main()
