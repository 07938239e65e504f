"""Entry point of the audit service."""

from __future__ import annotations

from services.audit.servicer import AuditServicer
from services.common.server import run_service
from services.common.settings import AUDIT_PORT, ProcessSettings
from swiftchain.audit.v1 import audit_service_pb2_grpc


class AuditSettings(ProcessSettings):
    """Settings of the audit service (``SWIFTCHAIN_*``)."""

    process_name: str = "audit"
    port: int = AUDIT_PORT


def main() -> None:
    """Run the audit service until SIGTERM."""
    run_service(
        AuditSettings(),
        "swiftchain.audit.v1.AuditService",
        AuditServicer(),  # type: ignore[abstract]  # its RPCs land with the service's issue
        audit_service_pb2_grpc.add_AuditServiceServicer_to_server,  # type: ignore[arg-type]
    )
