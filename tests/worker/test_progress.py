"""What the worker counts as processed in a partition: the base of its lag gauge and of ticking."""

from __future__ import annotations

from pipeline.worker.app import processed_offset


def test_the_further_of_processed_and_committed() -> None:
    assert processed_offset(120, 100) == 120  # processed, not yet committed
    assert processed_offset(None, 100) == 100  # a new owner, nothing handled yet
    assert processed_offset(90, 100) == 100  # a seek back to before the commit
    assert processed_offset(None, None) is None
    assert processed_offset(None, -1) is None  # Faust's "no committed offset"
