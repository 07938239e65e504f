"""Every RPC of every service, called with hostile input over a real gRPC server: the answer is
a status a person can act on, never INTERNAL, UNKNOWN or a hang (DESIGN §6; issue #24).

The requests come from hypothesis strategies derived from the protobuf descriptors: strings of
the wrong shape or 2 MB long, control characters, bytes that are random, invalid UTF-8 or too
large (signed entries, signed directives, signatures), times beyond year 9999 or before 1970,
unknown enum values, oversized and deeply nested repeated fields, and, as often, values that
look right (real ids, real signed blobs), so that requests get past the first check too.

The servicers run in process on the services' domain objects over the unit tests' fakes and a
three-node chain cluster on fake Kafka, all mounted on one server built by
``services/platform/server.py``. A caller is bound per call from metadata (the authorization
interceptor is not what is tested here), so every RPC is tried by every kind of caller.
"""

from __future__ import annotations

import functools
import inspect
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chain.consortium import GenesisKey
from chain.entry import EntrySigner
from chain.limits import MAX_ENTRY_BYTES
from chain.node.service import ChainServicer
from cli.identity_files import raw_public
from services.anchoring.domain import Practitioners, RecordAnchoring
from services.anchoring.domain.tracking import SealTracker
from services.anchoring.servicer import AnchoringServicer
from services.audit.domain import AuditBook
from services.audit.servicer import AuditServicer
from services.consent.domain import ConsentBook, Directory
from services.consent.notifications import Notifications
from services.consent.servicer import ConsentServicer
from services.identity.domain.certificates import CertificateAuthority, CertificateRecord
from services.identity.domain.organizations import OrganizationRegistry
from services.identity.domain.patients import PatientDirectory, PractitionerDirectory
from services.identity.servicer import IdentityServicer
from services.platform.ca import PlatformCA, create_platform_ca
from services.platform.caller import Caller, Role, bound_caller
from services.platform.consortium_files import CONSENT_KEY_ID
from services.platform.server import ServiceRegistration, build_server
from services.platform.settings import ProcessSettings
from services.platform.tokens import TokenIssuer
from swiftchain.anchoring.v1 import anchoring_service_pb2, anchoring_service_pb2_grpc
from swiftchain.audit.v1 import audit_service_pb2, audit_service_pb2_grpc
from swiftchain.chain.v1 import chain_service_pb2, chain_service_pb2_grpc
from swiftchain.consent.v1 import consent_service_pb2, consent_service_pb2_grpc, directive_pb2
from swiftchain.events.v1 import events_pb2
from swiftchain.identity.v1 import identity_service_pb2, identity_service_pb2_grpc
from tests.unit.anchoring.fakes import FakeStore as AnchoringStore
from tests.unit.anchoring.fakes import known_keys, sdk
from tests.unit.audit.fakes import FakeAuditStore, FakeLogReader
from tests.unit.chain.node.test_node import CONFIG, Cluster, order
from tests.unit.consent.test_domain import FakeStore as ConsentStore
from tests.unit.identity.test_organizations import FakeStore as OrganizationStore
from tests.unit.identity.test_patients import FakeStore as PatientStore

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
#: Examples per RPC in every CI run (each one a call over the server); fewer for server
#: streams, each of which stays open until its deadline when the request is good.
EXAMPLES = 25
STREAM_EXAMPLES = 10
#: A call that takes longer than this is a hang (the server caps its own waits well below).
DEADLINE = 20.0
#: Server streams are cut after this: an idle stream that waits is doing its job.
STREAM_DEADLINE = 0.5
FORBIDDEN = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}

SERVICES = [
    (identity_service_pb2, identity_service_pb2_grpc, "IdentityService"),
    (anchoring_service_pb2, anchoring_service_pb2_grpc, "AnchoringService"),
    (consent_service_pb2, consent_service_pb2_grpc, "ConsentService"),
    (audit_service_pb2, audit_service_pb2_grpc, "AuditService"),
    (chain_service_pb2, chain_service_pb2_grpc, "ChainService"),
]
METHODS: list[MethodDescriptor] = [
    method
    for module, _, name in SERVICES
    for method in module.DESCRIPTOR.services_by_name[name].methods
]
CALLERS = [
    Caller(Role.HOSPITAL, "hospital-a", certificate_serial="01"),
    Caller(Role.REGULATOR, "regulator-1", certificate_serial="02"),
    Caller(Role.ADMIN, "admin", certificate_serial="03"),
    Caller(Role.APP, "app-1", certificate_serial="04"),
    Caller(Role.PATIENT, "pt-" + "A" * 22, device_key_id="dev-1"),
    Caller(Role.ANONYMOUS),
]

