"""The import rules of DESIGN §8, enforced so the boundaries stay where the layout says.

* ``chain/`` (outside ``chain/node/``) imports only the standard library, ``cryptography``,
  protobuf, the generated messages and itself: it can be used offline by any verifier.
* Only store modules (``chain/node/store.py``, ``services/<name>/store.py`` or
  ``services/<name>/store/*.py``) and the shared Mongo plumbing (``services/platform/mongo.py``,
  ``services/platform/outbox.py``) import mongoengine.
* Domain modules (``services/<name>/domain*.py`` or ``services/<name>/domain/*.py``) import
  neither grpc nor mongoengine nor kafka.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHAIN_CORE_ALLOWED = {"chain", "cryptography", "google", "swiftchain"}


def _imports(path: Path) -> Iterator[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module


def _top(module: str) -> str:
    return module.split(".")[0]


def _python_files(folder: str) -> list[Path]:
    return sorted(p for p in (ROOT / folder).rglob("*.py") if "__pycache__" not in p.parts)


CHAIN_CORE = [p for p in _python_files("chain") if "node" not in p.relative_to(ROOT).parts]


@pytest.mark.parametrize("path", CHAIN_CORE, ids=lambda p: str(p.relative_to(ROOT)))
def test_chain_core_imports_only_stdlib_cryptography_and_messages(path: Path) -> None:
    bad = {
        module
        for module in _imports(path)
        if _top(module) not in CHAIN_CORE_ALLOWED and _top(module) not in sys.stdlib_module_names
    }
    assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}; chain/ must stay offline"


ALL_CODE = [
    p for folder in ("chain", "services", "cli", "devstack", "sdk") for p in _python_files(folder)
]


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


def test_domain_modules_import_no_grpc_mongo_or_kafka() -> None:
    domain = [p for p in _python_files("services") if _is_domain(p)]
    assert domain, "expected domain modules under services/"
    offenders = {
        str(p.relative_to(ROOT)): sorted(
            {_top(m) for m in _imports(p)} & {"grpc", "mongoengine", "pymongo", "kafka"}
        )
        for p in domain
    }
    assert not {k: v for k, v in offenders.items() if v}, "domain logic must stay pure"


def test_the_rules_see_the_code() -> None:
    # Guard against a glob that silently matches nothing.
    assert len(CHAIN_CORE) >= 8
    assert any(p.name == "store.py" for p in ALL_CODE)
