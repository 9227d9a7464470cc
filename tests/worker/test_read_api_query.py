"""Parameters of the worker's GET /api/windows (the endpoint itself runs in tests/storage/test_report_worker.py)."""

from __future__ import annotations

import pytest
from multidict import MultiDict

from pipeline.worker.app import MAX_WINDOWS_COMMUNITIES, _windows_query


def test_defaults_and_repeated_communities() -> None:
    assert _windows_query(MultiDict([("community", "a"), ("community", "b"), ("community", "a")])) == (
        ["a", "b"],
        "1h",
        48,
    )
    assert _windows_query(MultiDict([("community", "a"), ("window", "1d"), ("limit", "7")])) == (["a"], "1d", 7)


@pytest.mark.parametrize(
    ("pairs", "reason"),
    [
        ([], "community parameters"),
        ([("community", str(n)) for n in range(MAX_WINDOWS_COMMUNITIES + 1)], "community parameters"),
        ([("community", "a"), ("window", "7d")], "window must be 1h or 1d"),
        ([("community", "a"), ("limit", "0")], "limit must be"),
        ([("community", "a"), ("limit", "-3")], "limit must be"),
        ([("community", "a"), ("limit", "many")], "limit must be"),
    ],
)
def test_bad_parameters_say_why(pairs: list[tuple[str, str]], reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        _windows_query(MultiDict(pairs))
