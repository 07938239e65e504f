"""Where the local stack keeps downloads, builds, data and logs (all under the git-ignored
``.stack/`` folder at the repository root)."""

from __future__ import annotations

import os
from pathlib import Path

#: The repository root (the folder holding ``devstack/``).
REPO_ROOT = Path(__file__).resolve().parent.parent


def stack_dir() -> Path:
    """``.stack/`` at the repository root, or ``$SWIFTCHAIN_STACK_DIR`` when set."""
    override = os.environ.get("SWIFTCHAIN_STACK_DIR")
    return Path(override).resolve() if override else REPO_ROOT / ".stack"


def cache_dir() -> Path:
    """Downloads and builds shared by every run (``.stack/cache/``)."""
    return stack_dir() / "cache"


def run_dir() -> Path:
    """Runtime data and logs of ``make up`` (``.stack/run/``); tests use temp dirs instead."""
    return stack_dir() / "run"
