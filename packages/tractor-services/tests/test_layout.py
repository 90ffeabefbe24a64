"""The repository's layout rules: tractor is imported in one place only,
``tractor_services/compat.py`` (the adapter), so that a later tractor is
a one-file change.  Others write ``@compat.context`` and
``ctx: compat.Context``."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
ADAPTER = (
    ROOT / 'packages' / 'tractor-services' / 'src' / 'tractor_services' / 'compat.py'
)

#: files known to import tractor still, each to be switched to compat
#: (empty this once they are)


def _imports_tractor(path: Path) -> list[int]:
    """Lines of ``path`` that import ``tractor`` or one of its modules."""
    tree = ast.parse(path.read_text(), str(path))
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        if any(n == 'tractor' or n.startswith('tractor.') for n in names):
            lines.append(node.lineno)
    return lines


def offenders() -> dict[str, list[int]]:
    """Source files under packages/*/src, other than the adapter, that
    import tractor: their repository paths and the lines."""
    found = {}
    for path in sorted(ROOT.glob('packages/*/src/**/*.py')):
        if path == ADAPTER:
            continue
        lines = _imports_tractor(path)
        if lines:
            found[str(path.relative_to(ROOT))] = lines
    return found


def test_the_check_sees_the_sources():
    assert ADAPTER.is_file()
    assert _imports_tractor(ADAPTER), 'the adapter itself imports tractor'
    assert len(list(ROOT.glob('packages/*/src/**/*.py'))) > 20


def test_only_the_adapter_imports_tractor():
    found = offenders()
    assert not found, (
        f'import tractor outside tractor_services/compat.py: {found} '
        '(write @compat.context and compat.Context instead)'
    )
