"""The authorization interceptor every Swiftchain server runs (DESIGN §6).

For each call it resolves the caller — the mTLS client certificate (common name = organization
or process id, organizational unit = role), else a patient's bearer token, else anonymous —
rejects revoked certificates and tokens of revoked devices, then applies the RPC's row of the
table in services/platform/authz.py: the caller's role must be allowed, and where the row names a
request field for that role, the field must name the caller itself. The resolved caller is bound
for the handler (:func:`services.platform.caller.current_caller`).

Refusals are UNAUTHENTICATED when the caller proved nothing or proved it badly, and
PERMISSION_DENIED when a known caller may not do this; both say why.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

import grpc
import grpc.aio
from cryptography import x509
from cryptography.x509.oid import NameOID

from chain.errors import PermissionDeniedError, UnauthenticatedError
from services.platform.authz import Rule, read_field, rule_for
from services.platform.caller import (
    ANONYMOUS,
    ROLE_BY_CERTIFICATE_UNIT,
    Caller,
    Role,
    bound_caller,
)
from services.platform.errors import HandlerInterceptor, Wrap
from services.platform.revocations import IdentityEventFeed, RevocationList
from services.platform.settings import ProcessSettings
from services.platform.tls import TOKEN_VERIFY_FILE
from services.platform.tokens import load_token_verifier

#: The auth-context key under which grpc puts the verified client certificate.
PEER_CERTIFICATE_KEY = "x509_pem_cert"
_BEARER = "bearer "


class BearerClaims(Protocol):
    """What the interceptor needs from a verified patient token."""

    @property
    def subject_id(self) -> str: ...

    @property
    def device_key_id(self) -> str: ...


class BearerVerifier(Protocol):
    """Verifies a patient bearer token (services/platform/tokens.py provides one)."""

    def verify(self, token: str, now: datetime) -> BearerClaims:
        """The token's claims; raises UnauthenticatedError when it is not valid at ``now``."""
        ...


@functools.lru_cache(maxsize=4096)
def certificate_caller(pem: bytes) -> Caller:
    """The caller a CA-verified client certificate stands for (cached: one parse per cert)."""
    try:
        certificate = x509.load_pem_x509_certificate(pem)
    except ValueError as error:
        raise UnauthenticatedError(f"expected a PEM client certificate, got: {error}") from None
    subject = certificate.subject
    names = subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    units = subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
    unit = str(units[0].value) if units else ""
    role = ROLE_BY_CERTIFICATE_UNIT.get(unit)
    if not names or role is None:
        raise UnauthenticatedError(
            "expected a client certificate with a common name and a role unit among "
            f"{sorted(ROLE_BY_CERTIFICATE_UNIT)}, got subject {subject.rfc4514_string()!r}"
        )
    return Caller(
        role=role,
        id=str(names[0].value),
        certificate_serial=format(certificate.serial_number, "x"),
    )


def _rpc_name(method: str) -> str:
    service, name = method.strip("/").rsplit("/", 1)
    return f"{service.rsplit('.', 1)[-1]}.{name}"


def _allowed_roles(rule: Rule) -> str:
    return ", ".join(sorted(role.value for role in rule.roles))


