"""The whole authorization matrix on the running stack, over real TLS.

Every RPC of every service (identity, anchoring, consent, audit, chain) is called by every kind
of caller — hospital, another hospital, patient, another patient, regulator, app operator,
admin, a platform service, a chain node, anonymous — and the outcome is compared with what the
table in services/platform/authz.py says. The expectation is computed from the table, so an RPC
without a row fails here (and in the unit test), and a row that says "only its own" is called
with a request naming the hospital-a / patient-1 resources, so that the other hospital and the
other patient are refused.

A call counts as admitted when its status is anything but UNAUTHENTICATED or PERMISSION_DENIED
(the handler may well answer INVALID_ARGUMENT or NOT_FOUND for the empty request, or
UNIMPLEMENTED for a service whose issue has not landed). Refusals must come with the right code:
UNAUTHENTICATED for an anonymous caller, PERMISSION_DENIED for a known one.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

import grpc
import pytest
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.message import Message

from services.platform.authz import rule_for
from services.platform.caller import Role
from tests.e2e.platform import Platform, Principal

pytestmark = pytest.mark.e2e

SERVICE_MODULES = {
    "identity": "swiftchain.identity.v1.identity_service_pb2",
    "anchoring": "swiftchain.anchoring.v1.anchoring_service_pb2",
    "consent": "swiftchain.consent.v1.consent_service_pb2",
    "audit": "swiftchain.audit.v1.audit_service_pb2",
    "hospital-a": "swiftchain.chain.v1.chain_service_pb2",
}
REFUSALS = {grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED}


@dataclass(frozen=True)
class Rpc:
    process: str
    method: MethodDescriptor

    @property
    def path(self) -> str:
        return f"/{self.method.containing_service.full_name}/{self.method.name}"


def all_rpcs() -> list[Rpc]:
    rpcs: list[Rpc] = []
    for process, module in SERVICE_MODULES.items():
        for service in importlib.import_module(module).DESCRIPTOR.services_by_name.values():
            rpcs.extend(Rpc(process, m) for m in service.methods)
    return rpcs


def request_for(rpc: Rpc, platform: Platform) -> Message:
    """An empty request, except that every owner field names hospital-a's or patient-1's own."""
    request = message_factory.GetMessageClass(rpc.method.input_type)()
    rule = rule_for(rpc.path)
    assert rule is not None, f"{rpc.path} has no authorization row"
    for role, path in rule.owner_fields.items():
        owner = platform.patient.id if role is Role.PATIENT else platform.hospital.id
        *parents, name = path.split(".")
        target = request
        for parent in parents:
            target = getattr(target, parent)
        setattr(target, name, owner)
    return request


def expected_admitted(rpc: Rpc, caller: Principal, request: Message) -> bool:
    rule = rule_for(rpc.path)
    assert rule is not None
    if caller.role not in rule.roles:
        return False
    path = rule.owner_fields.get(caller.role)
    if path is None:
        return True
    value: object = request
    for name in path.split("."):
        value = getattr(value, name)
    return bool(value == caller.id)


def call(channel: grpc.Channel, rpc: Rpc, request: Message, caller: Principal) -> grpc.StatusCode:
    method = rpc.method
    serialize = type(request).SerializeToString
    deserialize = message_factory.GetMessageClass(method.output_type).FromString
    metadata = (("authorization", f"Bearer {caller.token}"),) if caller.token else None
    try:
        if method.client_streaming:
            stream_unary = channel.stream_unary(rpc.path, serialize, deserialize)
            stream_unary(iter(()), metadata=metadata, timeout=5)
        elif method.server_streaming:
            responses = channel.unary_stream(rpc.path, serialize, deserialize)(
                request, metadata=metadata, timeout=3
            )
            next(iter(responses), None)
            responses.cancel()
        else:
            channel.unary_unary(rpc.path, serialize, deserialize)(
                request, metadata=metadata, timeout=5
            )
    except grpc.RpcError as error:
        return error.code()
    return grpc.StatusCode.OK


def test_every_rpc_times_every_caller_is_admitted_or_refused_as_the_table_says(
    platform: Platform,
) -> None:
    outcomes: list[str] = []
    wrong: list[str] = []
    admitted_by: dict[str, set[bool]] = {}
    for caller in platform.callers():
        channels = {name: platform.channel(caller, name) for name in SERVICE_MODULES}
        try:
            for rpc in all_rpcs():
                request = request_for(rpc, platform)
                code = call(channels[rpc.process], rpc, request, caller)
                admitted = code not in REFUSALS
                expected = expected_admitted(rpc, caller, request)
                outcomes.append(f"{caller.label} {rpc.path} {code.name}")
                admitted_by.setdefault(caller.label, set()).add(admitted)
                if admitted != expected:
                    wrong.append(
                        f"{caller.label} -> {rpc.path}: expected "
                        f"{'admitted' if expected else 'refused'}, got {code.name}"
                    )
                elif not admitted:
                    want = (
                        grpc.StatusCode.UNAUTHENTICATED
                        if caller.role is Role.ANONYMOUS
                        else grpc.StatusCode.PERMISSION_DENIED
                    )
                    if code != want:
                        wrong.append(f"{caller.label} -> {rpc.path}: refused with {code.name}")
        finally:
            for channel in channels.values():
                channel.close()
    assert len(outcomes) == len(all_rpcs()) * len(platform.callers())
    assert not wrong, "\n".join(wrong)
    # Every caller was both let in somewhere and kept out somewhere: the matrix is not vacuous.
    assert all(seen == {True, False} for seen in admitted_by.values()), admitted_by
