"""Where the local stack keeps downloads, builds, data and logs (all under the git-ignored
``.stack/`` folder at the repository root).

The folder itself and the runtime folder come from :mod:`cli.defaults`, where the CLI looks for
the local stack by default: the stack writes where the CLI reads.
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Callable, Iterator
from pathlib import Path

from cli.defaults import run_dir as run_dir
from cli.defaults import stack_dir as stack_dir

#: The repository root (the folder holding ``devstack/``).
REPO_ROOT = Path(__file__).resolve().parent.parent


def cache_dir() -> Path:
    """Downloads and builds shared by every run (``.stack/cache/``)."""
    return stack_dir() / "cache"


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
