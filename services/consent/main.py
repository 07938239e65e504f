"""Entry point of the consent service."""

from __future__ import annotations

from services.common.server import run_service
from services.common.settings import CONSENT_PORT, ProcessSettings
from services.consent.servicer import ConsentServicer
from swiftchain.consent.v1 import consent_service_pb2_grpc


class ConsentSettings(ProcessSettings):
    """Settings of the consent service (``SWIFTCHAIN_*``)."""

    process_name: str = "consent"
    port: int = CONSENT_PORT


def main() -> None:
    """Run the consent service until SIGTERM."""
    run_service(
        ConsentSettings(),
        "swiftchain.consent.v1.ConsentService",
        ConsentServicer(),  # type: ignore[abstract]  # its RPCs land with the service's issue
        consent_service_pb2_grpc.add_ConsentServiceServicer_to_server,  # type: ignore[arg-type]
    )
