"""A chaos-suite client: N subscribe/leave cycles on TOPIC of the sim
feed at HOST:PORT, from one program, and one JSON line with what happened.

Usage: churn_client.py HOST PORT TOPIC N

The cycles run in ``CONCURRENCY`` loops at once (subscribers joining while
others leave).
Every 50th cycle is a whole ``tractor_sampler.open_market_feed`` (attach the
buffers, subscribe to quotes and status, leave); the others subscribe to
the feed daemon's bus directly (``feedbus.open_feed`` on its portal), a
new IPC context each time.  Each cycle waits for one quote before it
leaves, so every subscription is a real one."""

import json
import sys
import time

import trio

import feedbus
from tractor_sampler import feedd_name, open_market_feed
from tractor_services import compat

FULL_EVERY = 50
CONCURRENCY = 4


def _describe(exc):
    err = compat.unwrap_error(exc)
    remote = compat.remote_error_type(err)
    if remote is not None:
        return f'{remote}: {compat.remote_error_message(err)}'
    return f'{type(err).__name__}: {err}'


async def cycles(addr, portal, topic, ids, errors, done):
    for i in ids:
        if len(errors) >= 20:
            return
        try:
            with trio.fail_after(30):
                if i % FULL_EVERY == 0:
                    async with open_market_feed(
                        [topic], 'sim', registry_addr=addr
                    ) as feed:
                        async for _ in feed:
                            break
                else:
                    async with feedbus.open_feed(
                        portal,
                        [topic],
                        tick_throttle=(50.0 if i % 2 else None),
                        watch_producer=False,
                    ) as feed:
                        async for _ in feed:
                            break
            done.append(i)
        except Exception as exc:
            errors.append(f'cycle {i}: {_describe(exc)}')


async def main(host, port, topic, n):
    addr = (host, port)
    errors = []
    done = []
    t0 = time.monotonic()
    async with compat.open_root_actor(addr, 'chaos_churn'):
        async with compat.find_actor(feedd_name('sim'), addr) as portal:
            assert portal is not None, 'the feed daemon is not running'
            # CONCURRENCY subscribers come and go at once, each in a loop
            async with trio.open_nursery() as tn:
                for k in range(CONCURRENCY):
                    tn.start_soon(
                        cycles,
                        addr,
                        portal,
                        topic,
                        range(k, n, CONCURRENCY),
                        errors,
                        done,
                    )
    print(
        json.dumps(
            {'cycles': len(done), 'elapsed': time.monotonic() - t0, 'errors': errors}
        ),
        flush=True,
    )


if __name__ == '__main__':
    trio.run(main, sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]))
