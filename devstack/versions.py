"""Every pinned version of the local stack, in one place.

Changing a version here changes the cache folder name (``.stack/cache/kafka-<ver>``,
``.stack/cache/ferretdb-<ver>``), so the next ``bootstrap`` fetches or builds it afresh.
"""

from __future__ import annotations

from typing import Final

#: Apache Kafka broker (``org.apache.kafka:kafka_<scala>:<ver>`` from Maven Central).
KAFKA_VERSION: Final = "4.3.1"
#: Scala binary version of the broker artifact.
KAFKA_SCALA_VERSION: Final = "2.13"
#: Log4j 2 backend for the broker (log4j-core + the SLF4J 1.x binding log4j-slf4j-impl).
LOG4J_VERSION: Final = "2.25.3"

#: FerretDB v1 (SQLite backend), built from the Go module proxy.
FERRETDB_MODULE: Final = "github.com/FerretDB/FerretDB"
FERRETDB_VERSION: Final = "v1.24.2"

#: Minimum toolchain versions.
JAVA_MIN_MAJOR: Final = 17
GO_MIN_VERSION: Final = (1, 24)  # FerretDB v1.24.2's go.mod says ``go 1.24``

#: immudb, the peer of ``bench/immudb_bench.py``, built from the Go module proxy.
IMMUDB_MODULE: Final = "github.com/codenotary/immudb"
IMMUDB_VERSION: Final = "v1.9.5"
