"""Entry point of the consent service."""

from __future__ import annotations

from services.common.server import ServiceRegistration, configure_process, serve
from services.common.settings import CONSENT_PORT, ProcessSettings
from services.consent.servicer import ConsentServicer
from swiftchain.consent.v1 import consent_service_pb2_grpc

SERVICE_NAME = "swiftchain.consent.v1.ConsentService"


class ConsentSettings(ProcessSettings):
    """Settings of the consent service (``SWIFTCHAIN_*``)."""

    process_name: str = "consent"
    port: int = CONSENT_PORT


def main() -> None:
    """Run the consent service until SIGTERM."""
    settings = ConsentSettings()
    configure_process(settings)
    servicer = ConsentServicer()  # type: ignore[abstract]  # RPCs land with the service's issue
    serve(
        settings,
        [
            ServiceRegistration(
                SERVICE_NAME,
                lambda server: consent_service_pb2_grpc.add_ConsentServiceServicer_to_server(
                    servicer, server
                ),
            )
        ],
    )
