"""Local infrastructure for Swiftchain Health: the pinned toolchain downloads and builds (Kafka
jars from Maven Central, FerretDB from the Go module proxy), the servers, and one supervised
process helper. Everything it downloads, builds or runs lives under the git-ignored ``.stack/``.

Run ``python -m devstack --help``. Modules: :mod:`devstack.versions` (pins),
:mod:`devstack.toolchain`, :mod:`devstack.process`, :mod:`devstack.kafka`,
:mod:`devstack.ferretdb`, :mod:`services.platform.topics` (the topic table production code imports).
"""
