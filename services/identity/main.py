"""Entry point of the identity service."""

from __future__ import annotations

from services.common.server import run_service
from services.common.settings import IDENTITY_PORT, ProcessSettings
from services.identity.servicer import IdentityServicer
from swiftchain.identity.v1 import identity_service_pb2_grpc


class IdentitySettings(ProcessSettings):
    """Settings of the identity service (``SWIFTCHAIN_*``)."""

    process_name: str = "identity"
    port: int = IDENTITY_PORT


def main() -> None:
    """Run the identity service until SIGTERM."""
    run_service(
        IdentitySettings(),
        "swiftchain.identity.v1.IdentityService",
        IdentityServicer(),  # type: ignore[abstract]  # its RPCs land with the service's issue
        identity_service_pb2_grpc.add_IdentityServiceServicer_to_server,  # type: ignore[arg-type]
    )
