"""``host_id()``: one identity per ``/dev/shm``, agreed on by every
process that sees it, different for any other directory (a container's
or a test "host"'s own mount)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tractor_services import _host, host_id

SHM = Path('/dev/shm')


@pytest.fixture(autouse=True)
def fresh_cache():
    """Each test asks as a process that has not asked before."""
    saved = dict(_host._cache)
    _host._cache.clear()
    yield
    _host._cache.clear()
    _host._cache.update(saved)


def _ask(d: Path | None, n: int = 1) -> list[str]:
    """``host_id(d)`` as asked by ``n`` other processes started at once."""
    arg = 'None' if d is None else repr(str(d))
    code = f'from tractor_services import host_id; print(host_id({arg}))'
    procs = [
        subprocess.Popen(
            [sys.executable, '-c', code], stdout=subprocess.PIPE, text=True
        )
        for _ in range(n)
    ]
    outs = []
    for p in procs:
        out, _ = p.communicate(timeout=60)
        assert p.returncode == 0
        outs.append(out.strip())
    return outs


def test_processes_that_share_a_directory_get_the_same_id(tmp_path):
    """Eight processes racing to create the id file all end up with the
    one that won (and so does this one); no temporary file is left."""
    ids = _ask(tmp_path, 8)
    assert len(set(ids)) == 1
    assert host_id(tmp_path) == ids[0]
    assert len(ids[0]) == 32 and int(ids[0], 16) >= 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [_host.HOST_ID_FILE]


def test_another_directory_is_another_host(tmp_path):
    a, b = tmp_path / 'a', tmp_path / 'b'
    a.mkdir()
    b.mkdir()
    assert host_id(a) != host_id(b)
    assert host_id(a) == (a / _host.HOST_ID_FILE).read_text().strip()
    # a different id file (another mount) is a different host, even to a
    # process that asked before
    (b / _host.HOST_ID_FILE).write_text('0' * 32 + '\n')
    _host._cache.clear()
    assert host_id(b) == '0' * 32 != host_id(a)


@pytest.mark.skipif(not SHM.is_dir(), reason='needs /dev/shm')
def test_dev_shm_by_default_and_the_same_for_a_child_process():
    mine = host_id()
    assert mine is not None and mine == host_id(SHM)
    assert _ask(None) == [mine]


def test_no_directory_no_identity(tmp_path):
    assert host_id(tmp_path / 'absent') is None


def test_a_corrupt_id_file_is_named(tmp_path):
    (tmp_path / _host.HOST_ID_FILE).write_text('hello')
    with pytest.raises(RuntimeError, match='not a host id') as info:
        host_id(tmp_path)
    assert _host.HOST_ID_FILE in str(info.value)
