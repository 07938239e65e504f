# syntax=docker/dockerfile:1
# One image for every Swiftchain process; the command picks which:
#   python -m services.identity | services.anchoring | services.consent | services.audit
#   python -m chain.node                      (a consortium member's chain node)
#   swiftchain ...                            (the CLI)
# Configuration comes from SWIFTCHAIN_* variables and mounted files (k8s/).
#   docker build -t swiftchain-health:dev .
# Not built by the tests (no container engine there): tests/unit/k8s checks it statically.

ARG PYTHON_IMAGE=python:3.11-slim
ARG GO_IMAGE=golang:1.26-bookworm

# grpc-health-probe: every port speaks TLS, and the kubelet's built-in gRPC probe speaks
# plaintext only, so the pods' probes run this over mTLS instead (k8s/base/*.yaml).
FROM ${GO_IMAGE} AS health-probe
ARG GRPC_HEALTH_PROBE_VERSION=v0.4.61
RUN CGO_ENABLED=0 GOBIN=/out go install \
        "github.com/grpc-ecosystem/grpc-health-probe@${GRPC_HEALTH_PROBE_VERSION}"

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/venv
WORKDIR /src
# Dependencies first (the project's own list, pinned by constraints.txt), so that a code
# change does not reinstall them.
COPY pyproject.toml constraints.txt README.md ./
RUN python -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' \
        > /tmp/requirements.txt \
    && /opt/venv/bin/pip install -c constraints.txt -r /tmp/requirements.txt
# The code, with the generated protobuf and gRPC modules checked in under protos/.
COPY chain ./chain
COPY services ./services
COPY cli ./cli
COPY sdk ./sdk
COPY devstack ./devstack
COPY protos ./protos
RUN /opt/venv/bin/pip install --no-deps -c constraints.txt . \
    && cd / && /opt/venv/bin/python -c "import services.identity.main, chain.node.main, cli.main"

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="swiftchain-health" \
      org.opencontainers.image.description="Swiftchain Health services, chain node and CLI"
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN groupadd --system --gid 10001 swiftchain \
    && useradd --system --uid 10001 --gid swiftchain --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin swiftchain
COPY --from=build /opt/venv /opt/venv
COPY --from=health-probe /out/grpc-health-probe /usr/local/bin/grpc-health-probe
# Relative default paths (.stack/...) are for the local stack; k8s sets every one of them.
WORKDIR /srv/swiftchain
USER 10001:10001
CMD ["swiftchain", "--help"]
