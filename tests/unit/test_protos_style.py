"""The API style rules, checked mechanically (there is no buf lint here; this is the lint).

- Packages are ``swiftchain.<area>.v1`` and files live at ``swiftchain/<area>/v1/*.proto``.
- Every RPC has its own ``<Rpc>Request`` and ``<Rpc>Response`` in its service's package (streams
  too), and no ``*Request``/``*Response`` message exists without its RPC.
- Every enum's zero value is ``<ENUM_NAME>_UNSPECIFIED`` and every value carries the prefix.
- Names: PascalCase messages, enums and services; lower_snake_case fields; UPPER_SNAKE values.
- ``google.protobuf.Timestamp`` fields are named ``time`` or ``*_time`` and vice versa.
- Every service, RPC, message, field, oneof, enum and enum value has a comment (the API docs).
- All protos compile with protoc from a clean directory, without warnings.
- The log's wire format (entry, ordering and cosignature messages) keeps its field numbers.
"""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FileDescriptor

from devstack import protogen

REPO_ROOT = Path(__file__).resolve().parents[2]
PROTO_ROOT = REPO_ROOT / "protos"
AREAS = ("common", "chain", "identity", "anchoring", "consent", "audit", "events")
PACKAGE_RE = re.compile(r"^swiftchain\.(?P<area>[a-z]+)\.v1$")
PASCAL_RE = re.compile(r"^[A-Z][A-Za-z0-9]*$")
SNAKE_RE = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$")
UPPER_SNAKE_RE = re.compile(r"^[A-Z][A-Z0-9]*(_[A-Z0-9]+)*$")
TIMESTAMP = "google.protobuf.Timestamp"


def _module_names() -> list[str]:
    names = []
    for path in sorted((PROTO_ROOT / "swiftchain").rglob("*_pb2.py")):
        rel = path.relative_to(PROTO_ROOT).with_suffix("")
        names.append(".".join(rel.parts))
    return names


MODULE_NAMES = _module_names()


def _files() -> list[FileDescriptor]:
    return [importlib.import_module(name).DESCRIPTOR for name in MODULE_NAMES]


def _messages(file: FileDescriptor) -> Iterator[Descriptor]:
    def walk(message: Descriptor) -> Iterator[Descriptor]:
        yield message
        for nested in message.nested_types:
            yield from walk(nested)

    for message in file.message_types_by_name.values():
        yield from walk(message)


def _enums(file: FileDescriptor) -> Iterator[EnumDescriptor]:
    yield from file.enum_types_by_name.values()
    for message in _messages(file):
        yield from message.enum_types


def _upper_snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).upper()


def test_every_proto_has_generated_modules() -> None:
    protos = {p.relative_to(PROTO_ROOT).with_suffix("") for p in protogen.proto_files()}
    modules = {Path(*name.split(".")) for name in MODULE_NAMES}
    assert protos, "no protos found"
    assert {p.with_name(p.name + "_pb2") for p in protos} == modules


def test_every_area_is_present() -> None:
    areas = {PACKAGE_RE.match(f.package).group("area") for f in _files()}  # type: ignore[union-attr]
    assert areas == set(AREAS)


@pytest.mark.parametrize("module_name", MODULE_NAMES)
def test_package_and_path(module_name: str) -> None:
    file = importlib.import_module(module_name).DESCRIPTOR
    match = PACKAGE_RE.match(file.package)
    assert match, f"{file.name}: package {file.package!r} is not swiftchain.<area>.v1"
    area = match.group("area")
    assert area in AREAS, f"{file.name}: unknown area {area!r}"
    assert re.fullmatch(rf"swiftchain/{area}/v1/[a-z][a-z0-9_]*\.proto", file.name), (
        f"{file.name}: not at swiftchain/{area}/v1/<snake_case>.proto"
    )
    proto = descriptor_pb2.FileDescriptorProto()
    file.CopyToProto(proto)
    assert proto.syntax == "proto3", f"{file.name}: use proto3"


