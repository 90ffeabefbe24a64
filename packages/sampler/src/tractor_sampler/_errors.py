"""
The package's errors, in one place: every error tractor-sampler raises of
its own is a :class:`SamplerError`, so ``except tractor_sampler.SamplerError``
takes them all.  Each also keeps the builtin base it had before the
hierarchy (``RuntimeError``, ``KeyError``), so older ``except`` clauses
still match.

Errors from below (``tractor_services``' ``PeerGone``/``ServiceFailed``,
``feedbus``' ``SubscriptionDropped``) pass through as themselves; argument
checks raise ``ValueError``/``TypeError`` naming the argument, and
``shm.ShmOverrun`` is the shared-memory buffers' own.

"""

from __future__ import annotations

from collections.abc import Iterable, Mapping


class SamplerError(Exception):
    """Base class of tractor-sampler's own errors."""


class NotRunning(SamplerError, RuntimeError):
    """A call that needs one of the daemons' singletons ran in an actor
    that does not host it (the message names the daemon that does)."""


class NoSampler(NotRunning):
    """:func:`~tractor_sampler.get_sampler` outside samplerd."""


class NoFeedDaemon(NotRunning):
    """:func:`~tractor_sampler.get_feed_daemon` outside ``feedd.<backend>``."""


class AlreadyRunning(SamplerError, RuntimeError):
    """A second singleton was asked for in an actor that runs one."""


class SamplerRefused(SamplerError, RuntimeError):
    """samplerd refused a request (the message says why)."""


class SamplerGone(SamplerError, RuntimeError):
    """samplerd's step stream ended under a running topic."""


class PluginError(SamplerError):
    """A plugin failed to load or registered wrongly; the message names the
    distribution."""


class UnknownBackend(SamplerError, KeyError):
    """No backend of that name is installed."""

    def __init__(
        self,
        name: str,
        installed: Iterable[str],
        broken: Mapping[str, str] | None = None,
    ) -> None:
        self.name = name
        self.installed = sorted(installed)
        #: plugins left out because they are broken, with why
        self.broken = dict(broken or {})
        super().__init__(name)

    def __str__(self) -> str:
        names = ', '.join(self.installed) or 'none'
        text = f'no backend named {self.name!r} (installed: {names})'
        if self.broken:
            text += '; broken plugins left out: ' + '; '.join(self.broken.values())
        return text
