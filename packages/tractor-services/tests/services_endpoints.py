"""Context endpoints the tests run as services (imported by subactors)."""

from __future__ import annotations

import os
from pathlib import Path

import tractor
import trio


@tractor.context
async def sleeper(ctx, value=None, log_path: str | None = None, tag: str = ''):
    """Start, report (pid, value), then serve until cancelled; on teardown
    append ``tag`` to ``log_path``."""
    try:
        await ctx.started((os.getpid(), value))
        await trio.sleep_forever()
    finally:
        if log_path:
            with open(log_path, 'a') as f:
                f.write(f'{tag}\n')


@tractor.context
async def other_sleeper(ctx):
    await ctx.started(os.getpid())
    await trio.sleep_forever()


@tractor.context
async def fail_after_start(ctx, msg: str = 'boom'):
    await ctx.started(os.getpid())
    await trio.sleep(0.05)
    raise ValueError(msg)


@tractor.context
async def fail_before_start(ctx):
    raise RuntimeError('cannot start: bad config')


@tractor.context
async def never_starts(ctx):
    await trio.sleep_forever()


@tractor.context
async def returns_soon(ctx, counter_path: str | None = None):
    if counter_path:
        with open(counter_path, 'a') as f:
            f.write('x')
    await ctx.started(os.getpid())
    return 'done'


@tractor.context
async def dies_soon(ctx, counter_path: str | None = None):
    """Start, then exit the process abruptly (as a crash would)."""
    if counter_path:
        with open(counter_path, 'a') as f:
            f.write('x')
    await ctx.started(os.getpid())
    await trio.sleep(0.05)
    os._exit(3)


@tractor.context
async def streamer(ctx, count: int = 2000):
    """Send ``count`` messages as fast as possible, then one 'end'."""
    await ctx.started(os.getpid())
    async with ctx.open_stream(backpressure=False) as stream:
        for i in range(count):
            await stream.send(i)
        await stream.send('end')
        await trio.sleep_forever()


async def ping() -> str:
    return 'pong'


def counter(path: str | Path) -> int:
    try:
        return len(Path(path).read_text())
    except FileNotFoundError:
        return 0


async def ask_root_for_services() -> str:
    """(in a subactor) What the root's manager says when asked over IPC."""
    from tractor_services import ServiceError, open_root_mngr

    async with open_root_mngr() as mngr:
        try:
            await mngr.list_services()
        except ServiceError as err:
            return str(err)
    return 'no error'


@tractor.context
async def blocks_its_loop(ctx):
    """Start, then block the event loop (as a buggy endpoint would)."""
    import time

    await ctx.started((os.getpid(), None))
    time.sleep(3600)  # noqa: ASYNC251  (blocking on purpose)
