"""feedbus' small primitives are the project's shared ones: the
drop-oldest queue of tractor-services (also compat.SafeStream's buffer),
and one number check, so every rate check refuses the same values."""

from __future__ import annotations

import math
from typing import Any

import pytest
import trio

from feedbus import SubStats
from feedbus._bus import check_outbox_size, check_rate, check_stall_timeout
from feedbus._throttle import Throttler
from feedbus.protocol import Outbox
from tractor_services import compat
from tractor_services._queue import DropOldestQueue


def test_outbox_and_safestream_share_one_queue() -> None:
    assert Outbox is DropOldestQueue
    safe = compat.SafeStream(stream=None, maxlen=4)  # type: ignore[arg-type]
    assert isinstance(safe._buf, DropOldestQueue)


async def test_full_outbox_drops_the_oldest_and_counts_drops_and_overruns() -> None:
    stats = SubStats()
    box = Outbox(3, stats)
    for i in range(5):
        box.put(i)
    assert (stats.dropped, stats.overruns) == (2, 2)
    box.close()
    assert [m async for m in box] == [2, 3, 4]
    with pytest.raises(trio.ClosedResourceError):
        box.put(5)


async def test_safestream_counts_its_drops_in_its_stats() -> None:
    """A burst larger than the buffer: the oldest go, counted; the end of
    the stream reaches the reader after what is kept."""
    send, recv = trio.open_memory_channel[int](10)
    safe = compat.SafeStream(stream=recv, maxlen=3)  # type: ignore[arg-type]
    for i in range(5):
        send.send_nowait(i)
    send.close()
    await safe._pump()
    assert (safe.stats.received, safe.stats.dropped, safe.stats.overruns) == (5, 2, 2)
    assert [m async for m in safe] == [2, 3, 4]


async def test_closed_outbox_hands_over_what_it_holds_then_the_error() -> None:
    box = Outbox(4, SubStats())
    box.put('a')
    box.close(KeyError('gone'))
    assert await box.receive() == 'a'
    with pytest.raises(KeyError):
        await box.receive()


@pytest.mark.parametrize('bad', ['1.5', True, False, 0, -1, math.nan, math.inf, [1]])
def test_every_rate_check_refuses_the_same_values(bad: Any) -> None:
    with pytest.raises(ValueError, match='tick_throttle'):
        check_rate(bad)
    with pytest.raises(ValueError, match='rate'):
        Throttler(bad)
    thr = Throttler(5.0)
    with pytest.raises(ValueError, match='rate'):
        thr.rate = bad
    assert thr.rate == 5.0


@pytest.mark.parametrize('good', [1, 2.5, 1e6])
def test_every_rate_check_takes_the_same_values(good: float) -> None:
    assert check_rate(good) == Throttler(good).rate == float(good)
    assert check_rate(None) is None


@pytest.mark.parametrize('bad', ['1.5', True, 0, -1.0, math.nan, math.inf])
def test_other_number_checks_refuse_text_bools_and_non_positive(bad: Any) -> None:
    with pytest.raises(ValueError, match='stall_timeout'):
        check_stall_timeout(bad)
    with pytest.raises(ValueError, match='outbox_size'):
        check_outbox_size(bad)
    with pytest.raises(ValueError, match='outbox_size'):
        check_outbox_size(2.5)
