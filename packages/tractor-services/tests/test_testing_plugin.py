"""The pytest plugin (``tractor_services.testing``) without psutil: its
leak check is off, said only to sessions that use the plugin's fixtures (a
backend plugin's tests, which merely have tractor-services installed, hear
nothing of it)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

NOTE = 'psutil is not installed: no check for leaked child processes'


def _pytest_without_psutil(tmp_path: Path, test_source: str) -> str:
    """Run a one-file pytest session where ``import psutil`` fails; its
    output (it must pass)."""
    blocker = tmp_path / 'blocker'
    (blocker / 'psutil').mkdir(parents=True)
    (blocker / 'psutil' / '__init__.py').write_text(
        "raise ImportError('psutil hidden by the test')\n"
    )
    (tmp_path / 'test_it.py').write_text(test_source)
    env = {
        **os.environ,
        'PYTHONPATH': os.pathsep.join(
            p for p in (str(blocker), os.environ.get('PYTHONPATH', '')) if p
        ),
    }
    proc = subprocess.run(
        [sys.executable, '-m', 'pytest', '-p', 'no:cacheprovider', 'test_it.py'],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def test_no_word_of_psutil_to_a_session_not_using_the_plugin(tmp_path):
    out = _pytest_without_psutil(tmp_path, 'def test_plain():\n    assert True\n')
    assert '1 passed' in out
    assert NOTE not in out


def test_a_session_using_the_fixtures_is_told_once(tmp_path):
    out = _pytest_without_psutil(
        tmp_path,
        'def test_a(reg_addr):\n    assert reg_addr[1] > 0\n\n'
        'def test_b(other_addr):\n    assert other_addr[1] > 0\n',
    )
    assert '2 passed' in out
    assert out.count(NOTE) == 1
