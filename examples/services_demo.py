"""
tractor-services demo: a root daemon that starts three services, lists
them, survives one being killed, and stops them in reverse start order.

    uv run python examples/services_demo.py [--registry HOST:PORT] [--serve]

With ``--serve`` it keeps running after the demo until Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from functools import partial

import trio

# isort: off
# tractor_services before tractor: it silences tractor 0.1.0a5's
# import-time deprecation warning
from tractor_services import ServiceInfo, open_service_root
import tractor
# isort: on


@tractor.context
async def ticker(ctx: tractor.Context, every_s: float = 0.5) -> None:
    """A daemon that counts; it reports its pid when started."""
    await ctx.started(os.getpid())
    try:
        n = 0
        while True:
            await trio.sleep(every_s)
            n += 1
    finally:
        print(f'  {tractor.current_actor().name} stopped', flush=True)


def show(title: str, infos: list[ServiceInfo]) -> None:
    print(f'\n{title}')
    print(f'  {"name":<10} {"state":<10} {"pid":>7} {"restarts":>8}  last error')
    for i in infos:
        print(
            f'  {i.name:<10} {i.state:<10} {i.pid or "-":>7} {i.restarts:>8}  {i.last_error or ""}'
        )
    sys.stdout.flush()


async def main(registry: str | None, serve: bool) -> None:
    async with open_service_root(registry) as mngr:
        host, port = mngr.registry_addr
        print(f'service root ready: registry at {host}:{port}', flush=True)

        await mngr.start_service('quotes', ticker, restart='permanent')
        await mngr.start_service(
            'orders', partial(ticker, every_s=0.2), restart='transient'
        )
        await mngr.start_service('reports', ticker)  # temporary: never restarted
        show('services started:', await mngr.list_services())

        victim = mngr.info('quotes').pid
        print(f'\nkilling quotes (pid {victim}) with SIGKILL...', flush=True)
        os.kill(victim, signal.SIGKILL)
        with trio.fail_after(30):
            await mngr.wait_for(
                'quotes', lambda i: i.restarts == 1 and i.state == 'running'
            )
        show(
            'quotes was restarted by its permanent policy:', await mngr.list_services()
        )

        if serve:
            print('\nserving until Ctrl-C or SIGTERM', flush=True)
            await trio.sleep_forever()
        print('\nstopping in reverse start order:', flush=True)
    print('all services stopped', flush=True)


if __name__ == '__main__':
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument(
        '--registry',
        help='registry address HOST:PORT (default: $TRACTOR_REGISTRY_ADDR or 127.0.0.1:1616)',
    )
    parser.add_argument(
        '--serve', action='store_true', help='keep serving after the demo'
    )
    args = parser.parse_args()
    try:
        trio.run(main, args.registry, args.serve)
    except KeyboardInterrupt:
        pass
