"""The backend conformance kit (``tractor_sampler.testing``): the built-in
``sim`` backend passes it; deliberately broken backends (``broken_backends``)
fail exactly the matching check, with a message saying how to fix them."""

from __future__ import annotations

import inspect
import re
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from tractor_sampler.testing import BackendConformance

pytest_plugins = ['pytester']

BROKEN = Path(__file__).with_name('broken_backends.py')
CHECK_NAMES = [
    'test_backend_registered',
    'test_cancellation',
    'test_first_batch_has_every_symbol',
    'test_history',
    'test_quote_messages',
    'test_stream_quotes_rejects_unknown_config',
    'test_stream_quotes_returns_async_iterator',
    'test_symbol_info',
]
CHECKS = len(CHECK_NAMES)


class TestSimConformance(BackendConformance):
    """The kit on the built-in backend, in this suite's own pytest setup
    (``trio_mode = true``): every check passes."""

    backend = 'sim'
    symbols = ['AAA', 'BBB']
    config = {'tick_rate': 200.0}  # history and symbol_info take none of it


def test_kit_has_the_checks():
    names = sorted(n for n in dir(BackendConformance) if n.startswith('test_'))
    assert names == CHECK_NAMES
    # plain methods, so they run under any pytest setup (trio_mode included)
    assert not any(
        inspect.iscoroutinefunction(getattr(BackendConformance, n)) for n in names
    )


def run_kit(
    pytester: pytest.Pytester, backend: str, plugin: bool = True, **attrs: Any
) -> pytest.RunResult:
    """Run the kit on ``backend`` (registered from ``broken_backends``) in a
    pytest subprocess configured with ``trio_mode = true``."""
    pytester.makepyfile(broken_backends=BROKEN.read_text())
    pytester.makeini('[pytest]\ntrio_mode = true\n')
    lines = [f'backend = {backend!r}', 'timeout = 1.0']
    if plugin:
        lines.append('plugin = broken_backends')
    lines += [f'{k} = {v!r}' for k, v in attrs.items()]
    body = textwrap.indent('\n'.join(lines), '    ')
    pytester.makepyfile(
        test_kit=(
            'import broken_backends\n'
            'from tractor_sampler.testing import BackendConformance\n\n\n'
            f'class TestKit(BackendConformance):\n{body}\n'
        )
    )
    return pytester.runpytest_subprocess(
        '-v', '-rs', '-p', 'no:cacheprovider', timeout=60
    )


def outcomes(result: pytest.RunResult) -> dict[str, str]:
    """Each check's outcome, by name, from the verbose report."""
    out = {}
    for text in result.outlines:
        m = re.match(
            r'test_kit\.py::TestKit::(\w+) (PASSED|FAILED|SKIPPED|ERROR)\b', text
        )
        if m:
            out[m[1]] = m[2]
    return out


def expect(
    result: pytest.RunResult, failed: Sequence[str] = (), skipped: Sequence[str] = ()
) -> None:
    got = outcomes(result)
    assert len(got) == CHECKS, result.stdout.str()
    want = {n: 'PASSED' for n in CHECK_NAMES}
    want.update({n: 'FAILED' for n in failed})
    want.update({n: 'SKIPPED' for n in skipped})
    assert got == want, result.stdout.str()
    result.assert_outcomes(
        passed=CHECKS - len(failed) - len(skipped),
        failed=len(failed),
        skipped=len(skipped),
    )


NO_EXTRAS = ['test_history', 'test_symbol_info']


def line(*fragments: str) -> str:
    """An fnmatch pattern for a line holding the literal ``fragments`` in
    order."""
    return '*' + '*'.join(re.sub(r'([][*?])', r'[\1]', f) for f in fragments) + '*'


def test_minimal_backend_passes_and_skips_what_it_lacks(pytester):
    result = run_kit(pytester, 'minimal', symbols=['AAA', 'BBB'])
    expect(result, skipped=NO_EXTRAS)
    result.stdout.fnmatch_lines(
        [
            line('SKIPPED', "backend 'minimal' registers no history"),
            line('SKIPPED', "backend 'minimal' registers no symbol_info"),
        ]
    )


def test_missing_backend_says_how_to_publish_it(pytester):
    result = run_kit(pytester, 'nope', plugin=False)
    expect(result, failed=CHECK_NAMES)  # every check needs the backend
    result.stdout.fnmatch_lines(
        [
            line("no backend named 'nope' is registered (installed backends: ", 'sim'),
            line('[project.entry-points.tractor_sampler]'),
            line('nope = "yourpkg.backend"'),
        ]
    )


