"""The bar store is on by default from the library too: a tree started
with ``open_service_root`` / ``open_market_feed`` and no data directory
setting stores closed bars in the per-user data directory
(``$XDG_DATA_HOME/tractor-sampler``), as ``samplerd run`` does; the off
switches turn it off.  (The store itself: test_store.py.)"""

from __future__ import annotations

import numpy as np
import pytest
import trio

from tractor_sampler import open_market_feed
from tractor_sampler._datadir import ENV_VAR, check_store_setting
from tractor_sampler._feedd import _feedd_store
from tractor_sampler._store import FLUSH_ENV, STORE_ENV
from tractor_services import open_service_root

BUFS = {1.0: (256, 30), 60.0: (64, 10)}
FAST = {'tick_rate': 100, 'trade_prob': 0.5}


@pytest.fixture
def user_home(tmp_path, monkeypatch):
    """A user whose home and $XDG_DATA_HOME are temporary, with no data
    directory setting and the store not turned off (the conftest sets
    both for the other tests)."""
    monkeypatch.setenv('HOME', str(tmp_path / 'home'))
    monkeypatch.setenv('XDG_DATA_HOME', str(tmp_path / 'xdg'))
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.delenv(STORE_ENV, raising=False)
    monkeypatch.setenv(FLUSH_ENV, '0.5')
    return tmp_path


async def _closed_bars(feed, n: int) -> None:
    shm = feed.buffer('AAA', 1.0)
    n0 = len(shm)
    with trio.fail_after(60):
        while len(shm) < n0 + n:
            await trio.sleep(0.05)


async def test_a_tree_started_from_the_library_stores_closed_bars_in_the_per_user_data_dir(
    other_addr, user_home
):
    pytest.importorskip('pyarrow', reason='the bar store needs the store extra')
    from tractor_sampler import open_store

    default = user_home / 'xdg' / 'tractor-sampler'
    async with open_service_root(other_addr):
        async with open_market_feed(['AAA'], buffers=BUFS, config=FAST) as feed:
            info = await feed.info()
            assert info.store['name'] == 'parquet'
            assert info.store['root'] == str(default)
            await _closed_bars(feed, 3)
            closed = feed.buffer('AAA', 1.0).array[:-1].copy()
            # the writer's flushes put them in the default directory
            store = open_store(default)
            with trio.fail_after(60):
                while True:
                    stored = store.read('sim', 'AAA', 1.0)
                    if len(stored) and stored['time'][-1] >= closed['time'][-1]:
                        break
                    await trio.sleep(0.1)
    assert (default / 'bars' / 'sim' / 'AAA' / '1s').is_dir()
    got = stored[np.isin(stored['time'], closed['time'])]
    want = closed[np.isin(closed['time'], stored['time'])]
    assert len(got) == len(closed)
    for f in ('time', 'open', 'high', 'low', 'close', 'volume'):
        assert np.array_equal(got[f], want[f], equal_nan=True), f
    assert not (user_home / 'home').exists()  # $XDG_DATA_HOME, not ~/.local


async def test_a_stopping_tree_stores_the_closed_bars_its_flushes_had_not_written(
    other_addr, user_home, monkeypatch
):
    """No periodic flush runs (an hour apart): the bars closed while the
    tree ran reach the store when it stops, not never."""
    pytest.importorskip('pyarrow', reason='the bar store needs the store extra')
    from tractor_sampler import open_store

    monkeypatch.setenv(FLUSH_ENV, '3600')
    async with open_service_root(other_addr):
        async with open_market_feed(['AAA'], buffers=BUFS, config=FAST) as feed:
            await _closed_bars(feed, 3)
            closed = feed.buffer('AAA', 1.0).array[:-1].copy()
            store = open_store(user_home / 'xdg' / 'tractor-sampler')
            assert len(store.read('sim', 'AAA', 1.0)) == 0  # nothing flushed yet
    stored = store.read('sim', 'AAA', 1.0)
    assert set(closed['time']) <= set(stored['time'])
    got = stored[np.isin(stored['time'], closed['time'])]
    for f in ('open', 'high', 'low', 'close', 'volume'):
        assert np.array_equal(got[f], closed[f], equal_nan=True), f


async def test_the_store_off_switch_keeps_a_library_tree_from_storing(
    other_addr, user_home, monkeypatch
):
    monkeypatch.setenv(STORE_ENV, 'none')
    async with open_service_root(other_addr):
        async with open_market_feed(['AAA'], buffers=BUFS, config=FAST) as feed:
            assert (await feed.info()).store == {}
    assert not (user_home / 'xdg').exists()


async def test_open_market_feed_data_dir_chooses_the_spawned_daemons_store(
    other_addr, user_home, tmp_path
):
    pytest.importorskip('pyarrow', reason='the bar store needs the store extra')
    with pytest.raises(ValueError, match='data_dir=3 must be'):
        async with open_market_feed(['AAA'], data_dir=3, registry_addr=other_addr):
            pass
    async with open_service_root(other_addr):
        async with open_market_feed(
            ['AAA'], buffers=BUFS, config=FAST, data_dir=tmp_path / 'mine'
        ) as feed:
            assert (await feed.info()).store['root'] == str(tmp_path / 'mine')
    async with open_service_root(other_addr):
        async with open_market_feed(
            ['AAA'], buffers=BUFS, config=FAST, data_dir=False
        ) as feed:
            assert (await feed.info()).store == {}


def test_a_feed_daemons_data_dir_setting_is_checked_and_false_turns_the_store_off(
    tmp_path, user_home
):
    assert check_store_setting(None) is None
    assert check_store_setting(True) is None
    assert check_store_setting(False) is False
    assert check_store_setting(tmp_path) == str(tmp_path)
    for bad in ('', 3, ['x']):
        with pytest.raises(ValueError, match='must be a directory, None') as err:
            check_store_setting(bad)
        assert len(str(err.value).splitlines()) == 1
    assert _feedd_store(False) == (None, 0.0)
    with pytest.raises(ValueError, match='data_dir=3 must be'):
        _feedd_store(3)
