"""Bounded waits that always let a cancel through.

On Python 3.11 `asyncio.wait_for` swallows a cancel that arrives in the same turn as the thing it
waits for completes (CPython gh-86296): the waiting task goes on as if never cancelled. A loop
like `while True: await wait_for(event.wait(), poll)` then survives its own `cancel()`, and
whoever awaits it after cancelling (`lakeflow down`, a controller's shutdown) waits forever.
These helpers wait on `asyncio.timeout`, whose cancel bookkeeping does not lose the request; the
package uses them instead of `wait_for` (tests/test_cancellation.py greps for it)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


async def within(awaitable: Awaitable[T], seconds: float | None) -> T:
    """`await awaitable`, raising TimeoutError after `seconds` (None: no limit). On a timeout
    the awaited future or coroutine is cancelled, as with `wait_for`."""
    if seconds is None:
        return await awaitable
    async with asyncio.timeout(max(0.0, seconds)):
        return await awaitable


async def wait_event(event: asyncio.Event, seconds: float | None) -> bool:
    """Wait up to `seconds` (None: no limit) for `event`; whether it is set."""
    if event.is_set():
        return True
    try:
        async with asyncio.timeout(None if seconds is None else max(0.0, seconds)):
            await event.wait()
    except TimeoutError:
        return event.is_set()
    return True
