"""
Restart policies, modelled on Erlang/OTP child specifications.

- ``permanent``: always restarted, whether the endpoint returned or failed.
- ``transient``: restarted only when it failed (raised, or its process
  died); a normal return ends it.
- ``temporary``: never restarted (the default, as in piker).

Restart intensity: at most ``max_restarts`` restarts within ``within_s``
seconds; one more and the manager gives up on the service and reports
it (state ``failed``, error :class:`~tractor_services.GaveUp`).  Between
restarts it waits ``backoff_s``, multiplied by ``backoff_factor`` for each
consecutive restart, capped at ``max_backoff_s``.

"""

from __future__ import annotations

import math
from collections import deque
from typing import Literal

import msgspec

Restart = Literal['permanent', 'transient', 'temporary']


class RestartPolicy(msgspec.Struct, frozen=True, kw_only=True):
    restart: Restart = 'temporary'
    max_restarts: int = 3
    within_s: float = 5.0
    backoff_s: float = 0.0
    backoff_factor: float = 2.0
    max_backoff_s: float = 30.0

    def __post_init__(self) -> None:
        def bad(what: str) -> ValueError:
            return ValueError(f'RestartPolicy: {what}')

        if self.restart not in ('permanent', 'transient', 'temporary'):
            raise bad(
                f'restart={self.restart!r} is not one of '
                "'permanent', 'transient', 'temporary'"
            )
        if isinstance(self.max_restarts, bool) or not isinstance(
            self.max_restarts, int
        ):
            raise bad(f'max_restarts={self.max_restarts!r} must be an int')
        if self.max_restarts < 0:
            raise bad(f'max_restarts={self.max_restarts} must be >= 0')
        for name in ('within_s', 'backoff_s', 'max_backoff_s', 'backoff_factor'):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or math.isnan(v):
                raise bad(f'{name}={v!r} must be a number')
        if not (0 < self.within_s < math.inf):
            raise bad(
                f'within_s={self.within_s} must be a positive, finite number of seconds'
            )
        if self.backoff_s < 0 or self.max_backoff_s < 0:
            raise bad('backoff_s and max_backoff_s must be >= 0')
        if self.backoff_factor < 1:
            raise bad(f'backoff_factor={self.backoff_factor} must be >= 1')

    def should_restart(self, failed: bool) -> bool:
        """Does this policy restart a service that ended (``failed`` or not)?"""
        return self.restart == 'permanent' or (self.restart == 'transient' and failed)

    def backoff(self, consecutive: int) -> float:
        """Seconds to wait before restart number ``consecutive`` (1-based)."""
        if self.backoff_s == 0:
            return 0.0
        return min(
            self.backoff_s * self.backoff_factor ** (consecutive - 1),
            self.max_backoff_s,
        )


TEMPORARY = RestartPolicy()
PERMANENT = RestartPolicy(restart='permanent')
TRANSIENT = RestartPolicy(restart='transient')


def as_policy(policy: RestartPolicy | str | dict | None) -> RestartPolicy:
    """Accept a policy, one of its restart names, or its fields as a dict."""
    if policy is None:
        return TEMPORARY
    if isinstance(policy, RestartPolicy):
        return policy
    if isinstance(policy, str):
        return RestartPolicy(restart=policy)  # type: ignore[arg-type]
    if isinstance(policy, dict):
        try:
            return msgspec.convert(policy, RestartPolicy)
        except msgspec.ValidationError as err:
            raise ValueError(f'RestartPolicy: {err}') from None
    raise TypeError(
        f'restart policy must be a RestartPolicy, a str or a dict, not {policy!r}'
    )


class RestartIntensity:
    """Counts restarts in a sliding window on trio's clock."""

    def __init__(self, policy: RestartPolicy):
        self.policy = policy
        self._times: deque[float] = deque()
        self.consecutive = 0

    def allow(self, now: float) -> bool:
        """Record a restart at ``now``; ``False`` means intensity exceeded."""
        window = self.policy.within_s
        while self._times and now - self._times[0] >= window:
            self._times.popleft()
        if len(self._times) >= self.policy.max_restarts:
            return False
        self._times.append(now)
        self.consecutive += 1
        return True

    def reset_backoff(self) -> None:
        self.consecutive = 0