# --- values -------------------------------------------------------------------------------

HUGE_TEXT = ["x" * 70_000, "Jane Doe, diagnosis: influenza. " * 65_000]
HUGE_BYTES = [bytes(MAX_ENTRY_BYTES + 1), b"\xff" * 2_000_000]
GOOD_IDS = [
    str(uuid.uuid4()),
    "hospital-a",
    "hospital-b",
    "pr-" + "A" * 22,
    "pt-" + "A" * 22,
    "hospital-a#1",
    "rec-1",
    "laboratory",
    "TREAT",
    "clinical-update",
]
_SIGNED_ENTRY = (
    sdk().sign([sdk().record_version("rec-1", 1, b"v1", subject_id="pt-x")])[0].signed_entry
)

texts = st.one_of(
    st.text(max_size=40),
    st.sampled_from(GOOD_IDS),
    st.sampled_from(HUGE_TEXT),
    st.text(st.characters(max_codepoint=0x1F), min_size=1, max_size=5),
    st.builds(
        lambda good, bad: good + bad,
        st.sampled_from(GOOD_IDS),
        st.sampled_from(["\n", " ", "\x00", "é"]),
    ),
)
byte_values = st.one_of(
    st.binary(max_size=80),
    st.sampled_from(HUGE_BYTES),
    st.sampled_from([b"\xff\xfe\xfd", b"\xc3\x28", b"\x80" * 64, bytes(32), bytes(64)]),
    st.just(_SIGNED_ENTRY),
)
_INT_RANGES = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
}
TIME_SECONDS = st.one_of(
    st.sampled_from([2**40, -(2**40), -1, 0, 253_402_300_800, -62_135_596_801, 2**62]),
    st.integers(0, 253_402_300_799),
)
TIME_NANOS = st.one_of(st.sampled_from([-1, 10**9, 2**31 - 1]), st.integers(0, 10**9 - 1))


def ints(kind: int) -> st.SearchStrategy[int]:
    low, high = _INT_RANGES.get(kind, (-(2**31), 2**31 - 1))
    return st.one_of(
        st.integers(-3, 1100).filter(lambda n: low <= n <= high),
        st.sampled_from([low, high]),
        st.integers(low, high),
    )


def messages(descriptor: Descriptor, depth: int = 0) -> st.SearchStrategy[Message]:
    """Messages of ``descriptor``'s type with any subset of fields set to hostile values."""
    cls = GetMessageClass(descriptor)
    if descriptor.full_name == "google.protobuf.Timestamp":
        return st.builds(lambda s, n: cls(seconds=s, nanos=n), TIME_SECONDS, TIME_NANOS)
    if descriptor.full_name == "google.protobuf.Duration":
        return st.builds(
            lambda s, n: cls(seconds=s, nanos=n), st.integers(-(10**12), 10**12), TIME_NANOS
        )
    fields = {f.name: _field_values(f, depth) for f in descriptor.fields}
    return st.fixed_dictionaries({}, optional=fields).map(functools.partial(_build, cls))


