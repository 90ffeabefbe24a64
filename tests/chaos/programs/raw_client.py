"""A chaos-suite client that speaks raw tractor to the tree at HOST:PORT:
malformed control messages on a feed stream and on a sample stream, and
endpoint calls with bad arguments.  Prints one JSON line: how many of each
it sent, how many were refused the documented way, and every answer that
was not.

Usage: raw_client.py HOST PORT TOPIC N_MALFORMED N_BAD_CALLS"""

import itertools
import json
import math
import sys
import time

import trio

from feedbus.endpoints import open_feed_stream
from tractor_sampler import feedd_name
from tractor_sampler.endpoints import attach_feed, register_with_sampler
from tractor_services import compat

#: the remote error types that count as a clear refusal of bad arguments
REFUSED = ('ValueError', 'TypeError', 'KeyError')

#: control messages a producer must answer with one error reply each
FEED_JUNK = [
    42,
    'pause',
    None,
    [],
    [1, 2],
    {},
    {'type': 'nope'},
    {'type': 123},
    {'type': 'subscribe'},
    {'type': 'subscribe', 'topics': 'AAA'},
    {'type': 'subscribe', 'topics': [[[[]]]]},
    {'type': 'subscribe', 'topics': ['NOPE']},
    {'type': 'unsubscribe', 'topics': [1, 2]},
    {'type': 'set_rate', 'rate': 'fast'},
    {'type': 'set_rate', 'rate': -1},
    {'type': 'set_rate'},
    {'type': 'pause', 'id': 'x'},
    {'type': 'x' * 10_000},
    {'type': 'resume', 'id': -1.5},
    {'id': 7},
    b'\x00\xff garbage',
]
#: requests samplerd must answer with one error reply each
SAMPLER_JUNK = [
    42,
    None,
    {},
    {'type': 'nope'},
    {'type': 'broadcast'},
    {'type': 'broadcast', 'msg': 'hi'},
    {'type': 'broadcast', 'msg': {'type': 'info'}},
    {'type': 'broadcast', 'msg': {'type': 'step'}},
    {'type': 'broadcast', 'msg': {'type': 'info', 'info': {}}, 'period_s': 'x'},
    {'type': 'broadcast', 'id': 'x', 'msg': {'type': 'info', 'info': {}}},
]


def _describe(exc):
    err = compat.unwrap_error(exc)
    remote = compat.remote_error_type(err)
    if remote is not None:
        return remote, compat.remote_error_message(err)
    return type(err).__name__, str(err)


async def junk_on_stream(portal, fn, junk, n, kwargs, out, key):
    """Send ``n`` malformed requests on one stream of ``fn``'s context and
    count the error replies (maps with ``type == 'error'``)."""
    sent = errors = 0
    other = []
    async with compat.open_context(portal, fn, **kwargs) as (ctx, _first):
        async with compat.open_drained_stream(ctx) as stream:
            async with trio.open_nursery() as tn:
                got_all = trio.Event()

                async def read():
                    nonlocal errors
                    async for raw in stream:
                        if isinstance(raw, bytes):
                            continue  # data (steps): not ours to count
                        if (
                            isinstance(raw, dict)
                            and raw.get('type') == 'error'
                            and raw.get('error')
                        ):
                            errors += 1
                        else:
                            other.append(repr(raw)[:200])
                        if errors + len(other) >= n:
                            got_all.set()

                tn.start_soon(read)
                for _i, msg in zip(range(n), itertools.cycle(junk)):
                    await stream.send(msg)
                    sent += 1
                with trio.move_on_after(30):
                    await got_all.wait()
                tn.cancel_scope.cancel()
        await ctx.cancel()
    out[key] = {'sent': sent, 'error_replies': errors, 'other_replies': other[:10]}


