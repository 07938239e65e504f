"""``swiftchain config ...``: the CLI's own settings; today, the pinned consortium file.

``pin FILE`` records the file's path and SHA-256 (:mod:`cli.pinned_consortium`), after which
``swiftchain verify`` and ``swiftchain anchor`` check evidence against it without
``--consortium``; ``show`` says what is pinned and whether the file is still the one pinned;
``unpin`` forgets it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from chain.errors import SwiftchainError, VerificationError
from cli import pinned_consortium
from cli.common import EXIT_FAILED, EXIT_UNREADABLE, examples, fail, help_text, stdout
from cli.pinned_consortium import PinnedConsortium

app = typer.Typer(
    help="The CLI's settings: the consortium file that evidence is checked against.",
    no_args_is_help=True,
    rich_markup_mode="rich",
)


def _facts(pinned: PinnedConsortium) -> str:
    config = pinned.config
    return (
        f"origin {config.origin}, members {', '.join(m.name for m in config.members)}, "
        f"quorum {config.quorum}; SHA-256 {pinned.sha256}"
    )


@app.command(
    "pin",
    help=help_text(
        "Pin a consortium file: `swiftchain verify` and `swiftchain anchor` check evidence "
        "against it when no --consortium is given.",
        "Records the file's absolute path and SHA-256 in the CLI's config "
        f"(${pinned_consortium.CONFIG_DIR_ENV}/{pinned_consortium.CONFIG_FILE}, else "
        "~/.config/swiftchain/config.json). If the file's bytes change later, commands refuse "
        "it until it is pinned again: check where a new consortium file came from before you "
        "pin it.",
        "Exit status: 0 pinned, 2 if the file cannot be read or is not a "
        "swiftchain-consortium/v1 file.",
    ),
    epilog=examples(
        "swiftchain config pin consortium.json",
        "swiftchain verify receipt.json",
    ),
    no_args_is_help=True,
)
def pin(
    consortium: Annotated[
        Path,
        typer.Argument(metavar="FILE", help="A swiftchain-consortium/v1 file.", show_default=False),
    ],
) -> None:
    """Pin a consortium file (see ``help`` above)."""
    try:
        pinned = pinned_consortium.pin(consortium)
    except SwiftchainError as exc:
        fail(str(exc), EXIT_UNREADABLE)
    stdout().print(
        Text(f"pinned {pinned.path}: {_facts(pinned)}; in {pinned_consortium.config_path()}"),
        soft_wrap=True,
    )


@app.command(
    "show",
    help=help_text(
        "Show the pinned consortium file and check that it is still the one pinned.",
        "Exit status: 0 if a file is pinned and unchanged, 1 if it changed since it was "
        "pinned, 2 if none is pinned or the file or the config cannot be read.",
    ),
    epilog=examples("swiftchain config show"),
)
def show() -> None:
    """Show the pinned consortium (see ``help`` above)."""
    try:
        recorded = pinned_consortium.read_pin()
        if recorded is None:
            fail(
                f"no consortium file is pinned in {pinned_consortium.config_path()}; pin one "
                f"with `{pinned_consortium.PIN_COMMAND}`",
                EXIT_UNREADABLE,
            )
        pinned = pinned_consortium.load_pin(recorded)
    except VerificationError as exc:
        fail(str(exc), EXIT_FAILED)
    except SwiftchainError as exc:
        fail(str(exc), EXIT_UNREADABLE)
    stdout().print(Text(f"pinned {pinned.path}: {_facts(pinned)}"), soft_wrap=True)


@app.command(
    "unpin",
    help=help_text(
        "Forget the pinned consortium file: commands then need --consortium FILE again.",
        "Exit status: 0 (also when nothing was pinned), 2 if the config cannot be read.",
    ),
    epilog=examples("swiftchain config unpin"),
)
def unpin() -> None:
    """Forget the pinned consortium (see ``help`` above)."""
    try:
        was = pinned_consortium.unpin()
    except SwiftchainError as exc:
        fail(str(exc), EXIT_UNREADABLE)
    if was is None:
        stdout().print("no consortium file was pinned")
    else:
        stdout().print(Text(f"unpinned {was.path}"), soft_wrap=True)
