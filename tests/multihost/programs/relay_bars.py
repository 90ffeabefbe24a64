"""(host b) Opens SYMBOL of the ``relay`` backend on the joined host LABEL
(the quotes from the registry host's ``feedd.sim``, the bars built and
stepped on LABEL), records the trades of the source feed daemon itself
meanwhile, and prints one JSON line: the bars' buffer type, the source's
buffers (none: quotes only), and whether every whole closed 1 s bar of
the relay equals the bar built from the recorded trades (after the
corrections settle; ``equal`` false after 60 s).
Usage: relay_bars.py HOST PORT LABEL SYMBOL"""

import json
import math
import sys

import trio

import feedbus
from tractor_sampler import open_market_feed
from tractor_sampler.backends.relay import _attached, open_source
from tractor_services import compat

FAST = {'tick_rate': 100, 'trade_prob': 0.5}
FIELDS = ('open', 'high', 'low', 'close', 'volume')


def reference_bars(trades):
    bars = {}
    for t, price, size in trades:
        k = math.floor(t)
        b = bars.get(k)
        if b is None:
            bars[k] = [price, price, price, price, size]
        else:
            b[1], b[2] = max(b[1], price), min(b[2], price)
            b[3] = price
            b[4] += size
    return bars


def close(a, b):
    return all(abs(x - y) <= 1e-9 * max(1.0, abs(y)) for x, y in zip(a, b, strict=True))


async def main(host: str, port: int, label: str, symbol: str) -> None:
    addr = (host, port)
    out = {}
    async with compat.open_root_actor(addr, 'relay_bars', loglevel='critical'):
        async with open_market_feed(
            [symbol],
            backend='relay',
            config={'source': 'sim', 'source_config': FAST},
            buffers={1.0: 512},
            registry_addr=addr,
            feed_host=label,
        ) as feed:
            out['feed'] = feed.portal.channel.uid[0]
            buf = feed.buffer(symbol, 1.0)
            out['bars'] = type(buf).__name__
            trades = []
            async with open_source('sim', None) as portal:
                out['source'] = portal.channel.uid[0]
                async with _attached(portal, [symbol], FAST) as (_, started):
                    out['source_buffers'] = started['topics'][symbol]['buffers']
                async with feedbus.open_feed(portal, [symbol]) as quotes:
                    with trio.fail_after(90):
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
            ks = sorted(ref)[1:-1]  # whole bars only
            out['compared'] = len(ks)
            out['equal'] = False
            with trio.move_on_after(60):
                while True:
                    got = {}
                    for r in buf.array[:-1]:  # closed rows
                        k = int(round(float(r['time'])))
                        if k in ref:
                            got[k] = [float(r[f]) for f in FIELDS]
                    if all(k in got and close(got[k], ref[k]) for k in ks):
                        out['equal'] = True
                        break
                    await trio.sleep(0.1)
            if not out['equal']:
                out['diff'] = {k: [got.get(k), ref[k]] for k in ks}
    print(json.dumps(out), flush=True)


if __name__ == '__main__':
    trio.run(main, sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4])
