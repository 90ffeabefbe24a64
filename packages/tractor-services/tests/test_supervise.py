"""The one restart loop, ``tractor_services.supervise`` (pure: trio's
mock clock drives the policy's window and backoff)."""

from __future__ import annotations

import pytest
import trio

from tractor_services import GaveUp, RestartPolicy, Supervision, supervise


class Boom(Exception):
    pass


def script(*runs):
    """A ``run_once`` that plays ``runs`` in turn: a number of seconds to
    run then fail, or ``'return'`` to return at once."""
    it = iter(runs)

    async def run_once() -> None:
        step = next(it)
        if step == 'return':
            return
        await trio.sleep(step)
        raise Boom(f'after {step} s')

    return run_once


async def test_backoff_starts_again_after_a_healthy_run(autojump_clock):
    """The feed daemon's loop never reset its backoff; the manager's did:
    the one loop does, after a run that lasted ``within_s``."""
    policy = RestartPolicy(
        restart='transient',
        max_restarts=10,
        within_s=60,
        backoff_s=1,
        backoff_factor=2,
    )
    seen: list[Supervision] = []
    end = await supervise(
        script(0, 0, 0, 120, 0, 'return'), policy, on_state=seen.append
    )
    backoffs = [s.backoff for s in seen if s.state == 'restarting']
    assert backoffs == [1, 2, 4, 1, 2]  # the 120 s run was healthy: from 1 s again
    assert [s.restarts for s in seen] == [1, 2, 3, 4, 5, 5]
    assert end.state == 'stopped' and end.error is None and seen[-1] is end


async def test_gives_up_past_the_intensity_naming_the_last_error(autojump_clock):
    policy = RestartPolicy(restart='permanent', max_restarts=2, within_s=10)
    seen: list[Supervision] = []
    end = await supervise(script(0, 0, 0, 0), policy, on_state=seen.append)
    assert [s.state for s in seen] == ['restarting', 'restarting', 'failed']
    assert end.state == 'failed' and isinstance(end.error, GaveUp)
    assert isinstance(end.error.__cause__, Boom)
    assert 'gave up after 2 restarts' in str(end.error)
    assert 'Boom: after 0 s' in str(end.error)


@pytest.mark.parametrize(
    'restart, runs, state',
    [
        ('temporary', (0,), 'failed'),
        ('temporary', ('return',), 'stopped'),
        ('transient', ('return',), 'stopped'),
        ('transient', (0, 'return'), 'stopped'),
    ],
)
async def test_the_restart_rule_ends_it(autojump_clock, restart, runs, state):
    end = await supervise(script(*runs), RestartPolicy(restart=restart))
    assert end.state == state


async def test_stop_ends_it_whatever_the_run_did(autojump_clock):
    stopping = False

    async def run_once() -> None:
        nonlocal stopping
        stopping = True
        raise Boom('while stopping')

    end = await supervise(
        run_once, RestartPolicy(restart='permanent'), stop=lambda: stopping
    )
    assert end.state == 'stopped' and isinstance(end.error, Boom)


async def test_a_fatal_error_propagates_unsupervised(autojump_clock):
    seen: list[Supervision] = []
    with pytest.raises(Boom):
        await supervise(
            script(0, 0),
            RestartPolicy(restart='permanent'),
            on_state=seen.append,
            fatal=lambda err: True,
        )
    assert seen == []


async def test_cancellation_goes_through(autojump_clock):
    with trio.move_on_after(5) as cs:
        await supervise(script(100), RestartPolicy(restart='permanent'))
    assert cs.cancelled_caught
