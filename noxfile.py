"""Sessions CI runs (``uv run nox``) and the benchmarks (``uv run nox -s bench``).

tractor 0.1.0a5 (the only release) requires pdbpp from a git URL, so every
uv install passes ``--overrides overrides.txt`` (``pdbpp>=0.11``) and tractor
comes in through the ``[tractor]`` extra of tractor-services.

- ``tests-services``, ``tests-feedbus``, ``tests-sampler``: one package and
  its in-repo dependencies only, in a fresh environment, then its tests.
- ``pip-recipe``: the plain-pip two-step install from the README, in a venv
  made by ``python -m venv`` (not uv).
- ``integration``: all packages, the top-level ``tests/``.
- ``lint``: ruff and mypy.  ``docs``: sphinx with ``-W``.
- ``chaos``: the fault tests (``tests/chaos``).  ``multihost``: the tests
  across hosts (``tests/multihost``: network, pid and mount namespaces; they
  need root and are skipped with the reason elsewhere).
- ``bench``: every ``benchmarks/bench_*.py`` (not run by default).

Interpreters: the per-package sessions run on every Python of the matrix
(3.11, 3.12) that is installed here; a missing one is skipped and named
(nox never downloads one).  ``REQUIRE_PYTHONS=3.11,3.12`` (set by
``.ci/run``) turns a missing interpreter into a failure instead.  The
single-interpreter sessions use the first of 3.11, 3.12, 3.10 present.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import nox

nox.options.default_venv_backend = 'uv'
nox.options.error_on_missing_interpreters = True
# a missing interpreter is skipped (or refused, below): never downloaded
os.environ.setdefault('UV_PYTHON_DOWNLOADS', 'never')
# the quick whole-tree checks first, so a run tells those early
nox.options.sessions = [
    'lint',
    'docs',
    'docs-commands',
    'integration',
    'multihost',
    'chaos',
    'pip-recipe',
    'tests-services',
    'tests-feedbus',
    'tests-sampler',
]

ROOT = Path(__file__).parent
OVERRIDES = 'overrides.txt'
MATRIX = ['3.11', '3.12']
SUPPORTED = ['3.11', '3.12', '3.10']  # in order of preference


def _runs(version: str) -> bool:
    """Is ``python<version>`` installed here (and not just a pyenv shim)?"""
    exe = shutil.which(f'python{version}')
    if exe is None:
        return False
    try:
        res = subprocess.run(
            [exe, '-c', "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return res.returncode == 0 and res.stdout.strip() == version


PRESENT = [v for v in SUPPORTED if _runs(v)]
_required = [v for v in os.environ.get('REQUIRE_PYTHONS', '').split(',') if v]
_missing_required = [v for v in _required if v not in PRESENT]
if _missing_required:
    sys.exit(
        f'nox: REQUIRE_PYTHONS asks for Python {", ".join(_missing_required)},'
        ' which is not installed here'
    )
if not PRESENT:
    sys.exit(f'nox: none of Python {", ".join(SUPPORTED)} is installed here')
PYTHONS = [v for v in MATRIX if v in PRESENT] or PRESENT[:1]
#: the interpreter of the single-version sessions
PY = PRESENT[0]
_skipped = [v for v in MATRIX if v not in PRESENT]
if _skipped:
    print(
        f'nox: Python {", ".join(_skipped)} not installed here: the per-package'
        f' sessions run on {", ".join(PYTHONS)} only',
        file=sys.stderr,
    )
TEST_DEPS = ['pytest>=8', 'pytest-trio>=0.8', 'hypothesis', 'psutil']
TRACTOR = 'tractor==0.1.0a5'
# pinned: a newer ruff may format differently, and `format --check` must not
# start failing on its own
RUFF = 'ruff==0.17.6'

# Each package: its folder, import name, and in-repo dependencies (folders).
PACKAGES = {
    'services': ('packages/tractor-services', 'tractor_services', []),
    'feedbus': ('packages/feedbus', 'feedbus', ['packages/tractor-services']),
    'sampler': (
        'packages/sampler',
        'tractor_sampler',
        ['packages/tractor-services', 'packages/feedbus'],
    ),
}
ALL_PACKAGES = [
    'packages/tractor-services[tractor]',
    'packages/feedbus',
    'packages/sampler',
]

# Without compiled bytecode a subactor spawn takes ~690 ms instead of ~300 ms
# (this environment sets PYTHONDONTWRITEBYTECODE=1).
UV_ENV = {'UV_COMPILE_BYTECODE': '1'}


def _install(session: nox.Session, *args: str) -> None:
    session.install('--overrides', OVERRIDES, *args, env=UV_ENV)


def _editable(paths: list[str]) -> list[str]:
    return [arg for path in paths for arg in ('-e', path)]


def _pytest(session: nox.Session, tests: str) -> None:
    """Run pytest on *tests*; "no tests collected" (exit 5) is a success."""
    if not (ROOT / tests).is_dir():
        session.log(f'{tests}/ does not exist yet: nothing to run')
        return
    session.run('pytest', tests, *session.posargs, success_codes=[0, 5])


def _tests(session: nox.Session, name: str) -> None:
    path, _import_name, deps = PACKAGES[name]
    # the package with tractor through its extra, and its in-repo dependencies
    # as local paths (the extra forwards to tractor-services[tractor])
    local = [f'{p}[tractor]' if p == 'packages/tractor-services' else p for p in deps]
    # tractor-sampler's tests need its extras: store (pyarrow), chart
    # (matplotlib), metrics (prometheus-client)
    extras = 'tractor,store,chart,metrics' if name == 'sampler' else 'tractor'
    _install(session, *_editable([*local, f'{path}[{extras}]']), *TEST_DEPS)
    _pytest(session, f'{path}/tests')


@nox.session(name='tests-services', python=PYTHONS)
def tests_services(session: nox.Session) -> None:
    """tractor-services alone: its unit tests."""
    _tests(session, 'services')


@nox.session(name='tests-feedbus', python=PYTHONS)
def tests_feedbus(session: nox.Session) -> None:
    """feedbus with tractor-services: its unit tests."""
    _tests(session, 'feedbus')


@nox.session(name='tests-sampler', python=PYTHONS)
def tests_sampler(session: nox.Session) -> None:
    """tractor-sampler with feedbus and tractor-services: its unit tests."""
    _tests(session, 'sampler')


@nox.session(name='pip-recipe', python=PY)
@nox.parametrize('package', list(PACKAGES), ids=list(PACKAGES))
def pip_recipe(session: nox.Session, package: str) -> None:
    """The README's plain-pip install, in a venv made by ``python -m venv``.

    ``pip install <pkg>`` (sibling packages as local paths: they are not on
    the index), then ``pip install --no-deps tractor==0.1.0a5``.  Before the
    second step ``import tractor_services`` must fail with the install hint.
    """
    path, import_name, deps = PACKAGES[package]
    venv = Path(session.create_tmp()) / 'pip-venv'
    if venv.exists():
        shutil.rmtree(venv)
    session.run('python', '-m', 'venv', str(venv))
    bindir = venv / ('Scripts' if sys.platform == 'win32' else 'bin')
    python = str(bindir / 'python')
    # this session's venv must not leak into the plain-pip one
    path_var = os.pathsep.join([str(bindir), os.environ.get('PATH', '')])
    env = {'VIRTUAL_ENV': str(venv), 'PATH': path_var}

    local = [f'./{p}' for p in [*deps, path]]
    session.run(python, '-m', 'pip', 'install', *local, external=True, env=env)

    out = session.run(
        python,
        '-c',
        'import tractor_services',
        external=True,
        env=env,
        silent=True,
        success_codes=[1],
    )
    out = str(out or '')
    hint = f'pip install --no-deps {TRACTOR}'
    if 'ImportError' not in out or hint not in out:
        session.error(
            'without tractor, `import tractor_services` must raise an'
            f' ImportError naming {hint!r}; got:\n{out}'
        )
    session.log('without tractor: ImportError with the install hint, as expected')

    session.run(
        python, '-m', 'pip', 'install', '--no-deps', TRACTOR, external=True, env=env
    )
    session.run(python, '-c', f'import {import_name}', external=True, env=env)
    if package == 'sampler':
        # the console script works from a plain-pip install
        samplerd = str(bindir / 'samplerd')
        session.run(samplerd, 'ls', 'backends', external=True, env=env)


@nox.session(python=PY)
def integration(session: nox.Session) -> None:
    """All packages together: the top-level ``tests/``."""
    _install(session, *_editable(ALL_PACKAGES), *TEST_DEPS)
    _pytest(session, 'tests')


def _existing(*paths: str) -> list[str]:
    return [p for p in paths if (ROOT / p).exists()]


@nox.session(python=PY)
def lint(session: nox.Session) -> None:
    """ruff (lint and ``format --check``: one style) over the code, mypy over
    ``packages/*/src`` (config: pyproject)."""
    _install(session, *_editable(ALL_PACKAGES), RUFF, 'mypy', *TEST_DEPS)
    # trio_typing (a tractor requirement) ships ``trio-stubs`` written for an
    # older trio: they would shadow trio 0.23's own inline types (no
    # ``trio.TaskStatus``, no ``trio.TrioDeprecationWarning``).  Our code does
    # not import trio_typing, so check against trio's real types.
    session.run('uv', 'pip', 'uninstall', 'trio-typing')
    paths = _existing('packages', 'tests', 'examples', 'benchmarks', 'noxfile.py')
    srcs = sorted(str(p.relative_to(ROOT)) for p in ROOT.glob('packages/*/src'))
    # run both tools even if the first fails, then fail if either did
    failed = []
    checks = [
        ('ruff', ['check', *paths]),
        ('ruff', ['format', '--check', *paths]),
        ('mypy', srcs),
    ]
    for tool, args in checks:
        try:
            session.run(tool, *args)
        except nox.command.CommandFailed:
            failed.append(' '.join([tool, *args[:1]]))
    if failed:
        session.error(f'{" and ".join(failed)} reported errors')


