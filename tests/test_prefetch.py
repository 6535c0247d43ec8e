"""The prefetching pipeline: order, overlap with the consumer, errors in place, early exit."""

from __future__ import annotations

import threading

import pytest

from reward.prefetch import prefetched


def test_order_and_values() -> None:
    assert list(prefetched(lambda x: x * x, range(7))) == [0, 1, 4, 9, 16, 25, 36]
    assert list(prefetched(lambda x: x + 1, [], depth=2)) == []
    assert list(prefetched(str, range(3), depth=0)) == ["0", "1", "2"]
    with pytest.raises(ValueError, match="depth must be >= 0"):
        list(prefetched(str, range(3), depth=-1))


def test_next_item_is_prepared_while_the_current_one_is_used() -> None:
    second_started = threading.Event()

    def prepare(item: int) -> int:
        if item == 1:
            second_started.set()
        return item

    for item in prefetched(prepare, range(3)):
        if item == 0:
            # Still holding item 0: item 1 must be under preparation in the background already.
            assert second_started.wait(timeout=10)


def test_errors_surface_at_their_item_and_early_exit_stops() -> None:
    def prepare(item: int) -> int:
        if item == 2:
            raise RuntimeError("bad item 2")
        return item

    seen = []
    with pytest.raises(RuntimeError, match="bad item 2"):
        for item in prefetched(prepare, range(5)):
            seen.append(item)
    assert seen == [0, 1]
    calls = []

    def counting(item: int) -> int:
        calls.append(item)
        return item

    for item in prefetched(counting, range(100)):
        if item == 3:
            break
    assert max(calls) <= 5
