"""Cursor paging for every list and trail RPC: opaque tokens bound to the filter they page.

A page token names the last item a caller was given (its position in the listing's sort order,
e.g. ``(time, entry_id)``) and a fingerprint of the filter it was given under. The next page
starts strictly after that item, so items inserted while a caller pages are neither repeated
nor skipped (an offset would shift under them); a token presented with a different filter is
refused, since its position means nothing there.

Tokens are not secret and not signed: the query behind them still applies the caller's
authorization, so a forged position can only skip items the caller may see anyway.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from typing import Final

from chain.errors import InvalidInputError

__all__ = ["Position", "filter_key", "page_after", "page_size", "page_token"]

#: One item's place in a listing's sort order: its sort key values, most significant first.
Position = tuple[str | int, ...]

_VERSION: Final = 1
_MAX_TOKEN_CHARS: Final = 2048


def filter_key(*parts: object) -> str:
    """A short fingerprint of a listing's name and filter (anything JSON can encode, with
    ``str`` for the rest): two requests page the same listing only if their keys match."""
    canonical = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:24]


def page_token(position: Position, key: str) -> str:
    """The ``next_page_token`` for a listing (``key`` from :func:`filter_key`) whose last item
    returned was at ``position``."""
    body = json.dumps({"v": _VERSION, "f": key, "after": list(position)}, separators=(",", ":"))
    return base64.urlsafe_b64encode(body.encode()).decode().rstrip("=")


def page_after(token: str, key: str, arity: int) -> Position | None:
    """The position a ``page_token`` continues after (None for '', the first page).

    Raises InvalidInputError for a token that is not one of ours, one of another filter
    (``key``), or one whose position does not have ``arity`` values.
    """
    if not token:
        return None
    if len(token) > _MAX_TOKEN_CHARS:
        raise InvalidInputError(
            f"expected a page token of at most {_MAX_TOKEN_CHARS} characters, got {len(token)}"
        )
    try:
        body = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        body = None
    after = body.get("after") if isinstance(body, dict) else None
    if (
        not isinstance(body, dict)
        or body.get("v") != _VERSION
        or not isinstance(after, list)
        or len(after) != arity
        or not all(isinstance(v, str | int) and not isinstance(v, bool) for v in after)
    ):
        raise InvalidInputError(
            f"expected a page token from a previous response, got {token[:80]!r}"
        )
    if body.get("f") != key:
        raise InvalidInputError(
            "expected the page token to be used with the filter it was issued for, "
            "got it with a different filter: start again without a page token"
        )
    return tuple(after)


def page_size(requested: int, default: int, maximum: int) -> int:
    """The page size to use: ``default`` for 0; InvalidInputError outside 0..``maximum``."""
    if requested < 0 or requested > maximum:
        raise InvalidInputError(f"expected a page size from 0 to {maximum:,}, got {requested}")
    return requested or default
