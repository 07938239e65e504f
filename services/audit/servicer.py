"""gRPC face of the audit service: translates protobuf <-> the domain.

The RPCs arrive with the audit issue; until then every RPC answers UNIMPLEMENTED (the
generated base class), while the process already serves health and reflection.
"""

from __future__ import annotations

from swiftchain.audit.v1 import audit_service_pb2_grpc


class AuditServicer(audit_service_pb2_grpc.AuditServiceServicer):
    """The audit service's RPCs."""
