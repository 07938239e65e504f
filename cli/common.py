"""What every ``swiftchain`` command shares: exit codes, consoles, error output, file reading.

Exit codes (DESIGN §3.5): 0 everything holds, 1 something was checked and failed (or a node
could not answer), 2 unreadable input (a missing file, not JSON, the wrong format, a malformed
option) — the same code click uses for usage errors.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Annotated, Final, NoReturn

import typer
from rich.console import Console
from rich.text import Text

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_UNREADABLE: Final = 2

STDIN: Final = "-"

_TARGET = re.compile(r"(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+):(?P<port>[0-9]{1,5})")


class UnreadableInputError(Exception):
    """Input the command cannot read (exit 2); the message says what and why."""


def help_text(*paragraphs: str) -> str:
    """A command's help: paragraphs separated by blank lines (rich help keeps newlines, so each
    paragraph is one string and the terminal wraps it)."""
    return "\n\n".join(paragraphs)


def examples(*commands: str) -> str:
    """An epilog listing example command lines, one a line."""
    return "Examples:\n\n" + "\n".join(f"  $ {c}" for c in commands)


def stdout() -> Console:
    """A console on standard output (made per call, so test runners that swap streams work)."""
    return Console(highlight=False)


def stderr() -> Console:
    """A console on standard error."""
    return Console(stderr=True, highlight=False)


def fail(message: str, code: int = EXIT_FAILED) -> NoReturn:
    """Print ``swiftchain: <message>`` on standard error and exit with ``code``."""
    stderr().print(Text(f"swiftchain: {message}", style="bold red"), soft_wrap=True)
    raise typer.Exit(code)


def read_input(path: Path, what: str) -> bytes:
    """The bytes of ``path`` (``-`` is standard input); :class:`UnreadableInputError` if it
    cannot be read."""
    if str(path) == STDIN:
        return sys.stdin.buffer.read()
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise UnreadableInputError(f"cannot read {what} {path}: no such file") from None
    except IsADirectoryError:
        raise UnreadableInputError(f"cannot read {what} {path}: it is a directory") from None
    except OSError as exc:
        raise UnreadableInputError(f"cannot read {what} {path}: {exc.strerror or exc}") from None


def write_output(path: Path, data: bytes, what: str) -> None:
    """Write ``data`` to ``path`` (exit 1 with a message if that fails)."""
    try:
        path.write_bytes(data)
    except OSError as exc:
        fail(f"cannot write {what} {path}: {exc.strerror or exc}")


def check_target(value: str) -> str:
    """Validate a ``HOST:PORT`` option (typer callback; a bad one is a usage error, exit 2)."""
    match = _TARGET.fullmatch(value)
    if match is None or not 0 < int(match["port"]) < 65536:
        raise typer.BadParameter(f"expected HOST:PORT (e.g. 127.0.0.1:50061), got {value!r}")
    return value


NodeOption = Annotated[
    str,
    typer.Option(
        "--node",
        metavar="HOST:PORT",
        help="A chain node's gRPC address (any member's node serves the same log).",
        callback=check_target,
        show_default=False,
    ),
]
"""The ``--node HOST:PORT`` option of every command that talks to a chain node."""
