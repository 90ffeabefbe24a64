"""Quotes on a, bars on b (issue #13 item 5): the ``relay`` backend takes
a topic's quotes from a quotes-only feed daemon (no bars, no samplerd
needed there) and builds the bars itself, stepped by its own tree's
samplerd.  On one host, in one tree: feedd.relay relays feedd.sim;
tests/multihost/test_bars_on_b.py runs it across hosts."""

from __future__ import annotations

import functools
import math

import pytest
import trio

import feedbus
from tractor_sampler import open_market_feed
from tractor_sampler._feedd import check_feedd_buffers, feedd, feedd_name
from tractor_sampler._introspect import query_feed
from tractor_sampler.backends.relay import _attached, open_source
from tractor_services import maybe_spawn_daemon, open_service_root

FAST = {'tick_rate': 100, 'trade_prob': 0.5}
RELAY = {'source': 'sim', 'source_config': FAST}


def reference_bars(trades: list[tuple[float, float, float]]) -> dict[int, tuple]:
    """1 s bars (open, high, low, close, volume) built from ``trades``
    (time, price, size) in arrival order: the rule every writer follows."""
    bars: dict[int, list] = {}
    for t, price, size in trades:
        k = math.floor(t)
        b = bars.get(k)
        if b is None:
            bars[k] = [price, price, price, price, size]
        else:
            b[1], b[2] = max(b[1], price), min(b[2], price)
            b[3] = price
            b[4] += size
    return {k: tuple(v) for k, v in bars.items()}


def test_quotes_only_buffers():
    assert check_feedd_buffers({}) == {}
    assert check_feedd_buffers({1.0: 64})  # the usual form still checked
    with pytest.raises(ValueError):
        check_feedd_buffers([])


async def test_relayed_bars_equal_bars_built_from_the_same_trades(other_addr):
    async with open_service_root(other_addr):
        async with open_market_feed(
            ['AAA'], backend='relay', config=RELAY, buffers={1.0: 512}
        ) as feed:
            # the source: quotes only (no buffers), and no samplerd was
            # asked for by it (samplerd runs for the relay's bars)
            async with open_source('sim', None) as portal:
                async with _attached(portal, ['AAA'], FAST) as (_, started):
                    assert started['topics']['AAA']['buffers'] == {}
                trades: list[tuple[float, float, float]] = []
                buf = feed.buffer('AAA', 1.0)
                async with feedbus.open_feed(portal, ['AAA']) as quotes:
                    with trio.fail_after(60):
                        async for q in quotes:
                            if not isinstance(q, feedbus.Quote):
                                continue
                            for tk in q.ticks or ():
                                if tk.get('type') == 'trade':
                                    trades.append(
                                        (float(tk['time']), tk['price'], tk['size'])
                                    )
                            if trades and trades[-1][0] >= math.floor(trades[0][0]) + 6:
                                break
            ref = reference_bars(trades)
            # whole bars only: the first recorded one may have begun before
            # the recording, the last is still open
            ks = sorted(ref)[1:-1]
            assert len(ks) >= 4

            def relayed() -> dict[int, tuple]:
                rows = buf.array
                out = {}
                for r in rows[:-1]:  # closed rows
                    k = int(round(float(r['time'])))
                    if k in ref:
                        out[k] = tuple(
                            float(r[f])
                            for f in ('open', 'high', 'low', 'close', 'volume')
                        )
                return out

            # closed rows after their corrections settle (a trade arriving
            # after the step is placed into its closed bar)
            with trio.fail_after(30):
                while True:
                    got = relayed()
                    if all(k in got and got[k] == pytest.approx(ref[k]) for k in ks):
                        break
                    await trio.sleep(0.1)


async def test_a_trade_arriving_after_its_bar_closed_is_placed_in_that_bar(other_addr):
    """The ``late`` source (late_backends.py) sends, for every other second
    k, a trade timed k + 0.7 only at k + 1.9: after b's step closed bar k.
    The relay places it into bar k (a correction, counted late), so every
    closed bar is the bar of its trades: open and low the on-time trade,
    high and close the late one, volume both."""
    async with open_service_root(other_addr):
        async with (
            # the source, quotes-only, with the test plugin loaded
            maybe_spawn_daemon(
                feedd_name('late'),
                functools.partial(
                    feedd, backend='late', buffers={}, plugins=['late_backends']
                ),
            ),
            open_market_feed(
                ['AAA'], backend='relay', config={'source': 'late'}, buffers={1.0: 256}
            ) as feed,
        ):
            buf = feed.buffer('AAA', 1.0)

            def full_bars() -> list:
                rows = buf.array[:-1]  # closed rows
                return [r for r in rows if float(r['volume']) == 3.0]

            late = 0
            with trio.fail_after(60):
                while len(full_bars()) < 3 or late < 1:
                    await trio.sleep(0.2)
                    info = await query_feed(feed.portal)
                    late = info.topics['AAA'].bars.late
            for r in full_bars():
                k = int(round(float(r['time'])))
                assert (
                    float(r['open']),
                    float(r['high']),
                    float(r['low']),
                    float(r['close']),
                ) == (100.0 + k % 50, 200.0 + k % 50, 100.0 + k % 50, 200.0 + k % 50)
            # no bar got a late trade instead of its own: every traded bar
            # between the first and the last full one is full (the quotes
            # arrive in order, so the earlier late trades are placed too)
            full = full_bars()
            first, last = int(full[0]['index']), int(full[-1]['index'])
            traded = [
                r
                for r in buf.array
                if first <= int(r['index']) <= last and r['volume'] > 0
            ]
            assert all(float(r['volume']) == 3.0 for r in traded), traded


async def test_the_source_going_away_makes_the_relay_restarting_then_up(other_addr):
    """The source feed daemon stopped: the relay's quote stream ends, its
    topic is ``restarting``, and its restart starts the source again
    (quotes-only): ``up``, with trades reaching the same buffer."""
    async with open_service_root(other_addr) as mngr:
        async with (
            open_market_feed(
                ['AAA'], backend='relay', config=RELAY, buffers={1.0: 256}
            ) as feed,
            feed.status.open_reader() as reports,
        ):
            buf = feed.buffer('AAA', 1.0)
            await mngr.cancel_service('feedd.sim')
            with trio.fail_after(60):
                while (await reports.receive()).state != 'restarting':
                    pass
            # the relay's restart starts the source again: quotes, trades
            # and the topic up, into the same buffer
            before = (await feed.info()).topics['AAA'].bars.trades
            with trio.fail_after(60):
                while True:
                    t = (await feed.info()).topics['AAA']
                    if t.state == 'up' and t.bars.trades > before:
                        break
                    await trio.sleep(0.1)
            assert mngr.info('feedd.sim').state == 'running'
            assert feed.buffer('AAA', 1.0) is buf
