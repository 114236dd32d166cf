"""Polling with a deadline: the one way tests and the harness wait for a
condition (never a bare sleep as synchronisation)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


def poll(what: str, fn: Callable[[], T], deadline_s: float = 30, interval: float = 0.05,
         errors: tuple[type[BaseException], ...] = (OSError,)) -> T:
    """Call `fn` until it returns something truthy; fail with `what` at the deadline."""
    end = time.monotonic() + deadline_s
    last: object = None
    while time.monotonic() < end:
        try:
            value = fn()
        except errors as exc:
            last = exc
        else:
            last = value
            if value:
                return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


async def poll_async(what: str, fn: Callable[[], Awaitable[T]], deadline_s: float = 10,
                     interval: float = 0.05) -> T:
    """The asyncio form of `poll` for checks that await."""
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline_s
    last: object = None
    while loop.time() < end:
        value = await fn()
        last = value
        if value:
            return value
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


async def cancelled_while_waiting(chunks: AsyncIterator[bytes], waiting: Callable[[], bool], what: str) -> bool:
    """Start reading the next chunk of `chunks`, wait (with a deadline) until `waiting()` says
    the read is parked, cancel it: True when the read ended in `CancelledError`."""
    read = asyncio.ensure_future(anext(chunks))
    loop = asyncio.get_running_loop()
    end = loop.time() + 10
    while not waiting():
        if loop.time() > end:
            read.cancel()
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)
    read.cancel()
    try:
        await read
    except asyncio.CancelledError:
        return True
    return False