def test_lists_instead_of_dicts(pytester):
    result = run_kit(pytester, 'lists')
    expect(
        result,
        failed=['test_first_batch_has_every_symbol', 'test_quote_messages'],
        skipped=NO_EXTRAS,
    )
    example = "{'AAA': {'last': 1.0, 'ticks': [{'type': 'trade', 'price': 1.0, 'size': 2.0}]}}"
    result.stdout.fnmatch_lines(
        [
            line(
                "stream_quotes(['AAA']) yielded a list (batch #0); yield dicts mapping each "
                f'symbol to a quote dict, e.g. {example}'
            ),
            line("stream_quotes(['AAA']): batch #0 breaks the quote contract:"),
            line(
                'the batch is a list; yield dicts mapping each symbol to a quote dict'
            ),
        ]
    )


def test_ticks_without_type(pytester):
    result = run_kit(pytester, 'untyped_ticks')
    expect(result, failed=['test_quote_messages'], skipped=NO_EXTRAS)
    result.stdout.fnmatch_lines(
        [
            line("'AAA': tick #0: has no 'type'", "give every tick a str 'type'"),
        ]
    )


def test_config_silently_accepted(pytester):
    result = run_kit(pytester, 'lax_config')
    expect(
        result, failed=['test_stream_quotes_rejects_unknown_config'], skipped=NO_EXTRAS
    )
    result.stdout.fnmatch_lines(
        [
            line(
                "stream_quotes(['AAA'], conformance_bogus_option=1) silently accepted the "
                "unknown config keyword 'conformance_bogus_option' and streamed; take your "
                'options as keyword-only parameters'
            ),
        ]
    )


def test_config_error_on_first_iteration_is_tolerated(pytester):
    result = run_kit(pytester, 'late_config_error')
    expect(result, skipped=NO_EXTRAS)
    result.stdout.fnmatch_lines(
        [
            line(
                "UserWarning: backend 'late_config_error': stream_quotes(['AAA'], "
                'conformance_bogus_option=1) raised on the first iteration, not on the call'
            ),
        ]
    )


def test_hang_on_cancellation(pytester):
    result = run_kit(pytester, 'hangs_on_cancel')
    expect(result, failed=['test_cancellation'], skipped=NO_EXTRAS)
    result.stdout.fnmatch_lines(
        [
            line(
                "backend 'hangs_on_cancel': stream_quotes(['AAA'])'s __anext__() after the "
                'consumer was cancelled was still running after 2 s (the kit cancels every '
                'wait after 1 s): the backend ignores trio cancellation',
                'no `trio.CancelScope(shield=True)` around a wait that may not end',
            ),
        ]
    )


def test_history_off_the_period_boundaries(pytester):
    result = run_kit(pytester, 'off_boundary_history')
    expect(result, failed=['test_history'], skipped=['test_symbol_info'])
    result.stdout.fnmatch_lines(
        [
            line(
                "history('AAA', 1.0, ",
                'bar #0 starts at ',
                'not on a 1 s period boundary; bar times must be multiples of the period',
            ),
        ]
    )


def test_history_of_the_wrong_length(pytester):
    result = run_kit(pytester, 'short_history', history_count=20)
    expect(result, failed=['test_history'], skipped=['test_symbol_info'])
    result.stdout.fnmatch_lines(
        [
            line(
                "history('AAA', 1.0, ",
                ', 20) returned (19,) bars; return a 1-d array of exactly count=20 bars',
            ),
        ]
    )


def test_symbol_info_with_zero_tick_size(pytester):
    result = run_kit(pytester, 'bad_symbol_info')
    expect(result, failed=['test_symbol_info'], skipped=['test_history'])
    result.stdout.fnmatch_lines(
        [
            line(
                "'tick_size' is 0.0; give the smallest price (tick_size) or size (lot_size) "
                'increment as a finite number > 0'
            ),
        ]
    )


def test_a_stream_that_fails_after_two_seconds_fails_the_kit(pytester):
    """Its first 20 batches come in well under 2 s: the kit reads for
    min_stream_s (5 s by default) as well, and sees it raise."""
    assert BackendConformance.min_stream_s == 5.0
    result = run_kit(pytester, 'fails_after_2s')
    expect(result, failed=['test_quote_messages'], skipped=NO_EXTRAS)
    result.stdout.fnmatch_lines(
        [
            line(
                "stream_quotes(['AAA']) raised RuntimeError: the venue dropped the "
                'connection while the kit waited for batch #',
                ' s into the stream',
            ),
        ]
    )


def test_the_minimum_stream_time_is_the_authors_to_set(pytester):
    # a backend known to stream for 1 s only: the author lowers the bound
    result = run_kit(pytester, 'fails_after_2s', min_stream_s=1.0)
    expect(result, skipped=NO_EXTRAS)
