"""The import rules of DESIGN §8, enforced so the boundaries stay where the layout says.

Layers, from the inside out:

* ``chain`` (outside ``chain/node/``): the log's core. Imports only the standard library,
  ``cryptography``, protobuf, the generated messages and itself, so any verifier can use it
  offline.
* ``sdk``: what hospitals and apps import. Builds on ``chain`` only.
* ``services.platform``: the shared plumbing (servers, TLS, settings, Kafka and Mongo helpers,
  the outbox, the log writer, topics). Imports neither a node nor a service.
* ``chain.node`` and each ``services.<name>``: the running processes. They build on the
  platform; a service imports no node, no other service, no SDK, CLI or devstack; a node imports
  no service.
* ``cli`` imports no service's domain or store and no devstack; ``devstack`` imports no
  service's domain or store.

Each rule holds transitively: importing a module that breaks a boundary breaks it too. On top:
only store modules (and the platform's Mongo plumbing) import mongoengine, and domain modules
import no grpc, Mongo or Kafka and read no clock.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("chain", "services", "cli", "devstack", "sdk")
CHAIN_CORE_ALLOWED = {"chain", "cryptography", "google", "swiftchain"}
SERVICES = ("anchoring", "audit", "consent", "identity")


def _python_files(folder: str) -> list[Path]:
    return sorted(p for p in (ROOT / folder).rglob("*.py") if "__pycache__" not in p.parts)


ALL_CODE = [p for folder in PACKAGES for p in _python_files(folder)]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in ALL_CODE}


def _imports(path: Path) -> Iterator[str]:
    """Every module ``path`` imports, at the top or inside a function; for ``from X import Y``
    both X and, when it is a module of ours, X.Y."""
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
            for alias in node.names:
                if f"{node.module}.{alias.name}" in MODULES:
                    yield f"{node.module}.{alias.name}"


def _top(module: str) -> str:
    return module.split(".")[0]


def _ours(module: str) -> str | None:
    """The module of ours that ``module`` names (itself, or the package it is in)."""
    while module and module not in MODULES:
        module = module.rpartition(".")[0]
    return module or None


@cache
def _direct(module: str) -> frozenset[str]:
    return frozenset(
        found for m in _imports(MODULES[module]) if (found := _ours(m)) and found != module
    )


@cache
def _reach(module: str) -> frozenset[str]:
    """Every module of ours that importing ``module`` loads (its packages' ``__init__`` too)."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        current = todo.pop()
        for found in _direct(current):
            parents = [".".join(found.split(".")[:i]) for i in range(1, found.count(".") + 1)]
            for name in [found, *(p for p in parents if p in MODULES)]:
                if name not in seen:
                    seen.add(name)
                    todo.append(name)
    seen.discard(module)
    return frozenset(seen)


def _layer(module: str) -> str:
    """``chain``, ``chain.node``, ``sdk``, ``cli``, ``devstack``, ``services.platform``,
    ``services.<name>`` or ``services`` (the namespace package itself)."""
    parts = module.split(".")
    if parts[0] == "chain":
        return "chain.node" if len(parts) > 1 and parts[1] == "node" else "chain"
    if parts[0] == "services" and len(parts) > 1:
        return f"services.{parts[1]}"
    return parts[0]


def _is_domain_or_store(module: str) -> bool:
    parts = module.split(".")
    return (
        len(parts) > 2
        and parts[0] == "services"
        and parts[1] in SERVICES
        and (parts[2].startswith("domain") or parts[2].startswith("store"))
    )


def broken_rule(importer: str, imported: str) -> str | None:
    """Why ``importer`` may not import ``imported`` (both modules of ours), or None."""
    source, target = _layer(importer), _layer(imported)
    if source == target or target == "services":
        return None
    if source == "chain":
        return "chain/ outside chain/node/ builds on nothing but itself: offline verifiers use it"
    if source == "sdk" and target != "chain":
        return "the SDK builds on chain/ only: hospitals and apps install it"
    if source == "services.platform" and target not in {"chain"}:
        return "the platform layer imports neither a node nor a service"
    if source == "chain.node" and target not in {"chain", "services.platform"}:
        return "a chain node builds on chain/ and the platform layer only"
    if source.startswith("services.") and target not in {"chain", "services.platform"}:
        return "a service builds on chain/ and the platform layer only"
    if source in {"cli", "devstack"} and _is_domain_or_store(imported):
        return "the CLI and devstack reach services through their APIs, not their domain or store"
    if source == "cli" and target == "devstack":
        return "the CLI that hospitals and regulators install does not depend on devstack"
    return None


@pytest.mark.parametrize("module", sorted(MODULES), ids=str)
def test_each_module_keeps_to_its_layer_transitively(module: str) -> None:
    broken = {
        f"{imported} ({rule})"
        for imported in _reach(module)
        if (rule := broken_rule(module, imported))
    }
    assert not broken, f"{module} imports, directly or through others: {sorted(broken)}"


# The breaks of the layering that issue #23 found, each of which the rules must catch.
HISTORICAL_BREAKS = [
    ("services.anchoring.main", "chain.node.node"),
    ("services.anchoring.main", "chain.node.setup"),
    ("services.anchoring.main", "chain.node.submitter"),
    ("services.anchoring.servicer", "chain.node.evidence_client"),
    ("services.anchoring.servicer", "chain.node.submitter"),
    ("services.audit.log_follower", "chain.node.evidence_client"),
    ("services.audit.main", "chain.node.setup"),
    ("services.identity.main", "chain.node.node"),
    ("services.identity.main", "chain.node.setup"),
    ("services.consent.main", "chain.node.node"),
    ("services.consent.main", "chain.node.setup"),
    ("chain.__main__", "chain.node.main"),
    ("services.consent.domain", "sdk.consent"),
    ("cli.identity_files", "services.identity.domain.keys"),
    ("devstack.pki", "services.identity.domain.ca"),
    ("devstack.parties", "services.audit.store"),
    ("services.platform.kafka", "chain.node.node"),
    ("cli.grpc_client", "devstack.paths"),
    ("services.consent.sender", "services.audit.domain"),
]


@pytest.mark.parametrize(("importer", "imported"), HISTORICAL_BREAKS, ids=str)
def test_the_rules_catch_each_break_found_before(importer: str, imported: str) -> None:
    assert broken_rule(importer, imported) is not None


def test_the_rules_allow_the_layering_as_drawn() -> None:
    allowed = [
        ("chain.node.node", "services.platform.kafka"),
        ("services.anchoring.main", "services.platform.log_writer"),
        ("services.platform.log_writer", "chain.sequencer"),
        ("cli.grpc_client", "services.platform.tls"),
        ("devstack.parties", "cli.identity_commands"),
        ("sdk.consent", "chain.signed_messages"),
    ]
    assert [broken_rule(a, b) for a, b in allowed] == [None] * len(allowed)


CHAIN_CORE = [p for p in _python_files("chain") if "node" not in p.relative_to(ROOT).parts]


@pytest.mark.parametrize("path", CHAIN_CORE, ids=lambda p: str(p.relative_to(ROOT)))
def test_chain_core_imports_only_stdlib_cryptography_and_messages(path: Path) -> None:
    bad = {
        module
        for module in _imports(path)
        if _top(module) not in CHAIN_CORE_ALLOWED and _top(module) not in sys.stdlib_module_names
    }
    assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}; chain/ must stay offline"


