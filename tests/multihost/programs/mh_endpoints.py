"""Endpoints the multi-host test programs spawn (imported by name)."""

import trio

from tractor_services import compat


@compat.context
async def idle(ctx):
    await ctx.started()
    await trio.sleep_forever()