def bad_calls(topic):
    """(endpoint, kwargs, the remote error types that are a refusal)"""
    nan = math.nan
    return [
        (open_feed_stream, {'topics': topic}, REFUSED),
        (open_feed_stream, {'topics': []}, REFUSED),
        (open_feed_stream, {'topics': ['NOPE']}, REFUSED),
        (open_feed_stream, {'topics': [topic], 'tick_throttle': -1}, REFUSED),
        (open_feed_stream, {'topics': [topic], 'tick_throttle': 0}, REFUSED),
        (open_feed_stream, {'topics': [topic], 'tick_throttle': 'fast'}, REFUSED),
        (open_feed_stream, {'topics': [topic], 'tick_throttle': nan}, REFUSED),
        (open_feed_stream, {'topics': [topic], 'outbox_size': 0}, REFUSED),
        (open_feed_stream, {'topics': [topic], 'outbox_size': 'big'}, REFUSED),
        (attach_feed, {'topics': []}, REFUSED),
        (attach_feed, {'topics': topic}, REFUSED),
        (attach_feed, {'topics': ['']}, REFUSED),
        (attach_feed, {'topics': [topic], 'config': 'x'}, REFUSED),
        (attach_feed, {'topics': ['CHAOSBAD'], 'config': {'tick_rate': -5}}, REFUSED),
        (attach_feed, {'topics': [topic], 'config': {'tick_rate': 1}}, REFUSED),
        (register_with_sampler, {'period_s': 0}, REFUSED),
        (register_with_sampler, {'period_s': -1}, REFUSED),
        (register_with_sampler, {'period_s': nan}, REFUSED),
        (register_with_sampler, {'period_s': 'x'}, REFUSED),
        (register_with_sampler, {'period_s': 1e12}, REFUSED),
        (register_with_sampler, {'shms_by_period': 'junk'}, REFUSED),
        (register_with_sampler, {'shms_by_period': {'abc': []}}, REFUSED),
        (register_with_sampler, {'shms_by_period': {'1.0': [{'bad': 1}]}}, REFUSED),
    ]


async def bad_call(portals, fn, kwargs, expected, out):
    portal = portals[fn]
    try:
        with trio.fail_after(20):
            async with compat.open_context(portal, fn, **kwargs) as (ctx, _first):
                await ctx.cancel()
    except Exception as exc:
        kind, msg = _describe(exc)
        if kind in expected and msg:
            out['refused'] += 1
        else:
            out['wrong'].append(f'{fn.__name__}({kwargs!r}): {kind}: {msg}'[:300])
    except BaseException as exc:
        out['wrong'].append(
            f'{fn.__name__}({kwargs!r}): {type(exc).__name__}: {exc}'[:300]
        )
        if not isinstance(exc, getattr(trio, 'MultiError', ())):
            raise
    else:
        out['wrong'].append(f'{fn.__name__}({kwargs!r}) was accepted')


async def main(host, port, topic, n_junk, n_calls):
    addr = (host, port)
    t0 = time.monotonic()
    out = {}
    async with compat.open_root_actor(addr, 'chaos_raw', loglevel='critical'):
        async with (
            compat.find_actor(feedd_name('sim'), addr) as feedd,
            compat.find_actor('samplerd', addr) as samplerd,
        ):
            assert feedd is not None and samplerd is not None, 'the tree is not running'
            await junk_on_stream(
                feedd,
                open_feed_stream,
                FEED_JUNK,
                n_junk,
                {'topics': [topic]},
                out,
                'feed_stream',
            )
            await junk_on_stream(
                samplerd,
                register_with_sampler,
                SAMPLER_JUNK,
                max(n_junk // 5, 10),
                {'period_s': 1.0},
                out,
                'sample_stream',
            )
            portals = {
                open_feed_stream: feedd,
                attach_feed: feedd,
                register_with_sampler: samplerd,
            }
            calls = {'sent': 0, 'refused': 0, 'wrong': []}
            for _i, (fn, kwargs, expected) in zip(
                range(n_calls), itertools.cycle(bad_calls(topic))
            ):
                calls['sent'] += 1
                await bad_call(portals, fn, kwargs, expected, calls)
            calls['wrong'] = calls['wrong'][:10]
            out['bad_calls'] = calls
    out['elapsed'] = time.monotonic() - t0
    print(json.dumps(out), flush=True)


if __name__ == '__main__':
    trio.run(
        main,
        sys.argv[1],
        int(sys.argv[2]),
        sys.argv[3],
        int(sys.argv[4]),
        int(sys.argv[5]),
    )