def test_every_rpc_has_its_own_request_and_response() -> None:
    problems = []
    rpcs: dict[str, str] = {}
    used: dict[str, str] = {}
    request_response: set[str] = set()
    for file in _files():
        for message in _messages(file):
            if message.name.endswith(("Request", "Response")) and message.containing_type is None:
                request_response.add(message.full_name)
        for service in file.services_by_name.values():
            if not (PASCAL_RE.match(service.name) and service.name.endswith("Service")):
                problems.append(f"{service.full_name}: services are named <Area>Service")
            for method in service.methods:
                where = f"{service.full_name}.{method.name}"
                rpcs[where] = method.name
                expected_in = f"{file.package}.{method.name}Request"
                expected_out = f"{file.package}.{method.name}Response"
                if method.input_type.full_name != expected_in:
                    problems.append(
                        f"{where}: input {method.input_type.full_name}, want {expected_in}"
                    )
                if method.output_type.full_name != expected_out:
                    problems.append(
                        f"{where}: output {method.output_type.full_name}, want {expected_out}"
                    )
                for message in (method.input_type, method.output_type):
                    other = used.get(message.full_name)
                    if other is not None:
                        problems.append(f"{where}: {message.full_name} already used by {other}")
                    used[message.full_name] = where
    orphans = sorted(request_response - set(used))
    problems += [f"{name}: a Request/Response message without its RPC" for name in orphans]
    assert rpcs, "no RPCs found"
    assert not problems, "\n".join(problems)


def test_enum_values_are_prefixed_and_start_unspecified() -> None:
    problems = []
    for file in _files():
        for enum in _enums(file):
            prefix = _upper_snake(enum.name) + "_"
            zero = enum.values_by_number.get(0)
            if zero is None or zero.name != prefix + "UNSPECIFIED":
                problems.append(f"{enum.full_name}: zero value must be {prefix}UNSPECIFIED")
            if enum.values[0].number != 0:
                problems.append(f"{enum.full_name}: the first value must be the zero value")
            if not PASCAL_RE.match(enum.name):
                problems.append(f"{enum.full_name}: enum names are PascalCase")
            for value in enum.values:
                if not value.name.startswith(prefix):
                    problems.append(f"{enum.full_name}.{value.name}: not prefixed with {prefix}")
                if not UPPER_SNAKE_RE.match(value.name):
                    problems.append(f"{enum.full_name}.{value.name}: values are UPPER_SNAKE_CASE")
    assert not problems, "\n".join(problems)


def test_names_and_time_fields() -> None:
    problems = []
    for file in _files():
        for message in _messages(file):
            if not PASCAL_RE.match(message.name):
                problems.append(f"{message.full_name}: message names are PascalCase")
            for oneof in message.oneofs:
                synthetic = len(oneof.fields) == 1 and oneof.name == "_" + oneof.fields[0].name
                if not synthetic and not SNAKE_RE.match(oneof.name):
                    problems.append(f"{message.full_name}.{oneof.name}: oneofs are snake_case")
            for field in message.fields:
                where = f"{message.full_name}.{field.name}"
                if not SNAKE_RE.match(field.name):
                    problems.append(f"{where}: fields are lower_snake_case")
                is_timestamp = (
                    field.message_type is not None and field.message_type.full_name == TIMESTAMP
                )
                time_name = field.name == "time" or field.name.endswith("_time")
                if is_timestamp and not time_name:
                    problems.append(f"{where}: Timestamp fields are named time or *_time")
                if time_name and not is_timestamp:
                    problems.append(f"{where}: *_time fields must be google.protobuf.Timestamp")
    assert not problems, "\n".join(problems)


def _compile(out_dir: Path) -> subprocess.CompletedProcess[str]:
    descriptor_set = out_dir / "api.binpb"
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{PROTO_ROOT}",
            f"-I{protogen.grpc_tools_include_dir()}",
            f"--python_out={out_dir}",
            f"--grpc_python_out={out_dir}",
            f"--descriptor_set_out={descriptor_set}",
            "--include_source_info",
            *(str(p) for p in protogen.proto_files()),
        ],
        cwd=out_dir,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> descriptor_pb2.FileDescriptorSet:
    out_dir = tmp_path_factory.mktemp("protoc-clean")
    result = _compile(out_dir)
    assert result.returncode == 0, f"protoc failed:\n{result.stderr}{result.stdout}"
    assert "warning" not in result.stderr.lower(), f"protoc warnings:\n{result.stderr}"
    generated = sorted(p.relative_to(out_dir).as_posix() for p in out_dir.rglob("*_pb2*.py"))
    assert len(generated) == 2 * len(protogen.proto_files()), generated
    file_set = descriptor_pb2.FileDescriptorSet()
    file_set.ParseFromString((out_dir / "api.binpb").read_bytes())
    return file_set


def test_protos_compile_from_a_clean_directory(
    compiled: descriptor_pb2.FileDescriptorSet,
) -> None:
    names = {f.name for f in compiled.file}
    assert names == {p.relative_to(PROTO_ROOT).as_posix() for p in protogen.proto_files()}


