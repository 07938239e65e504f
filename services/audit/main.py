"""Entry point of the audit service."""

from __future__ import annotations

from services.audit.servicer import AuditServicer
from services.common.server import ServiceRegistration, configure_process, serve
from services.common.settings import AUDIT_PORT, ProcessSettings
from swiftchain.audit.v1 import audit_service_pb2_grpc

SERVICE_NAME = "swiftchain.audit.v1.AuditService"


class AuditSettings(ProcessSettings):
    """Settings of the audit service (``SWIFTCHAIN_*``)."""

    process_name: str = "audit"
    port: int = AUDIT_PORT


def main() -> None:
    """Run the audit service until SIGTERM."""
    settings = AuditSettings()
    configure_process(settings)
    servicer = AuditServicer()  # type: ignore[abstract]  # RPCs land with the service's issue
    serve(
        settings,
        [
            ServiceRegistration(
                SERVICE_NAME,
                lambda server: audit_service_pb2_grpc.add_AuditServiceServicer_to_server(
                    servicer, server
                ),
            )
        ],
    )
