"""Where the CLI looks when neither an option nor an environment variable says: the folders of
the local stack that ``make up`` runs (``.stack/run/`` at the repository root, or under
``$SWIFTCHAIN_STACK_DIR``). On a developer's machine that spares every command its
``--tls-dir`` and ``--tag-key``; an installed CLI finds no such folders and is told instead.

The local stack (devstack) takes these folders from here, so that it writes where the CLI
reads; the CLI never imports devstack, which hospitals and regulators do not install.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

STACK_DIR_ENV: Final = "SWIFTCHAIN_STACK_DIR"
"""Environment variable that moves the local stack's folder away from ``.stack/``."""

ADMIN: Final = "consortium-admin"
"""Name of the consortium admin's TLS folder in the local stack's PKI (``pki/<name>``)."""

#: The folder holding ``cli/``: the repository root in a checkout.
_SOURCE_ROOT = Path(__file__).resolve().parent.parent


def stack_dir() -> Path:
    """``.stack/`` at the repository root, or ``$SWIFTCHAIN_STACK_DIR`` when set."""
    override = os.environ.get(STACK_DIR_ENV)
    return Path(override).resolve() if override else _SOURCE_ROOT / ".stack"


def run_dir() -> Path:
    """Runtime data and logs of ``make up`` (``.stack/run/``); tests use temp dirs instead."""
    return stack_dir() / "run"


def local_admin_tls_dir() -> Path:
    """The local stack's consortium-admin TLS folder (``.stack/run/pki/consortium-admin``)."""
    return run_dir() / "pki" / ADMIN


def local_consortium_dir() -> Path:
    """The local stack's consortium files: config, keys, tag key (``.stack/run/consortium``)."""
    return run_dir() / "consortium"
