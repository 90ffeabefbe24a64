"""Every ``pip install ./packages/X`` in the README and the docs names X's
in-repo dependencies in the same command (they are not on the package
index: ``pip install ./packages/feedbus`` alone fails), as the pip-recipe
nox session installs them."""

from __future__ import annotations

import re
from pathlib import Path

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / 'README.md', *sorted((ROOT / 'docs').glob('*.md'))]


def _packages() -> dict[str, tuple[str, set[str]]]:
    """Folder under packages/ -> (distribution name, its requirements' names)."""
    out = {}
    for pyproject in (ROOT / 'packages').glob('*/pyproject.toml'):
        project = tomllib.loads(pyproject.read_text())['project']
        reqs = {
            re.split(r'[\s<>=!~\[;]', r, maxsplit=1)[0].lower()
            for r in project.get('dependencies', [])
        }
        out[pyproject.parent.name] = (project['name'].lower(), reqs)
    return out


def _in_repo_deps(folder: str, pkgs: dict[str, tuple[str, set[str]]]) -> set[str]:
    """The folders of ``folder``'s in-repo dependencies, transitively."""
    by_name = {name: f for f, (name, _) in pkgs.items()}
    out: set[str] = set()
    todo = [folder]
    while todo:
        for req in pkgs[todo.pop()][1]:
            dep = by_name.get(req)
            if dep is not None and dep not in out:
                out.add(dep)
                todo.append(dep)
    return out


def _pip_commands(text: str) -> list[str]:
    """Each ``pip install ...`` command naming a ./packages path (in a code
    span or block, joined across a backslash or a line break in prose)."""
    flat = re.sub(r'\\\n\s*', ' ', text)
    flat = re.sub(r'`([^`]*)`', lambda m: '`' + m[1].replace('\n', ' ') + '`', flat)
    cmds = re.findall(r'(?<![\w-])pip install [^`\n]*', flat)
    return [c for c in cmds if 'packages/' in c]


def test_every_pip_install_of_a_package_folder_names_its_in_repo_dependencies():
    pkgs = _packages()
    assert {'tractor-services', 'feedbus', 'sampler'} <= set(pkgs)
    assert _in_repo_deps('sampler', pkgs) == {'tractor-services', 'feedbus'}
    seen = 0
    for page in PAGES:
        for cmd in _pip_commands(page.read_text()):
            named = set(re.findall(r'packages/([\w.-]+)', cmd))
            for folder in named & set(pkgs):
                seen += 1
                missing = _in_repo_deps(folder, pkgs) - named
                assert not missing, (
                    f'{page.name}: `{cmd.strip()}` installs packages/{folder} without '
                    f'its in-repo dependencies {sorted(missing)} (not on the index: '
                    'name them in the same command)'
                )
    assert seen, 'no `pip install ./packages/...` found: is the README still saying it?'


def test_the_check_catches_a_lone_feedbus():
    pkgs = _packages()
    [cmd] = _pip_commands('run `pip install ./packages/feedbus` then')
    named = set(re.findall(r'packages/([\w.-]+)', cmd))
    assert _in_repo_deps('feedbus', pkgs) - named == {'tractor-services'}
