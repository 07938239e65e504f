"""Settings shared by every process, read from ``SWIFTCHAIN_*`` environment variables.

Each process has one settings class that subclasses :class:`ProcessSettings` and adds its own
fields; defaults work for the local stack that ``make up`` starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

#: Default gRPC ports of DESIGN §2.
IDENTITY_PORT = 50051
ANCHORING_PORT = 50052
CONSENT_PORT = 50053
AUDIT_PORT = 50054
FIRST_NODE_PORT = 50061


class ProcessSettings(BaseSettings):
    """What every Swiftchain process needs: where it listens, Kafka, Mongo, limits."""

    model_config = SettingsConfigDict(env_prefix="SWIFTCHAIN_", extra="ignore", frozen=True)

    #: Name of this process, used in logs, spans and as the Kafka client id.
    process_name: str = "swiftchain"
    listen_host: str = "127.0.0.1"
    port: int = Field(default=0, ge=0, le=65535)
    #: The public port (server-only TLS) for patient apps and anonymous calls; 0 means none.
    #: Used only with ``tls_dir``: the main port then requires a client certificate.
    public_port: int = Field(default=0, ge=0, le=65535)
    kafka_bootstrap: str = "127.0.0.1:9092"
    #: How Kafka clients connect: ``SSL`` (a client certificate, which the platform's brokers
    #: require) or ``PLAINTEXT`` (the default, for a broker without authentication).
    kafka_security_protocol: Literal["PLAINTEXT", "SSL"] | None = None
    #: The Kafka clients' TLS folder (``ca.pem`` trusted for the brokers, ``cert.pem`` and
    #: ``key.pem`` presented to them); empty means ``tls_dir``.
    kafka_tls_dir: Path | None = None
    mongo_uri: str = "mongodb://127.0.0.1:27017/"
    #: Largest request or response message, in bytes.
    max_message_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    #: Seconds a SIGTERM waits for in-flight RPCs before the server stops.
    shutdown_grace_seconds: float = Field(default=10.0, ge=0)
    #: Threads that run the synchronous handlers of unary calls. Streams and long waits hold
    #: none (the server is asyncio's; see services/platform/aio.py).
    max_workers: int = Field(default=16, ge=1)
    #: Unary calls that may wait for a thread beyond those running; past that a call is
    #: refused at once with RESOURCE_EXHAUSTED and a retry hint.
    max_queued_calls: int = Field(default=256, ge=0)
    #: Streams (server, client or both ways) one caller may hold open at once: an
    #: authenticated caller by its identity, an anonymous one by its network address.
    max_streams_per_caller: int = Field(default=100, ge=1)
    #: Streams the server holds open at once, all callers together.
    max_streams: int = Field(default=20_000, ge=1)
    #: Anonymous calls (login, health, reflection) per second from one address, sustained...
    anonymous_calls_per_second: float = Field(default=20.0, gt=0)
    #: ...and in a burst.
    anonymous_burst: int = Field(default=100, ge=1)
    #: Longest a call waits server-side for something to happen (a seal, a receipt) before it
    #: is answered with what is known, whatever deadline the caller set.
    max_wait_seconds: float = Field(default=30.0, gt=0)
    #: Seconds a caller refused for a limit is told to wait (google.rpc.RetryInfo).
    retry_after_seconds: float = Field(default=1.0, gt=0)
    #: Folder with the platform CA, this process's certificate and key and the token verifying
    #: key (see services/platform/tls.py). Empty means plaintext on loopback, for unit tests only.
    tls_dir: Path | None = None
    #: The audience that patients' bearer tokens must name.
    token_audience: str = "swiftchain"  # noqa: S105  (a name, not a secret)
    #: The issuer that patients' bearer tokens must name.
    token_issuer: str = "swiftchain-identity"  # noqa: S105
    log_level: str = "INFO"
    #: Log lines as JSON objects (with trace ids) rather than text.
    log_json: bool = False
    #: Port of the Prometheus endpoint (``/metrics`` on ``listen_host``); 0 means none.
    metrics_port: int = Field(default=0, ge=0, le=65535)
    #: Append finished spans to this file as JSON lines (tests and local debugging; a cluster
    #: exports over OTLP with ``OTEL_EXPORTER_OTLP_ENDPOINT`` instead).
    spans_file: Path | None = None

    @property
    def address(self) -> str:
        """host:port this process listens on."""
        return f"{self.listen_host}:{self.port}"

    @property
    def public_address(self) -> str:
        """host:port of the public (server-only TLS) listener."""
        return f"{self.listen_host}:{self.public_port}"
