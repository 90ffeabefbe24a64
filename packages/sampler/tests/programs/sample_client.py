"""A separate program: open a sample stream on the tree at HOST:PORT
(samplerd is found, or spawned, through the registry) and print the
steps it reads as one JSON line.  Usage: sample_client.py HOST PORT N"""

import json
import sys

import trio

from tractor_sampler import Step, open_sample_stream
from tractor_services import compat


async def main(host: str, port: int, n: int) -> None:
    async with compat.open_root_actor((host, port), 'sample_client'):
        async with open_sample_stream(0.1, registry_addr=(host, port)) as ss:
            steps = []
            async for msg in ss:
                if isinstance(msg, Step):
                    steps.append(msg.time)
                    if len(steps) == n:
                        break
    print(json.dumps({'steps': steps}), flush=True)


if __name__ == '__main__':
    trio.run(main, sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
