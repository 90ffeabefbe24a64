"""A separate program attached to the tree at HOST:PORT until it ends:
``feed`` (open_market_feed of AAA) or ``samples`` (open_sample_stream of 1 s
steps).  Prints ``attached`` once reading, then how the block ended:
``ended silently`` (exit 0: what a5 alone does when the daemon stops), or
``ended by <type>: <message>`` (exit 2) for a PeerGone.
Usage: ending_client.py HOST PORT feed|samples"""

import sys

import trio

from tractor_sampler import open_market_feed, open_sample_stream
from tractor_services import PeerGone, compat


async def read_feed(addr) -> None:
    async with open_market_feed(['AAA'], registry_addr=addr) as feed:
        print('attached', flush=True)
        async for _ in feed:
            pass


async def read_samples(addr) -> None:
    async with compat.open_root_actor(addr, 'ending_client'):
        async with open_sample_stream(1.0, registry_addr=addr) as ss:
            print('attached', flush=True)
            async for _ in ss:
                pass


async def main(host: str, port: int, what: str) -> int:
    reader = {'feed': read_feed, 'samples': read_samples}[what]
    try:
        await reader((host, port))
    except BaseException as exc:
        err = compat.unwrap_error(exc)  # a5 may wrap it in a group
        if not isinstance(err, PeerGone):
            raise
        print(f'ended by {type(err).__name__}: {err}', flush=True)
        return 2
    print('ended silently', flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(trio.run(main, sys.argv[1], int(sys.argv[2]), sys.argv[3]))
