"""
The backend conformance kit: checks a backend plugin against the contracts
of ``docs/hooks.md`` the way the feed daemon relies on them.

Backend authors subclass :class:`BackendConformance` in their own test
suite (like langchain's standard tests)::

    from tractor_sampler.testing import BackendConformance

    class TestMyBackend(BackendConformance):
        backend = 'mybackend'
        symbols = ['AAA', 'BBB']
        config = {'api_key': 'test'}

Every check is a plain synchronous test method that runs its async body
with ``trio.run`` itself, so the kit works in any pytest setup, with or
without pytest-trio (``trio_mode`` included).  Every failure says what is
wrong and how to fix the backend.

The quote stream is read for a minimum time, not only a number of
batches: ``test_quote_messages`` reads it for at least ``min_stream_s``
seconds (5 by default, a class attribute) and at least ``batches``
batches, so a stream that raises after a few seconds (a dropped
connection, a heartbeat timeout) fails the kit instead of passing on its
first 20 batches.  A well-behaved backend passes it in about that time;
raise ``min_stream_s`` to cover a slower failure mode of your venue.

The checks of quotes, bars and symbol info are the feed daemon's own
(:mod:`tractor_sampler._conform`): what passes the kit passes the daemon.

"""

from __future__ import annotations

import contextlib
import inspect
import os
import threading
import time
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any, NoReturn

import numpy as np
import pytest
import trio

from tractor_services import describe_error

from ._conform import (
    _BARS_EXAMPLE,
    SYMBOL_INFO_EXAMPLE,
    BarsProblem,
    check_bars,
    example_batch,
    quote_problems,
    symbol_info_problems,
)
from ._datadir import ENV_VAR as DATA_DIR_ENV
from ._history import prepend_history
from ._plugins import (
    ENV_VAR,
    Backend,
    BackendRegistry,
    PluginError,
    config_for,
    load_backends,
)
from ._store import STORE_ENV
from .hookspecs import PROJECT, History, SymbolInfo
from .shm import DEFAULT_DTYPE, open_shm_array

__all__ = ['BackendConformance', 'ConformanceError', 'own_data_dir', 'session_data_dir']

#: the unknown config keyword the config check passes
BOGUS_OPTION = 'conformance_bogus_option'
#: at most this many problems are listed per failure
MAX_PROBLEMS = 10


# --- data directories of a test session ------------------------------------------
# The bar store is on by default, in the per-user data directory.  A suite
# that runs feed daemons imports these two autouse fixtures into its
# conftest.py (``from tractor_sampler.testing import own_data_dir,
# session_data_dir``) and nothing it starts writes there.


@pytest.fixture(scope='session', autouse=True)
def session_data_dir(tmp_path_factory: Any) -> Any:
    """For the whole session (fixtures of any scope, the programs they
    run) the data directory is a temporary one, and so is
    ``$XDG_DATA_HOME``."""
    base = tmp_path_factory.mktemp('session-data')
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv('XDG_DATA_HOME', str(base / 'xdg'))
        mp.setenv(DATA_DIR_ENV, str(base / 'tractor-sampler'))
        yield base


@pytest.fixture(autouse=True)
def own_data_dir(tmp_path_factory: Any, monkeypatch: Any) -> None:
    """The bar store off unless a test turns it on (deleting
    ``$TRACTOR_SAMPLER_STORE``), and each test's data directory its own:
    what a test's daemons store is never seeded into another test's
    topics."""
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path_factory.mktemp('sampler-data')))
    monkeypatch.setenv(STORE_ENV, 'none')


class ConformanceError(AssertionError):
    """The backend raised where the contract says it must not; the message
    says how to fix it, the chained exception is the backend's own."""


def _fail(msg: str) -> NoReturn:
    """Fail the check with ``msg`` alone: no traceback, and no exception
    it was raised while handling (the message says it all)."""
    try:
        pytest.fail(msg, pytrace=False)
    except pytest.fail.Exception as exc:
        raise exc from None


