"""(another host) Subscribe to TOPIC's quotes on the sim feed daemon
registered at HOST:PORT; print ``subscribed`` after the first quote, then
read until the subscription fails and print one JSON line naming the
error.  With ``reopen``, then subscribe again (retrying for up to 90 s:
the daemon may be restarting, the link healing) and print a second JSON
line once a quote arrives.  Usage: feed_until_gone.py HOST PORT TOPIC [reopen]"""

import json
import sys

import trio

import feedbus
from tractor_sampler import feedd_name
from tractor_services import compat


async def subscribe(addr, topic, first_only: bool) -> None:
    async with compat.find_actor(feedd_name('sim'), addr) as portal:
        if portal is None:
            raise LookupError('no feed daemon registered')
        async with feedbus.open_feed(portal, [topic]) as feed:
            async for _ in feed:
                if first_only:
                    return
                print('subscribed', flush=True)
                async for _ in feed:
                    pass
    raise RuntimeError('the subscription ended without an error')


async def main(host: str, port: int, topic: str, reopen: bool) -> None:
    addr = (host, port)
    async with compat.open_root_actor(addr, 'feed_client', loglevel='critical'):
        try:
            with trio.fail_after(120):
                await subscribe(addr, topic, first_only=False)
        except Exception as err:
            print(
                json.dumps({'error': type(err).__name__, 'message': str(err)}),
                flush=True,
            )
        if not reopen:
            return
        last = None
        with trio.move_on_after(90):
            while True:
                try:
                    with trio.fail_after(20):
                        await subscribe(addr, topic, first_only=True)
                except Exception as err:
                    last = f'{type(err).__name__}: {err}'
                    await trio.sleep(0.5)
                else:
                    print(json.dumps({'reopened': True}), flush=True)
                    return
        print(json.dumps({'reopened': False, 'last': last}), flush=True)


if __name__ == '__main__':
    trio.run(
        main, sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4:] == ['reopen']
    )