def _documented_elements(
    file: descriptor_pb2.FileDescriptorProto,
) -> Iterator[tuple[tuple[int, ...], str]]:
    """Yield (source path, display name) for every element that must carry a comment."""

    # Field numbers in descriptor.proto: FileDescriptorProto.message_type = 4, enum_type = 5,
    # service = 6; DescriptorProto.field = 2, nested_type = 3, enum_type = 4, oneof_decl = 8;
    # EnumDescriptorProto.value = 2; ServiceDescriptorProto.method = 2.
    def enum(
        path: tuple[int, ...], e: descriptor_pb2.EnumDescriptorProto, scope: str
    ) -> Iterator[tuple[tuple[int, ...], str]]:
        name = f"{scope}.{e.name}"
        yield path, name
        for i, value in enumerate(e.value):
            yield (*path, 2, i), f"{name}.{value.name}"

    def message(
        path: tuple[int, ...], m: descriptor_pb2.DescriptorProto, scope: str
    ) -> Iterator[tuple[tuple[int, ...], str]]:
        name = f"{scope}.{m.name}"
        yield path, name
        for i, field in enumerate(m.field):
            yield (*path, 2, i), f"{name}.{field.name}"
        for i, oneof in enumerate(m.oneof_decl):
            if any(
                f.proto3_optional
                for f in m.field
                if f.HasField("oneof_index") and f.oneof_index == i
            ):
                continue  # synthetic oneof of a proto3 `optional` field
            yield (*path, 8, i), f"{name}.{oneof.name}"
        for i, nested in enumerate(m.nested_type):
            yield from message((*path, 3, i), nested, name)
        for i, nested_enum in enumerate(m.enum_type):
            yield from enum((*path, 4, i), nested_enum, name)

    for i, m in enumerate(file.message_type):
        yield from message((4, i), m, file.package)
    for i, e in enumerate(file.enum_type):
        yield from enum((5, i), e, file.package)
    for i, service in enumerate(file.service):
        name = f"{file.package}.{service.name}"
        yield (6, i), name
        for j, method in enumerate(service.method):
            yield (6, i, 2, j), f"{name}.{method.name}"


def test_everything_is_documented(compiled: descriptor_pb2.FileDescriptorSet) -> None:
    problems = []
    for file in compiled.file:
        comments = {
            tuple(loc.path): (loc.leading_comments + loc.trailing_comments).strip()
            for loc in file.source_code_info.location
        }
        for path, name in _documented_elements(file):
            if not comments.get(path):
                problems.append(f"{file.name}: {name} has no comment")
    assert not problems, "\n".join(problems)


# The log's wire format: every stored entry, ordering record and cosignature depends on these
# numbers. Changing one breaks every node's history; add fields, never renumber or reuse.
WIRE_CONTRACT = {
    "swiftchain.chain.v1.ChainEntry": {"body": 1, "key_id": 2, "signature": 3, "batch": 4},
    "swiftchain.chain.v1.BatchAuth": {"index": 1, "size": 2, "path": 3, "root_signature": 4},
    "swiftchain.chain.v1.EntryBody": {
        "entry_id": 1,
        "kind": 2,
        "submitter_id": 3,
        "time": 4,
        "commitment": 5,
        "subject_tag": 6,
        "references": 7,
        "key": 10,
        "record": 11,
        "consent": 12,
        "access": 13,
    },
    "swiftchain.chain.v1.OrderingRecord": {"entry": 1, "ttc": 2},
    "swiftchain.chain.v1.TimeToCut": {"height": 1, "node": 2},
    "swiftchain.chain.v1.Cosignature": {
        "node": 1,
        "height": 2,
        "tree_size": 3,
        "checkpoint": 4,
        "signature_line": 5,
    },
}


@pytest.mark.parametrize("message_name", sorted(WIRE_CONTRACT))
def test_wire_contract(message_name: str) -> None:
    from google.protobuf import descriptor_pool

    importlib.import_module("swiftchain.chain.v1.entry_pb2")
    importlib.import_module("swiftchain.chain.v1.ordering_pb2")
    message = descriptor_pool.Default().FindMessageTypeByName(message_name)
    numbers = {field.name: field.number for field in message.fields}
    for name, number in WIRE_CONTRACT[message_name].items():
        assert numbers.get(name) == number, f"{message_name}.{name} must stay field {number}"


def test_entry_auth_and_detail_are_oneofs() -> None:
    from swiftchain.chain.v1 import entry_pb2

    entry = entry_pb2.ChainEntry.DESCRIPTOR
    assert [f.name for f in entry.oneofs_by_name["auth"].fields] == ["signature", "batch"]
    body = entry_pb2.EntryBody.DESCRIPTOR
    assert [f.name for f in body.oneofs_by_name["detail"].fields] == [
        "key",
        "record",
        "consent",
        "access",
        "membership",
    ]
