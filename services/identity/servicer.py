"""gRPC face of the identity service: translates protobuf <-> the domain.

The RPCs arrive with the identity issue; until then every RPC answers UNIMPLEMENTED (the
generated base class), while the process already serves health and reflection.
"""

from __future__ import annotations

from swiftchain.identity.v1 import identity_service_pb2_grpc


class IdentityServicer(identity_service_pb2_grpc.IdentityServiceServicer):
    """The identity service's RPCs."""
