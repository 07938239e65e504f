"""gRPC face of the consent service: translates protobuf <-> the domain.

The RPCs arrive with the consent issue; until then every RPC answers UNIMPLEMENTED (the
generated base class), while the process already serves health and reflection.
"""

from __future__ import annotations

from swiftchain.consent.v1 import consent_service_pb2_grpc


class ConsentServicer(consent_service_pb2_grpc.ConsentServiceServicer):
    """The consent service's RPCs."""
