"""introspect(): a running tree described by typed structs, and
`samplerd ls --json` holding the same."""

from __future__ import annotations

import json
import sys

import msgspec
import pytest
import trio

from tractor_sampler import (
    BackendInfo,
    BarCounters,
    BufferInfo,
    FeedInfo,
    SamplerInfo,
    ShmToken,
    SubscriberInfo,
    TopicInfo,
    TreeInfo,
    introspect,
    open_market_feed,
)
from tractor_sampler._sampler import Sampler
from tractor_services import ServiceInfo, open_service_root

BUFS = {1.0: (256, 30), 60.0: (64, 10)}


def test_sampler_info_struct_has_every_counter_samplerd_keeps():
    """A counter added to Sampler.info() without a field in SamplerInfo
    would be dropped on receipt: the two name the same things."""
    assert set(Sampler().info()) == set(SamplerInfo.__struct_fields__)


async def test_introspect_describes_a_running_tree_in_typed_structs(other_addr):
    host, port = other_addr
    async with open_service_root(other_addr):
        async with open_market_feed(
            ['AAA'], buffers=BUFS, config={'tick_rate': 100}
        ) as feed:
            with trio.fail_after(30):
                n = 0
                async for _ in feed:
                    n += 1
                    if n == 5:
                        break
            tree = await introspect(other_addr)
            only_samplerd = await introspect(other_addr, parts=['samplerd'])
            # a program reads the same through `samplerd ls --json`
            with trio.fail_after(90):
                res = await trio.run_process(
                    [
                        sys.executable,
                        '-m',
                        'tractor_sampler',
                        '--port',
                        str(port),
                        'ls',
                        '--json',
                    ],
                    capture_stdout=True,
                    capture_stderr=True,
                    check=False,
                )

    assert isinstance(tree, TreeInfo) and tree.registry == f'{host}:{port}'
    assert all(isinstance(s, ServiceInfo) for s in tree.services)
    assert {s.name: s.state for s in tree.services} == {
        'samplerd': 'running',
        'feedd.sim': 'running',
    }

    [fi] = tree.feeds
    assert isinstance(fi, FeedInfo) and fi.backend == 'sim' and fi.dist == 'builtin'
    t = fi.topics['AAA']
    assert (
        isinstance(t, TopicInfo) and t.state == 'up' and t.config == {'tick_rate': 100}
    )
    assert t.quotes >= 5 and t.restarts == 0
    assert set(t.buffers) == {1.0, 60.0}
    for p, b in t.buffers.items():
        assert isinstance(b, BufferInfo) and isinstance(b.token, ShmToken)
        assert b.token == feed.buffer('AAA', p).token and b.rows > 0
    [sub] = t.subscribers
    assert isinstance(sub, SubscriberInfo) and sub.rate is None and sub.delivered >= 5
    assert isinstance(t.bars, BarCounters) and set(t.bars.by_period) == {1.0, 60.0}

    sd = tree.samplerd
    assert isinstance(sd, SamplerInfo) and sd.incrementers == 1
    assert sd.buffers == {1.0: 1, 60.0: 1} and {1.0, 60.0} <= set(sd.periods)
    assert sd.clock_jumps >= 0 and isinstance(sd.gaps, dict)

    assert tree.backends == [
        BackendInfo(
            name='replay',
            version=tree.backends[0].version,
            dist='builtin',
            history=False,
            symbol_info=True,
        ),
        BackendInfo(
            name='sim',
            version=tree.backends[0].version,
            dist='builtin',
            history=True,
            symbol_info=True,
        ),
    ]

    # what was not asked for is None
    assert only_samplerd.samplerd is not None and only_samplerd.samplerd.pid == sd.pid
    assert (only_samplerd.services, only_samplerd.feeds, only_samplerd.backends) == (
        None,
        None,
        None,
    )

    assert res.returncode == 0, res.stderr.decode()
    raw = json.loads(res.stdout)
    assert raw['samplerd']['buffers'] == {
        '1': 1,
        '60': 1,
    }  # periods as keys, written '1'
    ls = msgspec.convert(
        raw, TreeInfo, strict=False
    )  # the JSON reads back into the structs
    assert ls.registry == tree.registry
    assert {s.name: s.state for s in ls.services} == {
        s.name: s.state for s in tree.services
    }
    [lf] = ls.feeds
    assert (lf.backend, lf.pid, set(lf.topics)) == (fi.backend, fi.pid, set(fi.topics))
    lt = lf.topics['AAA']
    assert lt.state == 'up' and lt.config == t.config and len(lt.subscribers) == 1
    assert {p: b.token for p, b in lt.buffers.items()} == {
        p: b.token for p, b in t.buffers.items()
    }
    assert ls.samplerd.buffers == sd.buffers and ls.samplerd.pid == sd.pid
    assert ls.backends == tree.backends


async def test_introspect_refuses_unknown_parts_before_asking_anyone():
    with pytest.raises(ValueError, match=r"parts: unknown \['feed'\]"):
        await introspect(('127.0.0.1', 1), parts=['feed'])


async def test_introspect_of_backends_alone_needs_no_tree():
    tree = await introspect(('127.0.0.1', 1), parts=['backends'])
    assert [b.name for b in tree.backends] == [
        'replay',
        'sim',
    ] and tree.services is None