def _single(field: FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
    kind = field.type
    if kind == FieldDescriptor.TYPE_STRING:
        return texts
    if kind == FieldDescriptor.TYPE_BYTES:
        if field.name in ("directive", "delegation"):
            inner = (
                directive_pb2.ConsentDirective
                if field.name == "directive"
                else directive_pb2.Delegation
            )
            return st.one_of(
                byte_values,
                messages(inner.DESCRIPTOR, depth + 1).map(lambda m: m.SerializeToString()),
            )
        return byte_values
    if kind == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if kind == FieldDescriptor.TYPE_ENUM and field.enum_type is not None:
        return st.one_of(
            st.sampled_from(sorted(field.enum_type.values_by_number)), st.integers(-5, 40)
        )
    if kind == FieldDescriptor.TYPE_MESSAGE and field.message_type is not None:
        nested = field.message_type
        if depth >= 4:
            return st.just(GetMessageClass(nested)())
        return st.deferred(lambda: messages(nested, depth + 1))
    return ints(kind)


def _field_values(field: FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
    one = _single(field, depth)
    if not field.is_repeated:
        return one
    return st.one_of(
        st.lists(one, max_size=3),
        st.integers(1001, 1500).flatmap(lambda n: st.lists(one, min_size=n, max_size=n))
        if field.type != FieldDescriptor.TYPE_MESSAGE
        else st.just([]),
    )


def _build(cls: type[Message], values: dict[str, Any]) -> Message:
    message = cls()
    for name, value in values.items():
        field = cls.DESCRIPTOR.fields_by_name[name]
        try:
            if field.is_repeated:
                getattr(message, name).extend(value)
            elif field.type == FieldDescriptor.TYPE_MESSAGE:
                getattr(message, name).CopyFrom(value)
            else:
                setattr(message, name, value)
        except (ValueError, TypeError):
            pass  # a value the Python runtime itself refuses to set: the field stays unset
    return message


def _deep_provision(depth: int) -> directive_pb2.Provision:
    top = directive_pb2.Provision(type=directive_pb2.PROVISION_TYPE_PERMIT)
    node = top
    for _ in range(depth):
        node = node.provisions.add(type=directive_pb2.PROVISION_TYPE_DENY)
    return top


# --- the server -----------------------------------------------------------------------------


def _caller_of(context: Any) -> Caller:
    metadata = dict(context.invocation_metadata() or ())
    return CALLERS[int(metadata.get("x-fuzz-caller", "0"))]


def _bind_callers(servicer: Any) -> Any:
    """A view of ``servicer`` whose RPC methods run with the caller the metadata names."""

    class Bound:
        def __getattr__(self, name: str) -> Any:
            method = getattr(servicer, name)
            if not name[:1].isupper():
                return method
            if inspect.isasyncgenfunction(method):

                async def stream_async(request: Any, context: Any) -> AsyncIterator[Any]:
                    with bound_caller(_caller_of(context)):
                        async for response in method(request, context):
                            yield response

                return stream_async
            if inspect.iscoroutinefunction(method):

                async def unary_async(request: Any, context: Any) -> Any:
                    with bound_caller(_caller_of(context)):
                        return await method(request, context)

                return unary_async

            if inspect.isgeneratorfunction(method):

                def stream(request: Any, context: Any) -> Iterator[Any]:
                    with bound_caller(_caller_of(context)):
                        yield from method(request, context)

                return stream

            def plain(request: Any, context: Any) -> Any:
                with bound_caller(_caller_of(context)):
                    return method(request, context)

            return plain

    return Bound()


class _Certificates:
    def __init__(self) -> None:
        self.records: dict[str, CertificateRecord] = {}

    def insert(self, record: CertificateRecord, events: Any) -> None:
        self.records[record.serial_hex] = record

    def get(self, serial_hex: str) -> CertificateRecord | None:
        return self.records.get(serial_hex)

    def mark_revoked(
        self, serial_hex: str, revoke_time: datetime, reason: int, events: Any
    ) -> bool:
        return False


class _Writer:
    """The log writer over a Kafka that takes everything."""

    def __init__(self) -> None:
        self.sent = 0

    def write(self, entries: Any, *, on_ordered: Callable[[Any], None], **_: Any) -> list[Any]:
        from services.platform.log_writer import Ordered, entry_id_of

        placed = [Ordered(entry_id_of(e), self.sent + i, NOW) for i, e in enumerate(entries)]
        self.sent += len(entries)
        on_ordered(placed)
        return placed


def _servicers() -> list[tuple[str, Callable[[grpc.Server], None]]]:
    registrar = Ed25519PrivateKey.generate()
    genesis = GenesisKey("registrar", "identity", ("KEY",), raw_public(registrar))
    organizations = OrganizationRegistry(
        OrganizationStore(), EntrySigner("registrar", registrar), [genesis]
    )
    key_pem, certificate_pem = create_platform_ca("fuzz CA", NOW - timedelta(days=1))
    patient_store = PatientStore()
    identity = IdentityServicer(
        organizations=organizations,
        certificates=CertificateAuthority(
            _Certificates(), PlatformCA(key_pem, certificate_pem), organizations
        ),
        patients=PatientDirectory(
            patient_store,
            TokenIssuer(
                Ed25519PrivateKey.generate(), issuer="swiftchain-identity", audience="swiftchain"
            ),
        ),
        practitioners=PractitionerDirectory(patient_store),
        consortium=CONFIG,
        clock=lambda: NOW,
    )
    anchoring_store = AnchoringStore()
    practitioners = Practitioners(grace=0.0)
    practitioners.apply(
        _event(
            events_pb2.PractitionerRegistered(
                practitioner_id="pr-" + "A" * 22, organization_id="hospital-a"
            )
        )
    )
    node_channel = grpc.insecure_channel("127.0.0.1:1")  # no node here: receipts are pending
    anchoring = AnchoringServicer(
        anchoring=RecordAnchoring(
            anchoring_store, known_keys(), bytes(range(32)), authors=practitioners
        ),
        tracker=SealTracker(anchoring_store),
        writer=_Writer(),  # type: ignore[arg-type]
        chain=node_channel,
        consortium=CONFIG,
        clock=lambda: NOW,
    )
    directory = Directory()
    book = ConsentBook(
        ConsentStore(),
        directory,
        EntrySigner(CONSENT_KEY_ID, Ed25519PrivateKey.generate()),
        bytes(range(32)),
        send=lambda _outgoing: None,
        notify=(notifications := Notifications()),
        key_grace_seconds=0.0,
    )
    consent = ConsentServicer(book, notifications, clock=lambda: NOW)
    audit_book = AuditBook(FakeAuditStore(), bytes(range(32)))
    audit_book.attach_log(FakeLogReader(_sealed_view()))
    audit = AuditServicer(audit_book, clock=lambda: NOW, stopping=threading.Event())
    return [
        (
            "swiftchain.identity.v1.IdentityService",
            lambda s: identity_service_pb2_grpc.add_IdentityServiceServicer_to_server(
                _bind_callers(identity), s
            ),
        ),
        (
            "swiftchain.anchoring.v1.AnchoringService",
            lambda s: anchoring_service_pb2_grpc.add_AnchoringServiceServicer_to_server(
                _bind_callers(anchoring), s
            ),
        ),
        (
            "swiftchain.consent.v1.ConsentService",
            lambda s: consent_service_pb2_grpc.add_ConsentServiceServicer_to_server(
                _bind_callers(consent), s
            ),
        ),
        (
            "swiftchain.audit.v1.AuditService",
            lambda s: audit_service_pb2_grpc.add_AuditServiceServicer_to_server(
                _bind_callers(audit), s
            ),
        ),
    ]


def _event(payload: Message) -> events_pb2.EventEnvelope:
    from services.platform.events import envelope

    return envelope(payload, producer="identity", subject="", now=NOW)


def _sealed_view() -> Any:
    from services.audit.domain import SealedView

    return SealedView(0, "", NOW)


def _serve(
    services: list[tuple[str, Callable[[grpc.Server], None]]],
) -> tuple[Any, grpc.Channel]:
    server = build_server(
        # Waiting calls (a receipt or a proof that waits for the seal) wait at most this.
        ProcessSettings(process_name="fuzz", port=0, max_workers=8, max_wait_seconds=2.0),
        [ServiceRegistration(name, add) for name, add in services],
    )
    opened = grpc.insecure_channel(
        f"127.0.0.1:{server.port}",
        options=[
            ("grpc.max_send_message_length", 64 * 1024 * 1024),
            ("grpc.max_receive_message_length", 64 * 1024 * 1024),
        ],
    )
    return server, opened


@pytest.fixture(scope="module")
def services_channel() -> Iterator[grpc.Channel]:
    """Identity, anchoring, consent and audit on their domain objects over fakes."""
    server, opened = _serve(_servicers())
    try:
        yield opened
    finally:
        opened.close()
        server.stop(1.0)


@pytest.fixture(scope="module")
def chain_channel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[grpc.Channel]:
    """A chain node of a three-node cluster on fake Kafka, with a few sealed entries."""
    cluster = Cluster(tmp_path_factory.mktemp("fuzz-chain"))
    for name in ("hospital-a", "hospital-b", "hospital-c"):
        cluster.start(name)
    try:
        order(cluster.kafka, 3)
        cluster.sealed("hospital-a", 3)
        chain = ChainServicer(cluster.nodes["hospital-a"])
        server, opened = _serve(
            [
                (
                    "swiftchain.chain.v1.ChainService",
                    lambda s: chain_service_pb2_grpc.add_ChainServiceServicer_to_server(
                        _bind_callers(chain), s
                    ),
                )
            ]
        )
        try:
            yield opened
        finally:
            opened.close()
            server.stop(1.0)
    finally:
        for name in list(cluster.nodes):
            cluster.stop(name)


# --- the calls ------------------------------------------------------------------------------

CALLS: dict[str, int] = {}
#: How many calls ended in each status (OK included), for the report.
CODES: dict[str, int] = {}


def _call(channel: grpc.Channel, method: MethodDescriptor, request: Any, caller: int) -> None:
    path = f"/{method.containing_service.full_name}/{method.name}"
    request_class = GetMessageClass(method.input_type)
    response_class = GetMessageClass(method.output_type)
    serialize = request_class.SerializeToString
    kwargs: dict[str, Any] = {
        "request_serializer": serialize,
        "response_deserializer": response_class.FromString,
    }
    metadata = (("x-fuzz-caller", str(caller)),)
    streaming = method.server_streaming
    timeout = STREAM_DEADLINE if streaming else DEADLINE
    try:
        if method.client_streaming:
            call = channel.stream_unary(path, **kwargs)
            call(iter(request), timeout=timeout, metadata=metadata)
        elif streaming:
            responses = channel.unary_stream(path, **kwargs)(
                request, timeout=timeout, metadata=metadata
            )
            for count, _ in enumerate(responses):
                if count > 50:
                    responses.cancel()
                    break
        else:
            channel.unary_unary(path, **kwargs)(request, timeout=timeout, metadata=metadata)
        CODES["OK"] = CODES.get("OK", 0) + 1
    except grpc.RpcError as error:
        code = error.code()
        CODES[code.name] = CODES.get(code.name, 0) + 1
        assert code not in FORBIDDEN, f"{path} answered {code}: {error.details()}"
        if code == grpc.StatusCode.CANCELLED and streaming:
            return
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            assert streaming, f"{path} did not answer within {timeout}s: a hang"
    finally:
        CALLS[path] = CALLS.get(path, 0) + 1


def _requests(method: MethodDescriptor) -> st.SearchStrategy[Any]:
    one = messages(method.input_type)
    if method.client_streaming:
        return st.lists(one, min_size=0, max_size=3)
    return one


@pytest.mark.parametrize(
    "method", METHODS, ids=[f"{m.containing_service.name}.{m.name}" for m in METHODS]
)
def test_hostile_requests_get_a_clear_status(
    request: pytest.FixtureRequest, method: MethodDescriptor
) -> None:
    chain = method.containing_service.name == "ChainService"
    channel: grpc.Channel = request.getfixturevalue(
        "chain_channel" if chain else "services_channel"
    )

    @settings(
        max_examples=STREAM_EXAMPLES if method.server_streaming else EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(message=_requests(method), caller=st.integers(0, len(CALLERS) - 1))
    def run(message: Any, caller: int) -> None:
        _call(channel, method, message, caller)

    run()


def test_a_deep_provision_and_far_times_in_a_signed_directive_are_refused_clearly(
    services_channel: grpc.Channel,
) -> None:
    for directive in (
        directive_pb2.ConsentDirective(provision=_deep_provision(40)),
        directive_pb2.ConsentDirective(
            directive_id=str(uuid.uuid4()),
            version=1,
            patient_subject_id="pt-" + "A" * 22,
            provision=directive_pb2.Provision(end_time=Timestamp(seconds=2**40)),
        ),
    ):
        request = consent_service_pb2.GrantConsentRequest(
            signed_directive=directive_pb2.SignedDirective(
                directive=directive.SerializeToString(), signer_key_id="dev-1", signature=bytes(64)
            )
        )
        with pytest.raises(grpc.RpcError) as refused:
            consent_service_pb2_grpc.ConsentServiceStub(services_channel).GrantConsent(
                request, timeout=DEADLINE, metadata=(("x-fuzz-caller", "4"),)
            )
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, refused.value.details()


def test_an_oversized_entry_is_invalid_argument_and_nothing_is_stored(
    services_channel: grpc.Channel,
) -> None:
    """A hospital's validly signed entry over the limit (2 MB of free text as its author):
    INVALID_ARGUMENT, and the record has no version afterwards."""
    stub = anchoring_service_pb2_grpc.AnchoringServiceStub(services_channel)
    record_id = f"rec-{uuid.uuid4()}"
    draft = sdk().record_version(
        record_id, 1, b"v1", subject_id="pt-x", author_practitioner_id="Jane Doe " * 230_000
    )
    [signed] = sdk().sign([draft])
    assert len(signed.signed_entry) > MAX_ENTRY_BYTES
    hospital = (("x-fuzz-caller", "0"),)
    with pytest.raises(grpc.RpcError) as refused:
        stub.AnchorRecord(signed, timeout=DEADLINE, metadata=hospital)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"at most {MAX_ENTRY_BYTES:,} bytes" in (refused.value.details() or "")
    assert len(refused.value.details() or "") < 1000  # the 2 MB are not sent back
    with pytest.raises(grpc.RpcError) as looked_up:
        stub.GetProvenance(
            anchoring_service_pb2.GetProvenanceRequest(
                organization_id="hospital-a", record_id=record_id
            ),
            timeout=DEADLINE,
            metadata=hospital,
        )
    assert looked_up.value.code() == grpc.StatusCode.NOT_FOUND


def test_a_receipt_while_no_chain_node_answers_is_unavailable(
    services_channel: grpc.Channel,
) -> None:
    """The anchoring service of this server has no chain node to ask (its channel goes to a
    closed port): a receipt for a version it holds is UNAVAILABLE, not INTERNAL."""
    stub = anchoring_service_pb2_grpc.AnchoringServiceStub(services_channel)
    draft = sdk().record_version(f"rec-{uuid.uuid4()}", 1, b"v1", subject_id="pt-x")
    [signed] = sdk().sign([draft])
    promised = stub.AnchorRecord(signed, timeout=DEADLINE, metadata=(("x-fuzz-caller", "0"),))
    with pytest.raises(grpc.RpcError) as refused:
        stub.GetReceipt(
            anchoring_service_pb2.GetReceiptRequest(entry_id=promised.receipt.entry_id),
            timeout=DEADLINE,
            metadata=(("x-fuzz-caller", "0"),),
        )
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE, refused.value.details()


def test_undecodable_request_bytes_get_invalid_argument(services_channel: grpc.Channel) -> None:
    """Bytes that are no protobuf, or a string field that is not UTF-8, on the wire."""
    identity = "/swiftchain.identity.v1.IdentityService/GetOrganization"
    for body in (b"\xff\xff\xff", b"\x0a\x01\xff"):
        with pytest.raises(grpc.RpcError) as refused:
            services_channel.unary_unary(
                identity, request_serializer=bytes, response_deserializer=bytes
            )(body, timeout=DEADLINE, metadata=(("x-fuzz-caller", "0"),))
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, refused.value.details()
        assert "do not decode" in (refused.value.details() or "")
    # A stream of requests: the bad message is refused when the handler reaches it.
    anchor_many = "/swiftchain.anchoring.v1.AnchoringService/AnchorRecords"
    with pytest.raises(grpc.RpcError) as refused:
        services_channel.stream_unary(
            anchor_many, request_serializer=bytes, response_deserializer=bytes
        )(iter([b"", b"\xff\xff\xff"]), timeout=DEADLINE, metadata=(("x-fuzz-caller", "0"),))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, refused.value.details()


def test_zz_report_how_many_calls_ran() -> None:
    """Runs last in this module: prints the count for the closing note of issue #24."""
    total = sum(CALLS.values())
    print(f"\nfuzz: {total} hostile calls over {len(CALLS)} RPCs of {len(SERVICES)} services")
    print("fuzz: statuses " + ", ".join(f"{code} {n}" for code, n in sorted(CODES.items())))
    assert len(CALLS) == len(METHODS)
