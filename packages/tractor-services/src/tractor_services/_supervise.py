"""
The one restart loop: run something, and run it again by a
:class:`~tractor_services.RestartPolicy` when it ends.

:class:`~tractor_services.ServiceMngr` supervises each service with it,
and tractor-sampler's feed daemon each topic's quote stream.  The loop
knows nothing of what it runs; ``run_once`` does the work and tells of
its own progress (only it knows when it is up), and ``on_state`` hears
every decision the loop takes.

"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

import trio

from ._errors import GaveUp, describe_error
from ._policy import RestartIntensity, RestartPolicy

#: what the loop decided after a run ended
Decision = Literal['restarting', 'stopped', 'failed']


@dataclass(frozen=True)
class Supervision:
    """What ``on_state`` hears after each run: the decision taken, and why."""

    #: ``'restarting'`` (a restart follows after ``backoff`` seconds),
    #: ``'stopped'`` (it returned, and the policy does not restart that; or
    #: ``stop()`` said so) or ``'failed'`` (it raised and the policy does
    #: not restart that, or it gave up)
    state: Decision
    #: what ended the run: its error (a :class:`GaveUp` when the policy's
    #: intensity was exceeded; its ``__cause__`` is the run's own error),
    #: or ``None`` when it returned
    error: Exception | None
    #: restarts so far, this one included when ``state == 'restarting'``
    restarts: int
    #: seconds before the restart (``state == 'restarting'``), else 0
    backoff: float = 0.0


async def supervise(
    run_once: Callable[[], Awaitable[Any]],
    policy: RestartPolicy,
    *,
    on_state: Callable[[Supervision], None] | None = None,
    stop: Callable[[], bool] | None = None,
    fatal: Callable[[Exception], bool] | None = None,
) -> Supervision:
    """Run ``run_once()`` and run it again while ``policy`` says so;
    return the final :class:`Supervision` (``stopped`` or ``failed``).

    After each run (it returned, or raised an ``Exception``):

    1. an error for which ``fatal(err)`` is true propagates at once (e.g.
       a service that failed before it ever started: its caller gets it);
    2. ``stop()`` true ends the loop, ``stopped`` (whatever the run did:
       it was asked to end);
    3. the policy's restart rule (``permanent``/``transient``/
       ``temporary``) may end it: ``stopped`` if the run returned,
       ``failed`` if it raised;
    4. a run that lasted ``policy.within_s`` or more was healthy: the
       backoff starts again from ``policy.backoff_s``;
    5. one restart more than ``policy.max_restarts`` within
       ``policy.within_s`` (on trio's clock) gives up: ``failed`` with a
       :class:`GaveUp`;
    6. else ``restarting``: wait the backoff, run again.

    ``on_state`` is called with each decision (``restarting`` each time,
    then the final one) before the loop acts on it; it must not block.
    Cancellation (and any ``BaseException``) propagates from wherever
    the loop is, the run included."""
    intensity = RestartIntensity(policy)
    restarts = 0

    def tell(sup: Supervision) -> Supervision:
        if on_state is not None:
            on_state(sup)
        return sup

    while True:
        error: Exception | None = None
        began = trio.current_time()
        try:
            await run_once()
        except Exception as err:
            if fatal is not None and fatal(err):
                raise
            error = err
        failed = error is not None
        if stop is not None and stop():
            return tell(Supervision('stopped', error, restarts))
        if not policy.should_restart(failed):
            return tell(Supervision('failed' if failed else 'stopped', error, restarts))
        now = trio.current_time()
        if now - began >= policy.within_s:
            intensity.reset_backoff()
        if not intensity.allow(now):
            last = describe_error(error) if error is not None else 'it returned'
            gave_up = GaveUp(
                f'gave up after {restarts} restarts (at most {policy.max_restarts} '
                f'in {policy.within_s:g} s); last: {last}'
            )
            gave_up.__cause__ = error
            return tell(Supervision('failed', gave_up, restarts))
        restarts += 1
        delay = policy.backoff(intensity.consecutive)
        tell(Supervision('restarting', error, restarts, delay))
        await trio.sleep(delay)


__all__ = ['Decision', 'Supervision', 'supervise']
