"""Endpoints the samplerd tests run in actors."""

from __future__ import annotations

import os

import numpy as np
import tractor
import trio

from tractor_sampler import open_sample_stream, open_shm_array


def seeded(shm, close: float = 10.0, index: int = 100) -> None:
    row = np.zeros(1, dtype=shm.dtype)
    row['index'], row['time'], row['close'] = index, 0.0, close
    row['open'] = row['high'] = row['low'] = close
    shm.push(row)


@tractor.context
async def register_buffer(ctx: tractor.Context, period_s: float) -> None:
    """Make a buffer, register it with samplerd (spawning it if needed),
    report how many steps arrive on request."""
    with open_shm_array(64) as shm:
        seeded(shm)
        async with open_sample_stream(period_s, {period_s: shm}) as ss:
            await ctx.started(os.getpid())
            seen = {'steps': 0}
            async with ctx.open_stream() as stream, trio.open_nursery() as tn:

                async def count():
                    async for _ in ss:
                        seen['steps'] += 1

                tn.start_soon(count)
                async for _ in stream:
                    await stream.send([seen['steps'], len(shm.array)])
                tn.cancel_scope.cancel()


@tractor.context
async def listen_steps(ctx: tractor.Context, period_s: float) -> None:
    """Only subscribe to steps (no buffer)."""
    async with open_sample_stream(period_s) as ss:
        await ctx.started(os.getpid())
        async for _ in ss:
            pass
