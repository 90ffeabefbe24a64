"""A separate program: open the feed of TOPIC on the samplerd at HOST:PORT
(its feed daemon is found, or spawned, through the registry), read N
quotes, and print what it saw as one JSON line.
Usage: feed_client.py HOST PORT TOPIC N"""

import json
import sys

import trio

from tractor_sampler import open_market_feed


async def main(host: str, port: int, topic: str, n: int) -> None:
    async with open_market_feed([topic], registry_addr=(host, port)) as feed:
        seqs = []
        async for q in feed:
            seqs.append(q.seq)
            if len(seqs) == n:
                break
        shm = feed.buffer(topic, 1.0)
        info = await feed.info()
        out = {
            'buffers': {p: s.token.shm_name for p, s in feed.buffers[topic].items()},
            'seqs': seqs,
            'last_bar_time': float(shm.last_row['time']),
            'daemon_pid': info.pid,
            'subscribers': len(info.topics[topic].subscribers),
        }
    print(json.dumps(out), flush=True)


if __name__ == '__main__':
    trio.run(main, sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]))
