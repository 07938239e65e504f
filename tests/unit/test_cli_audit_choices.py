"""The CLI's ``swiftchain audit flags --kind`` takes every flag kind the audit service raises,
so a new kind is never one a regulator cannot filter on."""

from __future__ import annotations

from cli.audit_commands import FlagKindChoice
from swiftchain.audit.v1 import audit_service_pb2 as pb


def test_every_flag_kind_has_a_cli_choice() -> None:
    kinds = {
        name.removeprefix("FLAG_KIND_").lower().replace("_", "-")
        for name in (value.name for value in pb.FlagKind.DESCRIPTOR.values)
        if name != "FLAG_KIND_UNSPECIFIED"
    }
    assert kinds == {choice.value for choice in FlagKindChoice}
