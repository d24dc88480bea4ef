"""Waiting for a condition on the run's clock."""

from __future__ import annotations

from collections.abc import Callable

import trio


async def wait_for(
    predicate: Callable[[], bool], *, within: float = 3600.0, poll: float = 0.05
) -> None:
    """Poll a condition on the run's clock (MockClock in most tests). On a MockClock each
    poll is a wake-up of the run, so long waits poll coarsely."""
    with trio.fail_after(within):
        while not predicate():
            await trio.sleep(poll)
