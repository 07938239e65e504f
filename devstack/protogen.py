"""Generate the Python code for the protobuf API, or check that the checked-in code is fresh.

``python -m devstack.protogen`` compiles every ``protos/swiftchain/**/*.proto`` with
``grpc_tools.protoc`` (``-Iprotos -I<grpc_tools include dir>``) into the same tree as the protos:
``x_pb2.py`` (messages), ``x_pb2_grpc.py`` (gRPC stubs and servicers) and their mypy-protobuf
typing stubs ``x_pb2.pyi`` and ``x_pb2_grpc.pyi``, plus an empty ``__init__.py`` in every package
directory and a ``py.typed`` marker. Generated files whose proto is gone are deleted. Imports are
then ``from swiftchain.chain.v1 import entry_pb2`` with ``protos`` on the path.

``python -m devstack.protogen --check`` generates into a temporary directory instead, compares, and
exits 1 listing every stale, missing or orphaned generated file (0 when all are fresh).

The generated code is checked in; CI and ``tests/unit/test_protos_fresh.py`` run the check.
"""

from __future__ import annotations

import argparse
import filecmp
import importlib.resources
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = REPO_ROOT / "protos"
TOP_PACKAGE = "swiftchain"

GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")
MARKER_FILES = ("__init__.py", "py.typed")

EXIT_OK = 0
EXIT_STALE = 1
EXIT_PROTOC_FAILED = 2


class ProtocError(RuntimeError):
    """protoc (or one of its plugins) failed; the message carries its output."""


@dataclass
class Staleness:
    """The differences between freshly generated code and the checked-in tree."""

    changed: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    orphaned: list[str] = field(default_factory=list)

    @property
    def fresh(self) -> bool:
        """True when the checked-in tree equals the generated one."""
        return not (self.changed or self.missing or self.orphaned)

    def lines(self) -> list[str]:
        """One human-readable line per stale file, paths relative to the repository root."""
        out = [f"changed:  protos/{p}" for p in self.changed]
        out += [f"missing:  protos/{p}" for p in self.missing]
        out += [f"orphaned: protos/{p}" for p in self.orphaned]
        return out


def grpc_tools_include_dir() -> Path:
    """The directory of the well-known protos (google/protobuf/*.proto) shipped by grpc_tools."""
    return Path(str(importlib.resources.files("grpc_tools") / "_proto"))


def proto_files(proto_root: Path = PROTO_ROOT) -> list[Path]:
    """Every .proto file under ``<proto_root>/swiftchain``, sorted, as absolute paths."""
    return sorted((proto_root / TOP_PACKAGE).rglob("*.proto"))


def _plugin(name: str) -> Path:
    """Find a protoc plugin executable: next to this interpreter first, then on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.is_file():
        return beside
    found = shutil.which(name)
    if found is None:
        msg = f"protoc plugin {name!r} not found next to {sys.executable} or on PATH"
        raise ProtocError(msg + " (install mypy-protobuf into the virtualenv)")
    return Path(found)


def protoc_command(out_dir: Path, proto_root: Path = PROTO_ROOT) -> list[str]:
    """The full protoc command line that generates every proto into ``out_dir``."""
    protos = proto_files(proto_root)
    if not protos:
        msg = f"no .proto files under {proto_root / TOP_PACKAGE}"
        raise ProtocError(msg)
    return [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"-I{proto_root}",
        f"-I{grpc_tools_include_dir()}",
        f"--plugin=protoc-gen-mypy={_plugin('protoc-gen-mypy')}",
        f"--plugin=protoc-gen-mypy_grpc={_plugin('protoc-gen-mypy_grpc')}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        f"--mypy_out={out_dir}",
        f"--mypy_grpc_out={out_dir}",
        *(str(p) for p in protos),
    ]


def generate(out_dir: Path, proto_root: Path = PROTO_ROOT) -> None:
    """Generate the code for every proto into ``out_dir`` (which must exist), with markers."""
    result = subprocess.run(
        protoc_command(out_dir, proto_root),
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO_ROOT,
    )
    if result.returncode != 0:
        msg = f"protoc failed with exit code {result.returncode}:\n{result.stderr}{result.stdout}"
        raise ProtocError(msg)
    for line in (result.stderr + result.stdout).splitlines():
        if line.strip() and not line.startswith("Writing mypy to "):
            print(f"protoc: {line}", file=sys.stderr)  # warnings, e.g. unused imports
    package_root = out_dir / TOP_PACKAGE
    for directory in [package_root, *sorted(p for p in package_root.rglob("*") if p.is_dir())]:
        if directory.name == "__pycache__":
            continue
        (directory / "__init__.py").write_text("")
    (package_root / "py.typed").write_text("")


def generated_files(root: Path) -> set[str]:
    """The generated files under ``<root>/swiftchain``, as POSIX paths relative to ``root``."""
    package_root = root / TOP_PACKAGE
    if not package_root.is_dir():
        return set()
    found = set()
    for path in package_root.rglob("*"):
        if "__pycache__" in path.parts or not path.is_file():
            continue
        if path.name.endswith(GENERATED_SUFFIXES) or path.name in MARKER_FILES:
            found.add(path.relative_to(root).as_posix())
    return found


def compare(fresh_root: Path, checked_in_root: Path = PROTO_ROOT) -> Staleness:
    """Compare freshly generated files with the checked-in ones."""
    fresh = generated_files(fresh_root)
    current = generated_files(checked_in_root)
    staleness = Staleness(
        missing=sorted(fresh - current),
        orphaned=sorted(current - fresh),
    )
    for rel in sorted(fresh & current):
        if not filecmp.cmp(fresh_root / rel, checked_in_root / rel, shallow=False):
            staleness.changed.append(rel)
    return staleness


def check(proto_root: Path = PROTO_ROOT) -> Staleness:
    """Regenerate into a temporary directory and compare with the checked-in code."""
    with tempfile.TemporaryDirectory(prefix="protogen-") as tmp:
        generate(Path(tmp), proto_root)
        return compare(Path(tmp), proto_root)


def write(proto_root: Path = PROTO_ROOT) -> Staleness:
    """Regenerate into ``proto_root``: update changed files, add new ones, delete orphans.

    Files that did not change are left alone (their modification times too).
    """
    with tempfile.TemporaryDirectory(prefix="protogen-") as tmp:
        fresh_root = Path(tmp)
        generate(fresh_root, proto_root)
        staleness = compare(fresh_root, proto_root)
        for rel in staleness.changed + staleness.missing:
            target = proto_root / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(fresh_root / rel, target)
        for rel in staleness.orphaned:
            (proto_root / rel).unlink()
    return staleness


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the process exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m devstack.protogen",
        description="Generate Python code (messages, gRPC, typing stubs) from protos/.",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="do not write; exit 1 and list the files that are stale",
    )
    args = parser.parse_args(argv)
    try:
        staleness = check() if args.check else write()
    except ProtocError as exc:
        print(exc, file=sys.stderr)
        return EXIT_PROTOC_FAILED
    count = len(proto_files())
    if args.check:
        if staleness.fresh:
            print(f"generated code is fresh ({count} protos)")
            return EXIT_OK
        print("generated code is stale; run `python -m devstack.protogen`:", file=sys.stderr)
        for line in staleness.lines():
            print(f"  {line}", file=sys.stderr)
        return EXIT_STALE
    for line in staleness.lines():
        print(line)
    print(f"generated {count} protos into {PROTO_ROOT.relative_to(REPO_ROOT)}/")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
