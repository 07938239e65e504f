"""Cursor page tokens (services/platform/paging.py): round trip, and every token refused."""

from __future__ import annotations

import base64
import json

import pytest

from chain.errors import InvalidInputError
from services.platform.paging import filter_key, page_after, page_size, page_token

KEY = filter_key("trail", {"patient": "p-1"})


def test_a_token_round_trips_its_position() -> None:
    token = page_token(("2026-12-07T10:00:00+00:00", "e-1"), KEY)
    assert page_after(token, KEY, 2) == ("2026-12-07T10:00:00+00:00", "e-1")


def test_no_token_is_the_first_page() -> None:
    assert page_after("", KEY, 2) is None


def test_filter_keys_differ_by_filter_and_listing() -> None:
    assert filter_key("trail", {"patient": "p-1"}) == KEY
    assert filter_key("trail", {"patient": "p-2"}) != KEY
    assert filter_key("flags", {"patient": "p-1"}) != KEY


def test_a_token_of_another_filter_is_refused() -> None:
    token = page_token((5, "e-1"), filter_key("trail", {"patient": "p-2"}))
    with pytest.raises(InvalidInputError, match="with the filter it was issued for"):
        page_after(token, KEY, 2)


def _raw(body: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(body).encode()).decode()


@pytest.mark.parametrize(
    "token",
    [
        "not a token",
        "%%%",
        _raw([1, 2]),
        _raw({"v": 2, "f": KEY, "after": [1, "a"]}),
        _raw({"v": 1, "f": KEY, "after": [1]}),
        _raw({"v": 1, "f": KEY, "after": [1, None]}),
        _raw({"v": 1, "f": KEY, "after": [True, "a"]}),
        _raw({"v": 1, "f": KEY, "after": "1,a"}),
    ],
)
def test_a_token_that_is_not_ours_is_refused(token: str) -> None:
    with pytest.raises(InvalidInputError, match="expected a page token from a previous response"):
        page_after(token, KEY, 2)


def test_an_oversized_token_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="at most 2048 characters, got 5000"):
        page_after("a" * 5000, KEY, 2)


def test_page_size_defaults_and_bounds() -> None:
    assert page_size(0, 50, 500) == 50
    assert page_size(7, 50, 500) == 7
    with pytest.raises(InvalidInputError, match="expected a page size from 0 to 500, got 501"):
        page_size(501, 50, 500)