class Authorizer:
    """Resolves callers and applies the table; the grpc-free core of the interceptor."""

    def __init__(
        self,
        revocations: RevocationList,
        tokens: BearerVerifier | None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._revocations = revocations
        self._tokens = tokens
        self._clock = clock

    def resolve(self, certificate_pem: bytes | None, authorization: str | None) -> Caller:
        """The caller behind a certificate (already verified by TLS) or a bearer token."""
        if certificate_pem is not None and authorization is not None:
            raise UnauthenticatedError(
                "expected a client certificate or a bearer token, got both; send one"
            )
        if certificate_pem is not None:
            caller = certificate_caller(certificate_pem)
            if self._revocations.certificate_revoked(caller.certificate_serial):
                raise UnauthenticatedError(
                    f"the client certificate {caller.certificate_serial} of {caller.id!r} "
                    "was revoked; ask the consortium admin for a new one"
                )
            return caller
        if authorization is not None:
            return self._patient(authorization)
        return ANONYMOUS

    def _patient(self, authorization: str) -> Caller:
        if not authorization.lower().startswith(_BEARER):
            raise UnauthenticatedError(
                f"expected an authorization header 'Bearer <token>', got {authorization[:16]!r}…"
            )
        if self._tokens is None:
            raise UnauthenticatedError("this server does not accept bearer tokens")
        claims = self._tokens.verify(authorization[len(_BEARER) :].strip(), self._clock())
        if self._revocations.device_revoked(claims.device_key_id):
            raise UnauthenticatedError(
                f"the device key {claims.device_key_id!r} that logged in was revoked; "
                "log in again with an active device"
            )
        return Caller(Role.PATIENT, id=claims.subject_id, device_key_id=claims.device_key_id)

    @staticmethod
    def check_role(method: str, rule: Rule | None, caller: Caller) -> Rule:
        """The rule, if ``caller``'s role may call ``method`` at all; else raise."""
        if rule is None:
            raise PermissionDeniedError(f"{_rpc_name(method)} has no authorization rule")
        if caller.role in rule.roles:
            return rule
        if caller.is_anonymous:
            raise UnauthenticatedError(
                f"{_rpc_name(method)} needs a client certificate (mTLS) or a patient bearer "
                "token; the call had neither"
            )
        raise PermissionDeniedError(
            f"{caller.describe()} may not call {_rpc_name(method)}; "
            f"expected a caller with role {_allowed_roles(rule)}"
        )

    @staticmethod
    def check_owner(method: str, rule: Rule, caller: Caller, request: object) -> None:
        """Raise unless the request field the rule names for ``caller``'s role is the caller."""
        path = rule.owner_fields.get(caller.role)
        if path is None:
            return
        named = read_field(request, path)
        if named != caller.id:
            raise PermissionDeniedError(
                f"{caller.describe()} may call {_rpc_name(method)} only for itself: expected "
                f"{path} = {caller.id!r}, got {named!r}"
            )


_T = TypeVar("_T")


def _authorization_header(
    context: grpc.aio.ServicerContext[Any, Any],
) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == "authorization":
            return value if isinstance(value, str) else value.decode("latin-1")
    return None


def _peer_certificate(context: grpc.aio.ServicerContext[Any, Any]) -> bytes | None:
    values = list(context.auth_context().get(PEER_CERTIFICATE_KEY, ()))
    return bytes(values[0]) if values else None


async def each_as(caller: Caller, responses: AsyncIterator[_T]) -> AsyncIterator[_T]:
    """``responses`` with ``caller`` bound while each one is produced. The binding never
    spans a ``yield``, so it is undone in the context that made it however the stream ends."""
    try:
        while True:
            with bound_caller(caller):
                try:
                    response = await anext(responses)
                except StopAsyncIteration:
                    return
            yield response
    finally:
        close = getattr(responses, "aclose", None)
        if close is not None:
            with bound_caller(caller):
                await close()


class AuthInterceptor(HandlerInterceptor):
    """Authenticates and authorizes every call of a server (see the module docstring).

    A refusal is raised as the domain error it is; the error-mapping interceptor outside this
    one turns it into its status."""

    def __init__(self, authorizer: Authorizer) -> None:
        self._authorizer = authorizer

    def wrappers(self, handler_call_details: grpc.HandlerCallDetails) -> tuple[Wrap, Wrap]:
        """Behaviours that run only for a caller the table admits, with the caller bound."""
        method = handler_call_details.method
        rule = rule_for(method)
        authorizer = self._authorizer

        def admit(
            request: object, context: grpc.aio.ServicerContext[Any, Any], streamed: bool
        ) -> Caller:
            caller = authorizer.resolve(_peer_certificate(context), _authorization_header(context))
            checked = authorizer.check_role(method, rule, caller)
            if not streamed:
                authorizer.check_owner(method, checked, caller, request)
            return caller

        def unary(behavior: Callable[..., Any], streamed: bool) -> Callable[..., Any]:
            async def authorized(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                caller = admit(request, context, streamed)
                with bound_caller(caller):
                    return await behavior(request, context)

            return authorized

        def stream(behavior: Callable[..., Any], streamed: bool) -> Callable[..., Any]:
            async def authorized(
                request: Any, context: grpc.aio.ServicerContext[Any, Any]
            ) -> AsyncIterator[Any]:
                caller = admit(request, context, streamed)
                async for response in each_as(caller, behavior(request, context)):
                    yield response

            return authorized

        return unary, stream


@dataclass
class Authorization:
    """A process's authorization: the interceptor and the revocation feed behind it."""

    interceptor: AuthInterceptor
    feed: IdentityEventFeed

    def stop(self) -> None:
        """Stop following revocations."""
        self.feed.stop()


def start_authorization(
    settings: ProcessSettings,
    *,
    timeout: float = 60.0,
    revocations: RevocationList | None = None,
) -> Authorization:
    """Read the revocation list up to now (so that nothing revoked gets in after a restart),
    load the token key when the TLS folder has one, and return the interceptor.

    ``revocations`` is the list to fill (a new one when not given)."""
    if revocations is None:
        revocations = RevocationList()
    feed = IdentityEventFeed(
        settings.kafka_bootstrap, f"{settings.process_name}-revocations", revocations.apply
    )
    feed.start(timeout=timeout)
    tokens = None
    if settings.tls_dir is not None and (settings.tls_dir / TOKEN_VERIFY_FILE).exists():
        tokens = load_token_verifier(
            settings.tls_dir / TOKEN_VERIFY_FILE,
            issuer=settings.token_issuer,
            audience=settings.token_audience,
        )
    return Authorization(AuthInterceptor(Authorizer(revocations, tokens)), feed)
