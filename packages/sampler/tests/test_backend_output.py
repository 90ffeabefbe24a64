"""The feed daemon checks what a backend returns with the conformance
kit's own checks (tractor_sampler._conform: one function for both) and
names backend and hook in one line its client sees, serving the other
topics on: history in the wrong format and a bad symbol info refuse the
topic; a first batch that breaks the quote contract fails it (no restart).
"""

from __future__ import annotations

import numpy as np
import pytest
import trio

from tractor_sampler import FeedStatus, _conform, open_market_feed, testing
from tractor_sampler.backends import sim
from tractor_services import open_service_root

BUFS = {1.0: (256, 30), 60.0: (64, 10)}
FAST = {'tick_rate': 100, 'trade_prob': 0.5}
KW = dict(backend='breaks', plugins=['contract_breaking'], buffers=BUFS, config=FAST)


def test_the_kit_and_the_feed_daemon_share_one_check():
    """Not a copy: the kit's methods call the functions the daemon calls."""
    kit = testing.BackendConformance()
    kit.symbols = ['AAA']
    batch = {'AAA': {'ticks': [{'price': 1.0, 'size': 1.0}]}}
    assert kit.quote_problems(batch) == _conform.quote_problems(batch, ['AAA'])
    assert testing.check_bars is _conform.check_bars
    assert testing.symbol_info_problems is _conform.symbol_info_problems


async def test_first_batches_are_checked_and_the_rest_read_on():
    async def source():
        yield {'AAA': {'last': 1.0}}
        yield {'AAA': {'last': 2.0, 'ticks': [{'price': 1.0, 'size': 1.0}]}}

    it = source()
    got = []
    with pytest.raises(_conform.ContractBreach) as info:
        async for b in _conform.check_first_batches(it, ['AAA'], "backend 'x': q"):
            got.append(b)
    assert got == [{'AAA': {'last': 1.0}}]
    msg = str(info.value)
    assert '\n' not in msg
    assert msg.startswith("backend 'x': q yielded a batch (#1) that breaks the quote")
    assert "has no 'type'" in msg

    # the checked ones pass through; the source is left for the caller
    async def many():
        for i in range(20):
            yield {'AAA': {'last': float(i)}}

    it = many()
    first = [b async for b in _conform.check_first_batches(it, ['AAA'], 'q', n=3)]
    assert [b['AAA']['last'] for b in first] == [0.0, 1.0, 2.0]
    assert (await it.__anext__())['AAA']['last'] == 3.0
    await it.aclose()


async def test_history_as_a_float_matrix_refuses_the_topic_naming_backend_and_hook(
    other_addr,
):
    async with open_service_root(other_addr):
        async with open_market_feed(['AAA'], **KW) as good:
            with pytest.raises(ValueError) as info:
                async with open_market_feed(['BADH'], **KW):
                    pass
            msg = str(info.value)
            assert '\n' not in msg and 'IndexError' not in msg
            assert "backend 'breaks': history('BADH', 1, ...)" in msg, msg
            assert 'numpy structured array' in msg
            # the daemon serves its other topic on
            with trio.fail_after(30):
                async for q in good:
                    assert q.topic == 'AAA'
                    break
            assert (await good.info()).bad_history == 1


async def test_a_bad_symbol_info_refuses_the_topic_naming_backend_and_hook(
    other_addr,
):
    async with open_service_root(other_addr):
        async with open_market_feed(['AAA'], **KW) as good:
            with pytest.raises(ValueError) as info:
                async with open_market_feed(['BADI'], **KW):
                    pass
            msg = str(info.value)
            assert '\n' not in msg
            assert "backend 'breaks': symbol_info('BADI') returned" in msg, msg
            assert "'tick_size' is 0" in msg
            with trio.fail_after(30):
                async for q in good:
                    assert q.topic == 'AAA'
                    break


async def test_a_first_batch_breaking_the_quote_contract_fails_the_topic_once(
    other_addr,
):
    async with open_service_root(other_addr):
        async with (
            open_market_feed(['AAA'], **KW) as good,
            open_market_feed(['BADQ'], **KW) as bad,
            bad.status.open_reader() as reports,
        ):
            st = bad.first_status['BADQ']
            with trio.fail_after(30):
                while st.state != 'failed':
                    st = await reports.receive()
                    assert isinstance(st, FeedStatus)
                    assert st.state != 'restarting', st  # a breach is not retried
            assert st.restarts == 0
            assert st.error.startswith(
                "backend 'breaks': stream_quotes(['BADQ']) yielded a batch (#0) "
                'that breaks the quote contract: '
            ), st.error
            assert "has no 'type'" in st.error and '\n' not in st.error
            # the other topic of the same daemon streams on
            with trio.fail_after(30):
                async for q in good:
                    assert q.topic == 'AAA'
                    break
            assert (await good.info()).topics['AAA'].state == 'up'


def test_sim_output_passes_the_checks():
    async def main():
        info = await sim.symbol_info('AAA')
        _conform.check_symbol_info(info, 'sim')
        it = sim.stream_quotes(['AAA', 'BBB'], tick_rate=1000)
        n = 0
        async for _ in _conform.check_first_batches(it, ['AAA', 'BBB'], 'sim'):
            n += 1
        await it.aclose()
        assert n == _conform.FIRST_BATCHES_CHECKED
        bars = await sim.history('AAA', 1.0, 1_000_000.5, 10)
        _conform.check_bars(bars, 'sim', 1.0, 1_000_000.5, count=10)
        assert isinstance(bars, np.ndarray)

    trio.run(main)
