"""The ``swiftchain`` command line: one typer app with a group per area.

Commands live in their own modules and are registered here: ``verify`` (offline), the
``chain`` and ``node`` groups (talk to a chain node), ``identity`` (organizations, keys,
certificates, patient devices), ``anchor`` (a hospital anchors a document version),
``config`` (the pinned consortium file) and ``consortium`` (the genesis ceremony). The
``consent`` and ``audit`` groups are added the same way: a module with a ``typer.Typer`` and
one ``app.add_typer`` line below.

Run it as ``swiftchain``, ``python -m cli`` or ``python -m cli.main``.
"""

from __future__ import annotations

import os
import sys

import typer

from cli import (
    anchor_command,
    audit_commands,
    chain_commands,
    config_commands,
    consent_commands,
    consortium_commands,
    identity_commands,
    node_commands,
    patient_commands,  # noqa: F401  (adds the patients' commands to `identity`)
    verify_command,
)
from cli.common import EXIT_FAILED

app = typer.Typer(
    name="swiftchain",
    help="Swiftchain Health: verify evidence offline and talk to the consortium log.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)

app.command(
    "verify",
    help=verify_command.HELP,
    epilog=verify_command.EPILOG,
    no_args_is_help=True,
)(verify_command.verify)
app.add_typer(chain_commands.app, name="chain")
app.add_typer(node_commands.app, name="node")
app.add_typer(identity_commands.app, name="identity")
app.add_typer(consent_commands.app, name="consent")
app.add_typer(audit_commands.app, name="audit")
app.add_typer(config_commands.app, name="config")
app.add_typer(consortium_commands.app, name="consortium")
app.command("anchor", help=anchor_command.HELP, epilog=anchor_command.EPILOG, no_args_is_help=True)(
    anchor_command.anchor
)


def main() -> None:
    """Entry point of the ``swiftchain`` console script. Never shows a traceback, unless
    ``SWIFTCHAIN_DEBUG`` is set."""
    try:
        app()
    except Exception as exc:
        if os.environ.get("SWIFTCHAIN_DEBUG"):
            raise
        print(
            f"swiftchain: unexpected error: {type(exc).__name__}: {exc} "
            "(set SWIFTCHAIN_DEBUG=1 to see where)",
            file=sys.stderr,
        )
        sys.exit(EXIT_FAILED)


if __name__ == "__main__":
    main()