_SHARED_MONGO = {"services/platform/mongo.py", "services/platform/outbox.py"}


def _is_store(path: Path) -> bool:
    return path.name == "store.py" or "store" in path.relative_to(ROOT).parts[:-1]


def _is_domain(path: Path) -> bool:
    return path.name.startswith("domain") or "domain" in path.relative_to(ROOT).parts[:-1]


@pytest.mark.parametrize("path", ALL_CODE, ids=lambda p: str(p.relative_to(ROOT)))
def test_only_store_modules_import_mongoengine(path: Path) -> None:
    if _is_store(path) or path.relative_to(ROOT).as_posix() in _SHARED_MONGO:
        return
    assert "mongoengine" not in {_top(m) for m in _imports(path)}, (
        f"{path.relative_to(ROOT)} imports mongoengine; only store modules may"
    )


DOMAIN = [p for p in _python_files("services") if _is_domain(p)]


@pytest.mark.parametrize("path", DOMAIN, ids=lambda p: str(p.relative_to(ROOT)))
def test_domain_modules_import_no_grpc_mongo_or_kafka(path: Path) -> None:
    bad = {_top(m) for m in _imports(path)} & {"grpc", "mongoengine", "pymongo", "kafka"}
    assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}; domain logic stays pure"


#: Calls that read the clock: a domain module is given the time instead.
CLOCK_READS = {
    ("datetime", "now"),
    ("datetime", "utcnow"),
    ("datetime", "today"),
    ("date", "today"),
    ("time", "time"),
    ("time", "time_ns"),
    ("time", "monotonic"),
    ("time", "monotonic_ns"),
    ("time", "perf_counter"),
}


def clock_reads(source: str) -> list[str]:
    """The clock reads in ``source``: calls such as ``datetime.now()`` or ``time.time()``,
    and bare ``now()``/``monotonic()`` imported from those modules."""
    tree = ast.parse(source)
    imported = {
        alias.asname or alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module in {"time", "datetime"}
        for alias in node.names
        if (node.module, alias.name) in CLOCK_READS
    }
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
            if (func.value.id, func.attr) in CLOCK_READS:
                found.append(f"{func.value.id}.{func.attr}() at line {node.lineno}")
        elif isinstance(func, ast.Attribute) and isinstance(func.value, ast.Attribute):
            if (func.value.attr, func.attr) in CLOCK_READS:
                found.append(f"{func.value.attr}.{func.attr}() at line {node.lineno}")
        elif isinstance(func, ast.Name) and func.id in imported:
            found.append(f"{func.id}() at line {node.lineno}")
    return found


@pytest.mark.parametrize("path", DOMAIN, ids=lambda p: str(p.relative_to(ROOT)))
def test_domain_modules_read_no_clock(path: Path) -> None:
    reads = clock_reads(path.read_text())
    assert not reads, f"{path.relative_to(ROOT)} reads the clock: {reads}; pass the time in"


@pytest.mark.parametrize(
    "source",
    [
        "from datetime import datetime\nx = datetime.now()",
        "import datetime\nx = datetime.datetime.now(datetime.UTC)",
        "import time\nx = time.monotonic()",
        "from time import time\nx = time()",
    ],
)
def test_the_clock_rule_sees_each_way_of_reading_it(source: str) -> None:
    assert clock_reads(source)


def test_the_rules_see_the_code() -> None:
    # Guard against a glob that silently matches nothing.
    assert len(CHAIN_CORE) >= 8
    assert len(DOMAIN) >= 10
    assert any(p.name == "store.py" for p in ALL_CODE)
    assert "chain.node.node" in _reach("chain.node.main")
    assert "services.platform.kafka" in _reach("services.anchoring.main"), "transitive"
