"""gRPC face of the anchoring service: translates protobuf <-> the domain.

The RPCs arrive with the anchoring issue; until then every RPC answers UNIMPLEMENTED (the
generated base class), while the process already serves health and reflection.
"""

from __future__ import annotations

from swiftchain.anchoring.v1 import anchoring_service_pb2_grpc


class AnchoringServicer(anchoring_service_pb2_grpc.AnchoringServiceServicer):
    """The anchoring service's RPCs."""
