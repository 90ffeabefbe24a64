"""(another host) Open samplerd's step stream of the root at HOST:PORT for
1 s steps, read N steps, print one JSON line: the address this client
root bound, samplerd's address, and each step's period, time and gap.
Usage: steps.py HOST PORT N"""

import json
import sys

import trio

from tractor_sampler import Step, open_sample_stream
from tractor_services import compat


async def main(host: str, port: int, n: int) -> None:
    addr = (host, port)
    async with compat.open_root_actor(
        addr, 'steps_client', loglevel='critical'
    ) as actor:
        async with compat.find_actor('samplerd', addr) as portal:
            assert portal is not None, 'no samplerd registered'
            samplerd_at = list(portal.channel.raddr)
        got = []
        with trio.fail_after(30):
            async with open_sample_stream(period_s=1.0, registry_addr=addr) as steps:
                async for msg in steps:
                    if isinstance(msg, Step):
                        got.append([msg.period_s, msg.time, msg.gap])
                        if len(got) >= n:
                            break
        print(
            json.dumps(
                {
                    'bound': list(actor.accept_addr),
                    'samplerd': samplerd_at,
                    'steps': got,
                }
            ),
            flush=True,
        )


if __name__ == '__main__':
    trio.run(main, sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
