"""``swiftchain node ...``: a chain node's own state."""

from __future__ import annotations

import json
from datetime import UTC
from typing import Annotated

import grpc
import typer
from google.protobuf.json_format import MessageToDict
from rich.table import Table
from rich.text import Text

from cli.common import NodeOption, examples, fail, help_text, stdout
from cli.grpc_client import CALL_TIMEOUT, TlsDirOption, chain_stub, rpc_error_message
from swiftchain.chain.v1 import chain_service_pb2 as pb

app = typer.Typer(
    help="A chain node's own state: progress, lag, pending entries, alarms.",
    no_args_is_help=True,
    rich_markup_mode="rich",
)


@app.command(
    "status",
    help=help_text(
        "Show a node's progress and health.",
        "Applied and end offsets of the ordering topic (the lag), tree size, height, pending "
        "entries, unsealed blocks, rejected entries, alarms and the latest sealed checkpoint. "
        "Exits 1 if the node cannot be reached.",
    ),
    epilog=examples(
        "swiftchain node status --node 127.0.0.1:50061",
        "swiftchain node status --node 127.0.0.1:50061 --json | jq .treeSize",
    ),
    no_args_is_help=True,
)
def status(
    node: NodeOption,
    tls_dir: TlsDirOption = None,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print the status as JSON (for scripts).")
    ] = False,
) -> None:
    """Show a node's status (see ``help`` above)."""
    try:
        with chain_stub(node, tls_dir) as stub:
            response = stub.GetNodeStatus(pb.GetNodeStatusRequest(), timeout=CALL_TIMEOUT)
    except grpc.RpcError as error:
        fail(rpc_error_message(node, error))
    if json_output:
        typer.echo(
            json.dumps(MessageToDict(response, always_print_fields_with_no_presence=True), indent=2)
        )
        return
    table = Table(title=f"Node {response.node}", title_justify="left", show_header=False)
    table.add_column(style="dim")
    table.add_column()
    lag = max(response.end_offset - response.applied_offset, 0)
    rows: list[tuple[str, Text]] = [
        ("origin", Text(response.origin)),
        (
            "ordering offsets",
            Text(
                f"applied {response.applied_offset} of {response.end_offset} (lag {lag})",
                style="yellow" if lag else "",
            ),
        ),
        ("tree size", Text(str(response.tree_size))),
        ("height", Text(str(response.height))),
        ("pending entries", Text(str(response.pending_entries))),
        ("unsealed blocks", Text(str(response.unsealed_blocks))),
        ("rejected entries", Text(str(response.rejected_entries))),
        (
            "alarms",
            Text(str(response.alarm_count), style="bold red" if response.alarm_count else ""),
        ),
    ]
    if response.HasField("oldest_pending_time"):
        oldest = response.oldest_pending_time.ToDatetime(tzinfo=UTC).isoformat()
        rows.append(("oldest pending", Text(oldest)))
    if response.HasField("last_sealed"):
        sealed = response.last_sealed
        cut = sealed.cut_time.ToDatetime(tzinfo=UTC).isoformat(timespec="milliseconds")
        rows.append(
            (
                "last sealed",
                Text(
                    f"tree size {sealed.tree_size}, height {sealed.height}, "
                    f"root {sealed.root_hash.hex()[:16]}…, cut {cut}, "
                    f"signed by {', '.join(sealed.signers)}"
                ),
            )
        )
    else:
        rows.append(("last sealed", Text("nothing sealed yet", style="yellow")))
    for label, value in rows:
        table.add_row(label, value)
    stdout().print(table)