@nox.session(python=PY)
def docs(session: nox.Session) -> None:
    """Build the docs with warnings as errors."""
    _install(
        session,
        *_editable(ALL_PACKAGES),
        'sphinx',
        'myst-parser',
        'furo',
        'sphinxcontrib-trio',
    )
    shutil.rmtree(ROOT / 'docs' / '_build', ignore_errors=True)
    session.run(
        'sphinx-build', '-W', '--keep-going', '-b', 'html', 'docs', 'docs/_build/html'
    )


@nox.session(python=PY)
def bench(session: nox.Session) -> None:
    """Run every ``benchmarks/bench_*.py``; each writes its own figures."""
    benches = sorted(ROOT.glob('benchmarks/bench_*.py'))
    if not benches:
        session.log('no benchmarks/bench_*.py files: nothing to run')
        return
    _install(session, *_editable(ALL_PACKAGES), 'numpy', 'matplotlib', *TEST_DEPS)
    for bench_file in benches:
        session.run('python', str(bench_file.relative_to(ROOT)), *session.posargs)


@nox.session(python=PY)
def chaos(session: nox.Session) -> None:
    """The chaos suite (``tests/chaos``): a real tree under faults, with
    invariants checked after each.  ``CHAOS_FIGURES=1`` writes the measured
    figures into ``docs/reliability.md`` (and ``docs/reliability-figures.json``)."""
    _install(session, *_editable(ALL_PACKAGES), *TEST_DEPS)
    env = {'TRACTOR_CHAOS': '1'}
    if os.environ.get('CHAOS_FIGURES'):
        env['CHAOS_FIGURES'] = os.environ['CHAOS_FIGURES']
    session.run(
        'pytest', 'tests/chaos', '-p', 'no:cacheprovider', *session.posargs, env=env
    )


@nox.session(python=PY)
def multihost(session: nox.Session) -> None:
    """The multi-host tests (``tests/multihost``): hosts as network, pid and
    mount namespaces on a private bridge.  Needs root; skipped with the
    reason where namespaces cannot be made."""
    _install(session, *_editable(ALL_PACKAGES), *TEST_DEPS)
    session.run(
        'pytest',
        '-m',
        'multihost',
        'tests/multihost',
        '-p',
        'no:cacheprovider',
        *session.posargs,
    )


@nox.session(name='docs-commands', python=PY)
def docs_commands(session: nox.Session) -> None:
    """Every command of every docs page (README.md, packages/*/README.md,
    docs/*.md), each page in a fresh environment of its own, output compared
    with the page (``tests/docs``; conventions in docs/contributing.md).
    Needs the network (the pages install with pip and uv); the uv and pip
    caches are shared, so it mostly links cached wheels."""
    _install(session, *_editable(ALL_PACKAGES), *TEST_DEPS)
    session.run(
        'pytest',
        'tests/docs',
        '-p',
        'no:cacheprovider',
        *session.posargs,
        env={'TRACTOR_DOCS_COMMANDS': '1'},
    )
