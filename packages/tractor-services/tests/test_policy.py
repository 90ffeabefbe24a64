"""Restart policy logic (pure: trio's mock clock drives the window)."""

import pytest
import trio

from tractor_services import RestartPolicy
from tractor_services._policy import RestartIntensity, as_policy


def test_restart_rules():
    assert RestartPolicy(restart='permanent').should_restart(failed=False)
    assert RestartPolicy(restart='permanent').should_restart(failed=True)
    assert RestartPolicy(restart='transient').should_restart(failed=True)
    assert not RestartPolicy(restart='transient').should_restart(failed=False)
    assert not RestartPolicy().should_restart(failed=True)


@pytest.mark.parametrize(
    'kw, match',
    [
        ({'restart': 'always'}, 'restart='),
        ({'max_restarts': -1}, 'max_restarts'),
        ({'max_restarts': 1.5}, 'max_restarts'),
        ({'within_s': 0}, 'within_s'),
        ({'within_s': float('inf')}, 'within_s'),
        ({'backoff_s': -0.1}, 'backoff_s'),
        ({'backoff_factor': 0.5}, 'backoff_factor'),
    ],
)
def test_nonsense_numbers_are_rejected(kw, match):
    with pytest.raises(ValueError, match=match):
        RestartPolicy(**kw)


def test_as_policy_forms():
    assert as_policy(None).restart == 'temporary'
    assert as_policy('transient').restart == 'transient'
    assert as_policy({'restart': 'permanent', 'max_restarts': 5}).max_restarts == 5
    with pytest.raises(ValueError, match='RestartPolicy'):
        as_policy({'restart': 'permanent', 'max_restarts': 'lots'})
    with pytest.raises(TypeError):
        as_policy(3)


def test_backoff_grows_and_caps():
    p = RestartPolicy(backoff_s=0.5, backoff_factor=2, max_backoff_s=3)
    assert [p.backoff(n) for n in (1, 2, 3, 4, 5)] == [0.5, 1.0, 2.0, 3, 3]
    assert RestartPolicy().backoff(7) == 0.0


async def test_intensity_window_slides_on_trio_clock(autojump_clock):
    it = RestartIntensity(
        RestartPolicy(restart='permanent', max_restarts=3, within_s=10)
    )
    assert all(it.allow(trio.current_time()) for _ in range(3))
    assert not it.allow(trio.current_time())  # a 4th within 10 s: give up
    await trio.sleep(10)
    assert it.allow(trio.current_time())  # the old ones slid out


async def test_zero_restarts_gives_up_at_once(autojump_clock):
    it = RestartIntensity(RestartPolicy(restart='permanent', max_restarts=0))
    assert not it.allow(trio.current_time())
