"""Following a chain node's stream until stopped, whatever fails in between: the one retry loop
of the services that follow sealed checkpoints (anchoring's seal tracker, audit's index)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import grpc

_log = logging.getLogger(__name__)

#: Seconds before following again after the node or the store failed.
RECONNECT_AFTER = 1.0


def follow_until_stopped(
    stop: threading.Event,
    follow_once: Callable[[], None],
    *,
    doing: str,
    retry_after: float = RECONNECT_AFTER,
) -> None:
    """Call ``follow_once`` (one streaming call to a chain node, handling what it yields) again
    and again until ``stop`` is set. When the node fails (a gRPC error) or the local store does
    (any other exception; ``follow_once`` keeps its position, so nothing is lost), log it,
    naming what was being done (``doing``: "recording seals"), and retry after
    ``retry_after`` seconds."""
    while not stop.is_set():
        try:
            follow_once()
        except grpc.RpcError as error:
            if stop.is_set():
                return
            _log.warning(
                "%s: the chain node failed (%s: %s); again in %.0f s",
                doing,
                error.code(),
                getattr(error, "details", lambda: "")(),
                retry_after,
            )
        except Exception:
            _log.warning("%s failed; again in %.0f s", doing, retry_after, exc_info=True)
        stop.wait(retry_after)
