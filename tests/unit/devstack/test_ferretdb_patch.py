"""The one change devstack makes to FerretDB's source before building it."""

from __future__ import annotations

from pathlib import Path

import pytest

from devstack import ferretdb
from devstack.toolchain import BootstrapError
from devstack.versions import FERRETDB_VERSION

UPSTREAM = """package metadata

const (
	// IDColumn is a SQLite path expression for _id field.
	IDColumn = DefaultColumn + "->'$._id'"
)
"""


def source_tree(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "internal/backends/sqlite/metadata/metadata.go"
    path.parent.mkdir(parents=True)
    path.write_text(text)
    return path


def test_id_lookups_use_the_expression_of_the_id_index(tmp_path: Path) -> None:
    path = source_tree(tmp_path, UPSTREAM)

    ferretdb._patch_id_lookups(tmp_path)

    assert '\tIDColumn = DefaultColumn + `->"_id"`\n' in path.read_text()
    assert "'$._id'" not in path.read_text()


def test_another_version_of_the_source_fails_the_build_with_a_clear_error(tmp_path: Path) -> None:
    source_tree(tmp_path, UPSTREAM.replace("'$._id'", "'$.id'"))

    with pytest.raises(BootstrapError, match="expected 'IDColumn = DefaultColumn"):
        ferretdb._patch_id_lookups(tmp_path)


def test_a_binary_built_without_the_patch_is_rebuilt(tmp_path: Path) -> None:
    binary = tmp_path / "ferretdb"
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    (tmp_path / "complete.json").write_text(f'{{"version": "{FERRETDB_VERSION}"}}')
    assert not ferretdb.FERRETDB_BUILD.complete(binary)
    (tmp_path / "complete.json").write_text(
        f'{{"version": "{FERRETDB_VERSION}", "patch": "{ferretdb._PATCH_ID}"}}'
    )
    assert ferretdb.FERRETDB_BUILD.complete(binary)
