"""Entry point of the identity service."""

from __future__ import annotations

from services.common.server import ServiceRegistration, configure_process, serve
from services.common.settings import IDENTITY_PORT, ProcessSettings
from services.identity.servicer import IdentityServicer
from swiftchain.identity.v1 import identity_service_pb2_grpc

SERVICE_NAME = "swiftchain.identity.v1.IdentityService"


class IdentitySettings(ProcessSettings):
    """Settings of the identity service (``SWIFTCHAIN_*``)."""

    process_name: str = "identity"
    port: int = IDENTITY_PORT


def main() -> None:
    """Run the identity service until SIGTERM."""
    settings = IdentitySettings()
    configure_process(settings)
    servicer = IdentityServicer()  # type: ignore[abstract]  # RPCs land with the service's issue
    serve(
        settings,
        [
            ServiceRegistration(
                SERVICE_NAME,
                lambda server: identity_service_pb2_grpc.add_IdentityServiceServicer_to_server(
                    servicer, server
                ),
            )
        ],
    )
