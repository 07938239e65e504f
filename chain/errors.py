"""The one exception family of Swiftchain Health.

Every error that the project raises on purpose is a :class:`SwiftchainError`. Each subclass
names *what went wrong* from the caller's point of view; ``services/platform/errors.py`` maps each
to one gRPC status code in a single table. Messages are for people: say what was expected and
what was found ("expected 32 bytes, got 31").
"""

from __future__ import annotations


class SwiftchainError(Exception):
    """Root of every error raised on purpose by Swiftchain Health."""


class InvalidInputError(SwiftchainError):
    """Input that is malformed or out of range: a parse error, a wrong length, a missing field."""


class VerificationError(SwiftchainError):
    """A signature, proof, checkpoint or commitment that does not hold."""


class NotFoundError(SwiftchainError):
    """The thing asked for does not exist (yet)."""


class ConflictError(SwiftchainError):
    """The request contradicts what is already recorded (e.g. another commitment for a version)."""


class PreconditionError(SwiftchainError):
    """The system is not in a state where the request can be carried out."""


class UnavailableError(SwiftchainError):
    """A dependency (Kafka, the database, a quorum of nodes) cannot be reached right now."""


class UnauthenticatedError(SwiftchainError):
    """The caller did not prove who it is (no, bad, expired or revoked certificate or token)."""


class PermissionDeniedError(SwiftchainError):
    """The caller is known but may not do this."""


class AlreadyExistsError(SwiftchainError):
    """The thing to create exists already, with different content."""


class StaleVersionError(SwiftchainError):
    """The request builds on a version that is no longer the latest: re-read, then retry."""