class _Watchdog:
    """Bounds each step of a check from outside its event loop (which runs
    in a thread), so a backend that ignores trio's cancellation or blocks
    the loop fails the check instead of hanging the test run."""

    def __init__(self, timeout: float) -> None:
        self._cond = threading.Condition()
        self._grace = timeout
        self._done = False
        self.step = 'starting the event loop'
        self.limit = 2 * timeout
        self._deadline = time.monotonic() + self.limit

    def enter(self, step: str, seconds: float) -> None:
        """The loop starts ``step``, which it bounds by ``seconds`` itself."""
        with self._cond:
            self.step = step
            self.limit = seconds + self._grace
            self._deadline = time.monotonic() + self.limit

    def finish(self) -> None:
        with self._cond:
            self._done = True
            self._cond.notify_all()

    def wait(self) -> str | None:
        """Wait for the loop to finish; the step it is stuck in if it
        overruns that step's deadline, else ``None``."""
        with self._cond:
            while not self._done:
                left = self._deadline - time.monotonic()
                if left <= 0:
                    return self.step
                self._cond.wait(left)
            return None


class BackendConformance:
    """Conformance checks for one registered backend.

    Subclass it in a test module (the class name must start with ``Test``
    for pytest to collect it) and set :attr:`backend`::

        from tractor_sampler.testing import BackendConformance

        class TestMyBackend(BackendConformance):
            backend = 'mybackend'          # the name your plugin registers
            symbols = ['AAA', 'BBB']       # symbols your backend can stream
            config = {'api_key': 'test'}   # the feed daemon's **config

    The backend is looked up with :func:`~tractor_sampler.load_backends`:
    install your distribution (``pip install -e .``) so its
    ``tractor_sampler`` entry point is found, or set :attr:`plugin` to the
    plugin module to register it for these tests only.

    ``config`` is passed as the feed daemon passes it: all of it to
    ``stream_quotes``; to ``history`` and ``symbol_info`` only the keywords
    each takes (all of it if it takes ``**config``).

    The checks (one test method each):

    - ``test_backend_registered``: found by name, with its distribution;
    - ``test_stream_quotes_returns_async_iterator``: the call returns an
      async iterator at once;
    - ``test_stream_quotes_rejects_unknown_config``: an unknown config
      keyword raises ``TypeError``/``ValueError`` (on the call; on the first
      iteration is tolerated with a warning);
    - ``test_first_batch_has_every_symbol``: the first batch holds a quote
      per requested symbol (the subscribers' initial quotes);
    - ``test_quote_messages``: well-formed, msgpack-encodable quotes and
      ticks, read for at least :attr:`min_stream_s` seconds (default 5)
      *and* at least :attr:`batches` batches, so a stream that fails after
      a while (a dropped connection, a heartbeat timeout, a token that
      expires) fails the check; raise ``min_stream_s`` to cover a slower
      failure mode of your venue;
    - ``test_cancellation``: a consumer cancelled while waiting returns
      promptly, the stream closes cleanly and can be opened again;
    - ``test_history``: for each of :attr:`periods`, bars the feed daemon
      can backfill: ``DEFAULT_DTYPE``, one per period on period boundaries,
      ending with the last complete bar before ``end_time``, sane OHLCV
      (skipped if the backend registers no ``history``);
    - ``test_symbol_info``: ``symbol``, ``tick_size``, ``lot_size``
      (skipped if the backend registers no ``symbol_info``).

    Every wait is bounded by :attr:`timeout`; a backend that ignores
    cancellation or blocks the event loop fails after twice that (the event
    loop runs in a daemon thread, left behind if it is stuck).
    """

    #: the registered backend name (required)
    backend: str = ''
    #: a plugin module (or object) to register for these tests, when it is
    #: not installed through its entry point
    plugin: Any = None
    #: symbols to stream, ask history and symbol info for
    symbols: Sequence[str] = ('AAA',)
    #: the feed daemon's config (see the class docstring)
    config: Mapping[str, Any] = {}
    #: bar periods (seconds) whose history is checked
    periods: Sequence[float] = (1.0, 60.0)
    #: bars asked of ``history`` per period
    history_count: int = 50
    #: batches read from the stream by ``test_quote_messages`` (at least)
    batches: int = 20
    #: seconds ``test_quote_messages`` reads the stream for (at least): a
    #: stream that raises after a while fails the kit; raise it to cover a
    #: slower failure mode (the check takes this long for a good backend)
    min_stream_s: float = 5.0
    #: the bound on every wait, in seconds
    timeout: float = 10.0

    # -- the registry ---------------------------------------------------------

    def load_registry(self) -> BackendRegistry:
        """The backends, as the feed daemon loads them (plus :attr:`plugin`)."""
        try:
            return load_backends(extra=[self.plugin] if self.plugin is not None else ())
        except PluginError as err:
            hint = ''
            if self.plugin is not None and 'already' in str(err):
                hint = (
                    ' The plugin seems installed through its entry point already: '
                    f'remove `plugin = ...` from {type(self).__name__}.'
                )
            raise ConformanceError(
                f'loading the {PROJECT} backends failed: {err}.{hint} Fix the plugin '
                f'so it loads (see the Errors section of the backend hooks reference).'
            ) from err

    def get_backend(self) -> Backend:
        """The backend under test, or a failure saying how to register it."""
        name = self.backend
        if not name or not isinstance(name, str):
            _fail(
                f'{type(self).__name__} names no backend: set the class attribute '
                f"`backend = '<name>'` to the name your plugin passes to register()."
            )
        registry = self.load_registry()
        if name in registry:
            return registry[name]
        installed = ', '.join(sorted(registry)) or 'none'
        plugins = ', '.join(f'{p} ({d})' for p, d in sorted(registry.plugins.items()))
        env = os.environ.get(ENV_VAR)
        env_note = (
            f' ${ENV_VAR} is set to {env!r}: only the plugins it names load.'
            if env is not None
            else ''
        )
        if self.plugin is not None:
            how = (
                f'The plugin {self.plugin!r} loaded but did not register it: its '
                f'`{PROJECT}_register_backends(register)` hook (marked with '
                f'`tractor_sampler.hookimpl`) must call `register({name!r}, '
                f'stream_quotes=...)`.'
            )
        else:
            how = (
                f'Publish your plugin module under the entry-point group in your '
                f"distribution's pyproject.toml and install it (pip install -e .):\n\n"
                f'    [project.entry-points.{PROJECT}]\n'
                f'    {name} = "yourpkg.backend"\n\n'
                f'where yourpkg.backend has a `{PROJECT}_register_backends(register)` '
                f'hook calling `register({name!r}, stream_quotes=...)`; or set '
                f'`plugin = yourpkg.backend` on {type(self).__name__} to register '
                f'it for these tests only.'
            )
        _fail(
            f'no backend named {name!r} is registered (installed backends: '
            f'{installed}; plugins: {plugins}).{env_note} {how}'
        )

    # -- running ----------------------------------------------------------------

    def run_checks(self, fn: Callable[[], Awaitable[None]]) -> None:
        """Run ``fn`` with ``trio.run`` in a thread, bounding every step
        :meth:`_step` announces from outside the loop."""
        watch = self._watch = _Watchdog(self.timeout)
        errors: list[BaseException] = []

        def target() -> None:
            try:
                trio.run(fn)
            except BaseException as err:  # re-raised in the test's thread
                errors.append(err)
            finally:
                watch.finish()

        thread = threading.Thread(
            target=target, name=f'conformance-{self.backend}', daemon=True
        )
        thread.start()
        stuck = watch.wait()
        if stuck is not None:
            _fail(
                f'backend {self.backend!r}: {stuck} was still running after '
                f'{watch.limit:g} s (the kit cancels every wait after '
                f'{self.timeout:g} s): the backend ignores trio cancellation or '
                f'blocks the event loop. Wait only at trio checkpoints that can be '
                f'cancelled: no `trio.CancelScope(shield=True)` around a wait that '
                f'may not end, no endless await in `finally:` or `except '
                f'trio.Cancelled:`, no blocking calls (time.sleep, synchronous '
                f'socket reads) in async code; and let trio.Cancelled propagate. '
                f'(The stuck event loop is left in a daemon thread.)'
            )
        thread.join()
        if errors:
            raise errors[0]

    def _step(self, step: str) -> None:
        self._watch.enter(step, self.timeout)

    # -- calls ----------------------------------------------------------------

    def _call_repr(
        self, fn: str, *args: Any, config: Mapping[str, Any] | None = None
    ) -> str:
        parts = [repr(a) for a in args]
        parts += [
            f'{k}={v!r}' for k, v in (self.config if config is None else config).items()
        ]
        return f'{fn}({", ".join(parts)})'

    def _example_batch(self) -> str:
        return example_batch(self.symbols)

    def _start_stream(self, be: Backend, config: Mapping[str, Any]) -> tuple[Any, str]:
        """Call ``stream_quotes``; the iterator (checked to be one) and how
        the call reads in messages."""
        syms = list(self.symbols)
        call = self._call_repr('stream_quotes', syms, config=config)
        self._step(f'the call {call}')
        start = time.monotonic()
        try:
            it = be.stream_quotes(syms, **config)
        except Exception as err:
            raise ConformanceError(
                f'{call} raised {describe_error(err)}; with valid symbols and config it '
                f'must return an async iterator of quote batches (set `symbols` and '
                f'`config` on {type(self).__name__} to ones your backend accepts).'
            ) from err
        took = time.monotonic() - start
        if inspect.iscoroutine(it):
            it.close()
            _fail(
                f'{call} returned a coroutine, not an async iterator: it is an '
                f'`async def` without `yield`. Make it an async generator '
                f'(`yield` each batch) or a plain `def` that checks the config and '
                f'returns one.'
            )
        if not hasattr(it, '__anext__'):
            also = (
                ' It is async iterable but not an iterator: return `obj.__aiter__()`.'
                if hasattr(it, '__aiter__')
                else ''
            )
            _fail(
                f'{call} returned {type(it).__name__}, which has no __anext__: '
                f'return an async iterator (an async generator, or an object with '
                f'__aiter__/__anext__) of {{symbol: quote}} batches.{also}'
            )
        if took > self.timeout:
            _fail(
                f'{call} took {took:.1f} s to return (the bound is {self.timeout:g} '
                f's): return the iterator at once, after checking the config, and '
                f'do slow work (connecting, subscribing) inside the iteration.'
            )
        return it, call

    @contextlib.asynccontextmanager
    async def _open_stream(self, be: Backend) -> AsyncIterator[tuple[Any, str]]:
        """A checked stream, closed (and the close checked) on exit."""
        it, call = self._start_stream(be, self.config)
        try:
            yield it, call
        except BaseException:
            await self._close(it, call, strict=False)
            raise
        await self._close(it, call, strict=True)

    async def _close(self, it: Any, call: str, *, strict: bool) -> None:
        aclose = getattr(it, 'aclose', None)
        if aclose is None:
            return
        self._step(f'closing the stream of {call} with aclose()')
        with trio.move_on_after(self.timeout) as cs:
            try:
                await aclose()
            except Exception as err:
                if strict:
                    raise ConformanceError(
                        f'{call}: aclose() raised {describe_error(err)}; closing a stream '
                        f'must not raise: let GeneratorExit and trio.Cancelled '
                        f'propagate and handle cleanup errors in your `finally:`.'
                    ) from err
        if cs.cancelled_caught and strict:
            _fail(
                f'{call}: aclose() did not complete within {self.timeout:g} s: the '
                f'cleanup in your `finally:` (or `except GeneratorExit:`) waits too '
                f'long; bound it (trio.move_on_after) or drop the wait.'
            )

    async def _next_batch(self, it: Any, call: str, what: str, n: int = 0) -> Any:
        self._step(f'{what} of {call}')
        with trio.move_on_after(self.timeout):
            try:
                return await it.__anext__()
            except StopAsyncIteration:
                _fail(
                    f'{call} ended after {n} batches; a quote stream must keep '
                    f'yielding until the feed daemon closes it (loop forever, '
                    f'waiting for new data).'
                )
            except Exception as err:
                raise ConformanceError(
                    f'{call} raised {describe_error(err)} while the kit waited for '
                    f'{what}; with valid symbols and config the stream must yield '
                    f'batches.'
                ) from err
        _fail(
            f'{call} yielded no batch within {self.timeout:g} s (waiting for '
            f'{what}); yield the first batch promptly (the feed daemon waits for '
            f'it) and then at least once per `timeout` ({self.timeout:g} s, set on '
            f'{type(self).__name__} if your feed is slower).'
        )

    def _check_batch_type(self, batch: Any, call: str, n: int) -> dict[str, Any]:
        if not isinstance(batch, dict):
            _fail(
                f'{call} yielded a {type(batch).__name__} (batch #{n}); yield dicts '
                f'mapping each symbol to a quote dict, e.g. {self._example_batch()}.'
            )
        return batch

    # -- the checks -----------------------------------------------------------

    def test_backend_registered(self) -> None:
        """The backend is found by name, and names its distribution."""
        be = self.get_backend()
        assert be.name == self.backend
        if not isinstance(be.dist, str) or not be.dist:
            _fail(
                f'backend {self.backend!r} names no distribution (dist={be.dist!r}); '
                f'register it through `{PROJECT}_register_backends(register)` from a '
                f'module published under the `{PROJECT}` entry-point group.'
            )

    def test_stream_quotes_returns_async_iterator(self) -> None:
        """``stream_quotes(symbols, **config)`` returns an async iterator at
        once, without being awaited."""
        be = self.get_backend()

        async def check() -> None:
            it, call = self._start_stream(be, self.config)
            await self._close(it, call, strict=True)

        self.run_checks(check)

    def test_stream_quotes_rejects_unknown_config(self) -> None:
        """An unknown config keyword raises ``TypeError`` or ``ValueError``:
        on the call, as the contract says, or (tolerated, with a warning) on
        the first iteration."""
        be = self.get_backend()
        config = {**self.config, BOGUS_OPTION: 1}
        syms = list(self.symbols)
        call = self._call_repr('stream_quotes', syms, config=config)
        fix = (
            'take your options as keyword-only parameters with no catch-all '
            '**kwargs (def stream_quotes(symbols, *, my_option=...)), or raise '
            'TypeError for unknown keys, when called'
        )

        async def check() -> None:
            self._step(f'the call {call}')
            try:
                it = be.stream_quotes(syms, **config)
            except (TypeError, ValueError):
                return
            except Exception as err:
                raise ConformanceError(
                    f'{call} raised {describe_error(err)} for an unknown config keyword; '
                    f'raise TypeError (unknown keyword) or ValueError (bad value).'
                ) from err
            if not hasattr(it, '__anext__'):
                if inspect.iscoroutine(it):
                    it.close()
                _fail(f'{call} returned {type(it).__name__}, not an async iterator.')
            try:
                self._step(f'the first batch of {call}')
                with trio.move_on_after(self.timeout):
                    try:
                        await it.__anext__()
                    except (TypeError, ValueError):
                        warnings.warn(
                            f'backend {self.backend!r}: {call} raised on the first '
                            f'iteration, not on the call: the feed daemon reports '
                            f'config errors best when they raise on the call; '
                            f'{fix} (an async generator function cannot: make '
                            f'stream_quotes a plain function returning one).',
                            stacklevel=1,
                        )
                        return
                    except StopAsyncIteration:
                        _fail(f'{call} ended without raising; {fix}.')
                    except Exception as err:
                        raise ConformanceError(
                            f'{call} raised {describe_error(err)} for an unknown config '
                            f'keyword; raise TypeError or ValueError instead.'
                        ) from err
                    _fail(
                        f'{call} silently accepted the unknown config keyword '
                        f'{BOGUS_OPTION!r} and streamed; {fix}, so a misspelt option '
                        f'is an error rather than ignored.'
                    )
                _fail(
                    f'{call} neither raised for the unknown config keyword '
                    f'{BOGUS_OPTION!r} nor yielded within {self.timeout:g} s; {fix}.'
                )
            finally:
                await self._close(it, call, strict=False)

        self.run_checks(check)

    def test_first_batch_has_every_symbol(self) -> None:
        """The first batch holds a quote for every requested symbol: the feed
        daemon takes each subscriber's initial quote from it."""
        be = self.get_backend()

        async def check() -> None:
            async with self._open_stream(be) as (it, call):
                batch = self._check_batch_type(
                    await self._next_batch(it, call, 'the first batch'), call, 0
                )
                missing = [s for s in self.symbols if s not in batch]
                if missing:
                    _fail(
                        f'{call}: the first batch has no quote for {missing} (it has '
                        f'{sorted(map(str, batch))}); the feed daemon uses the first '
                        f"quote of each symbol as every subscriber's initial quote, so "
                        f'yield a first batch with a quote for every requested symbol '
                        f'(a snapshot of each), before any partial batches.'
                    )

        self.run_checks(check)

    def test_quote_messages(self) -> None:
        """Every batch read for :attr:`min_stream_s` seconds and at least
        :attr:`batches` batches is a ``{symbol: quote}`` dict of requested
        symbols; quotes are msgpack-encodable dicts with str keys, well-formed
        ``ticks`` and ``time``; the stream neither ends nor raises meanwhile."""
        be = self.get_backend()

        async def check() -> None:
            async with self._open_stream(be) as (it, call):
                start = trio.current_time()
                n = 0
                while (
                    n < self.batches or trio.current_time() - start < self.min_stream_s
                ):
                    took = trio.current_time() - start
                    batch = await self._next_batch(
                        it, call, f'batch #{n}, {took:.1f} s into the stream', n
                    )
                    problems = self.quote_problems(batch)
                    if problems:
                        listed = '\n'.join(f'  - {p}' for p in problems[:MAX_PROBLEMS])
                        more = len(problems) - MAX_PROBLEMS
                        _fail(
                            f'{call}: batch #{n} breaks the quote contract:\n{listed}'
                            + (f'\n  ... and {more} more' if more > 0 else '')
                        )
                    n += 1

        self.run_checks(check)

    def quote_problems(self, batch: Any) -> list[str]:
        """What is wrong with one batch, each with its fix (the feed
        daemon's own check: :func:`tractor_sampler._conform.quote_problems`)."""
        return quote_problems(batch, self.symbols)

    def test_cancellation(self) -> None:
        """A consumer cancelled while it waits for the next batch gets control
        back promptly; closing the stream then completes without raising; a
        fresh stream opens and yields afterwards."""
        be = self.get_backend()

        async def check() -> None:
            async with self._open_stream(be) as (it, call):
                await self._next_batch(it, call, 'the first batch')
                await self._cancel_waiting(it, call)
            async with self._open_stream(be) as (it, call):
                await self._next_batch(
                    it, call, 'the first batch of a stream opened after cancelling one'
                )

        self.run_checks(check)

    async def _cancel_waiting(self, it: Any, call: str) -> None:
        """Cancel the consumer (its cancel scope is cancelled before it calls
        ``__anext__``, so the cancel lands at the backend's first checkpoint,
        where it waits) and time how long ``__anext__`` takes to give up."""
        for _ in range(self.batches):
            self._step(f"{call}'s __anext__() after the consumer was cancelled")
            start = trio.current_time()
            with trio.CancelScope() as cs:
                cs.cancel()
                try:
                    await it.__anext__()
                except StopAsyncIteration:
                    _fail(
                        f'{call} ended when the consumer was cancelled; let '
                        f'trio.Cancelled propagate instead of returning.'
                    )
                except Exception as err:
                    raise ConformanceError(
                        f'{call}: __anext__() raised {describe_error(err)} when the '
                        f'consumer was cancelled; let trio.Cancelled propagate (do '
                        f'not catch it, or re-raise it unchanged).'
                    ) from err
            took = trio.current_time() - start
            if took > self.timeout:
                _fail(
                    f'{call}: __anext__() took {took:.1f} s to return after the '
                    f'consumer was cancelled (the bound is {self.timeout:g} s); '
                    f'wait only at trio checkpoints that can be cancelled.'
                )
            if cs.cancelled_caught:
                return
        _fail(
            f'{call}: __anext__() returned a batch {self.batches} times in a row '
            f"although the consumer's cancel scope was cancelled before each call: "
            f'it swallows trio.Cancelled (an `except trio.Cancelled` or `except '
            f'BaseException` that does not re-raise) or never awaits a trio '
            f'checkpoint; await a checkpoint when waiting for data and let '
            f'trio.Cancelled propagate.'
        )

    def test_history(self) -> None:
        """For every period of :attr:`periods`, ``history`` returns
        :attr:`history_count` bars the feed daemon can backfill: a structured
        array with every field of ``DEFAULT_DTYPE``, one bar per period on
        period boundaries, oldest first, the last one ending at the last
        period boundary at or before ``end_time`` (where the daemon's open
        bar starts), finite OHLC with low <= open, close <= high, volume >= 0;
        and ``prepend_history`` puts every field into a ``DEFAULT_DTYPE``
        buffer under its own name."""
        be = self.get_backend()
        if be.history is None:
            pytest.skip(f'backend {self.backend!r} registers no history')
        history: History = be.history
        config = config_for(history, self.config)
        symbol = list(self.symbols)[0]
        end_time = time.time()

        async def check() -> None:
            for period in self.periods:
                call = self._call_repr(
                    'history',
                    symbol,
                    float(period),
                    end_time,
                    self.history_count,
                    config=config,
                )
                self._step(f'awaiting {call}')
                with trio.move_on_after(self.timeout):
                    try:
                        bars = await history(
                            symbol,
                            float(period),
                            end_time,
                            self.history_count,
                            **config,
                        )
                    except Exception as err:
                        raise ConformanceError(
                            f'{call} raised {describe_error(err)}; with a valid symbol, '
                            f'period and config it must return the bars.'
                        ) from err
                    self._check_bars(bars, call, float(period), end_time)
                    continue
                _fail(
                    f'{call} did not return within {self.timeout:g} s; return the '
                    f'bars faster (fetch fewer per request) or raise `timeout` on '
                    f'{type(self).__name__}.'
                )

        self.run_checks(check)

    def _check_bars(self, bars: Any, call: str, period: float, end_time: float) -> None:
        try:
            open_bar = check_bars(
                bars, call, period, end_time, count=self.history_count
            )
        except BarsProblem as problem:
            _fail(str(problem))
        self._check_backfill(bars, call, period, open_bar)

    def _check_backfill(
        self, bars: np.ndarray, call: str, period: float, open_bar: float
    ) -> None:
        """Backfill the bars as the feed daemon does: prepend them (with
        ``prepend_history``) into a ``DEFAULT_DTYPE`` buffer holding the open
        bar; every field must arrive under its own name."""
        if not len(bars):
            return
        fix = f'return exactly DEFAULT_DTYPE: {_BARS_EXAMPLE}'
        with open_shm_array(len(bars) + 2, start=len(bars) + 1) as shm:
            row = np.zeros(1, dtype=shm.dtype)
            row['time'] = open_bar
            shm.push(row)
            try:
                prepend_history(shm, bars, period)
            except (TypeError, ValueError) as err:
                _fail(
                    f'{call}: the feed daemon cannot backfill bars of dtype '
                    f'{bars.dtype} into its DEFAULT_DTYPE buffers ({err}); {fix}.'
                )
            got = shm.array[:-1]
            assert DEFAULT_DTYPE.names is not None
            for f in DEFAULT_DTYPE.names[1:]:  # prepend_history renumbers 'index'
                if not np.array_equal(got[f], bars[f].astype(got.dtype[f])):
                    _fail(
                        f"{call}: backfilled into a DEFAULT_DTYPE buffer, the bars' "
                        f'{f!r} values do not arrive intact (dtype {bars.dtype}); {fix}.'
                    )

    def test_symbol_info(self) -> None:
        """For every symbol, ``symbol_info`` returns a msgpack-encodable dict
        with ``symbol`` and positive ``tick_size`` and ``lot_size``."""
        be = self.get_backend()
        if be.symbol_info is None:
            pytest.skip(f'backend {self.backend!r} registers no symbol_info')
        symbol_info: SymbolInfo = be.symbol_info
        config = config_for(symbol_info, self.config)

        async def check() -> None:
            for symbol in self.symbols:
                call = self._call_repr('symbol_info', symbol, config=config)
                self._step(f'awaiting {call}')
                with trio.move_on_after(self.timeout):
                    try:
                        info = await symbol_info(symbol, **config)
                    except Exception as err:
                        raise ConformanceError(
                            f'{call} raised {describe_error(err)}; it must describe every '
                            f'symbol the backend streams.'
                        ) from err
                    self._check_info(info, call)
                    continue
                _fail(f'{call} did not return within {self.timeout:g} s.')

        self.run_checks(check)

    def _check_info(self, info: Any, call: str) -> None:
        problems = symbol_info_problems(info)
        if problems:
            listed = '\n'.join(f'  - {p}' for p in problems)
            _fail(f'{call} returned {info!r}:\n{listed}\n(e.g. {SYMBOL_INFO_EXAMPLE})')
