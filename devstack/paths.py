"""Where the local stack keeps downloads, builds, data and logs (all under the git-ignored
``.stack/`` folder at the repository root)."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Callable, Iterator
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


@contextlib.contextmanager
def file_lock(path: Path, *, on_wait: Callable[[], None] | None = None) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if missing), so that two processes (two
    test runs, ``make up`` and a test run) never download or build into the same folder at once.
    ``on_wait`` is called once if another process holds the lock."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait is not None:
                on_wait()
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
