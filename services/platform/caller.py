"""Who is calling: the identity the authorization interceptor resolved for the current RPC.

The interceptor (services/platform/auth.py) resolves the caller once per call — from the mTLS
client certificate, or from a patient's bearer token, or anonymous — and binds it to the call;
servicers read it with :func:`current_caller` and hand it to the domain, which uses it for the
ownership checks that depend on stored data (e.g. "the hospital that anchored this record").
This module imports no grpc, so domain code may use :class:`Caller`.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum


class Role(StrEnum):
    """What a caller may do, by who it is (DESIGN §4, "The API surface")."""

    #: The consortium administrator (certificate unit "admin").
    ADMIN = "admin"
    #: A hospital's mTLS identity; its practitioners act through it.
    HOSPITAL = "hospital"
    #: A regulator (read only).
    REGULATOR = "regulator"
    #: A patient-app operator.
    APP = "app"
    #: One of the platform's own services (identity, anchoring, consent, audit).
    SERVICE = "service"
    #: A consortium member's chain node.
    CHAIN_NODE = "chain-node"
    #: A patient, by a bearer token from a device login.
    PATIENT = "patient"
    #: Nobody proved anything.
    ANONYMOUS = "anonymous"


#: Certificate organizational-unit values the CA writes, and the role each one grants.
ROLE_BY_CERTIFICATE_UNIT: dict[str, Role] = {
    role.value: role
    for role in (Role.ADMIN, Role.HOSPITAL, Role.REGULATOR, Role.APP, Role.SERVICE, Role.CHAIN_NODE)
}


@dataclass(frozen=True)
class Caller:
    """The authenticated party behind one RPC."""

    role: Role
    #: The organization id, service or node name (certificate CN), or the patient's subject id;
    #: empty for anonymous callers.
    id: str = ""
    #: The client certificate's serial number (lower-case hex), for certificate callers.
    certificate_serial: str = ""
    #: The device key that logged in, for patients.
    device_key_id: str = ""

    @property
    def is_anonymous(self) -> bool:
        """True when the caller proved nothing."""
        return self.role is Role.ANONYMOUS

    def describe(self) -> str:
        """A short text for messages: "hospital hospital-a", "patient p-3f…", "anonymous"."""
        if self.is_anonymous:
            return "an anonymous caller"
        return f"{self.role.value} {self.id!r}"


ANONYMOUS = Caller(Role.ANONYMOUS)

_current: contextvars.ContextVar[Caller] = contextvars.ContextVar("swiftchain_caller")


def current_caller() -> Caller:
    """The caller of the RPC being served on this thread (anonymous outside any RPC)."""
    return _current.get(ANONYMOUS)


@contextmanager
def bound_caller(caller: Caller) -> Iterator[None]:
    """Make ``caller`` the :func:`current_caller` for the duration of the block."""
    token = _current.set(caller)
    try:
        yield
    finally:
        _current.reset(token)
