"""Entry point of the anchoring service."""

from __future__ import annotations

from services.anchoring.servicer import AnchoringServicer
from services.common.server import run_service
from services.common.settings import ANCHORING_PORT, ProcessSettings
from swiftchain.anchoring.v1 import anchoring_service_pb2_grpc


class AnchoringSettings(ProcessSettings):
    """Settings of the anchoring service (``SWIFTCHAIN_*``)."""

    process_name: str = "anchoring"
    port: int = ANCHORING_PORT


def main() -> None:
    """Run the anchoring service until SIGTERM."""
    run_service(
        AnchoringSettings(),
        "swiftchain.anchoring.v1.AnchoringService",
        AnchoringServicer(),  # type: ignore[abstract]  # its RPCs land with the service's issue
        anchoring_service_pb2_grpc.add_AnchoringServiceServicer_to_server,  # type: ignore[arg-type]
    )
