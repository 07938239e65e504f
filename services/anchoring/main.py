"""Entry point of the anchoring service."""

from __future__ import annotations

from services.anchoring.servicer import AnchoringServicer
from services.common.server import ServiceRegistration, configure_process, serve
from services.common.settings import ANCHORING_PORT, ProcessSettings
from swiftchain.anchoring.v1 import anchoring_service_pb2_grpc

SERVICE_NAME = "swiftchain.anchoring.v1.AnchoringService"


class AnchoringSettings(ProcessSettings):
    """Settings of the anchoring service (``SWIFTCHAIN_*``)."""

    process_name: str = "anchoring"
    port: int = ANCHORING_PORT


def main() -> None:
    """Run the anchoring service until SIGTERM."""
    settings = AnchoringSettings()
    configure_process(settings)
    servicer = AnchoringServicer()  # type: ignore[abstract]  # RPCs land with the service's issue
    serve(
        settings,
        [
            ServiceRegistration(
                SERVICE_NAME,
                lambda server: anchoring_service_pb2_grpc.add_AnchoringServiceServicer_to_server(
                    servicer, server
                ),
            )
        ],
    )
