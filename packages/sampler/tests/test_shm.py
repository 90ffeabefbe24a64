"""tractor_sampler.shm: buffers, tokens, attaching across processes,
ownership of segments, vectorised stepping."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import msgspec
import numpy as np
import pytest
import trio

from tractor_sampler.shm import (
    DEFAULT_DTYPE,
    ShmOverrun,
    ShmToken,
    StepPlan,
    attach_shm_array,
    attach_shm_group,
    open_shm_array,
    open_shm_group,
    step_many,
)
from tractor_services.testing import wait_pid_gone

HERE = Path(__file__).parent
CHILD = str(HERE / 'shm_child.py')
SHM_DIR = Path('/dev/shm')
linux_only = pytest.mark.skipif(not SHM_DIR.is_dir(), reason='needs /dev/shm')


def rows(n: int, start: int = 0, dtype: np.dtype = DEFAULT_DTYPE) -> np.ndarray:
    out = np.zeros(n, dtype=dtype)
    out['index'] = np.arange(start, start + n)
    out['time'] = 60.0 * out['index']
    out['close'] = 100.0 + out['index']
    for f in ('open', 'high', 'low'):
        out[f] = out['close']
    out['volume'] = 1.0
    return out


def ipc(token: ShmToken) -> dict:
    """The token as another actor receives it (msgpack: a dict of lists)."""
    return msgspec.msgpack.decode(msgspec.msgpack.encode(token))


def in_dev_shm(name: str) -> bool:
    return (SHM_DIR / name).exists()


# -- one buffer ----------------------------------------------------------------


def test_create_push_prepend_window(shm_key):
    with open_shm_array(10, key=shm_key) as shm:
        assert shm.token.shm_name == shm_key
        assert in_dev_shm(shm_key) and in_dev_shm(shm.token.shm_ctl_name)
        assert (shm.first, shm.last, len(shm)) == (5, 5, 0)  # start = size // 2
        assert shm.array.shape == (0,)
        with pytest.raises(IndexError):
            shm.last_row  # noqa: B018

        assert shm.push(rows(3)) == 8
        assert shm.array['index'].tolist() == [0, 1, 2]
        assert shm.push(rows(2, start=-2), prepend=True) == 3
        assert (shm.first, shm.last) == (3, 8)
        assert shm.array['index'].tolist() == [-2, -1, 0, 1, 2]
        assert shm.last_row['close'] == 102.0

        # .array is a view: in-place updates of the current row are shared
        view = shm.array
        view[-1]['close'] = 7.0
        shm.last_row['volume'] = 9.0
        assert shm.array[-1]['close'] == 7.0 and shm.array[-1]['volume'] == 9.0
        assert np.shares_memory(view, shm.array)
    assert not in_dev_shm(shm_key) and not in_dev_shm(shm_key + '_ctl')


def test_default_key_and_start(shm_key):
    shm = open_shm_array(8, start=0)
    try:
        assert shm.token.shm_name.startswith('tsamp_')
        assert (shm.first, shm.last) == (0, 0)
        assert shm.push(rows(8)) == 8
    finally:
        shm.destroy()
    assert shm.closed
    with open_shm_array(4, key=shm_key, readonly=True) as ro:
        assert ro.is_creator and not ro.array.flags.writeable
        with pytest.raises(PermissionError, match='read-only'):
            ro.push(rows(1))
    assert not in_dev_shm(shm_key)
    with pytest.raises(ValueError, match='start'):
        open_shm_array(8, key=shm_key, start=9)
    with pytest.raises(ValueError, match='structured'):
        open_shm_array(8, key=shm_key, dtype='f8')
    assert not in_dev_shm(shm_key)


def test_overrun_both_ends(shm_key):
    with open_shm_array(10, key=shm_key, start=4) as shm:
        shm.push(rows(5))
        with pytest.raises(ShmOverrun) as exc:
            shm.push(rows(2))
        msg = str(exc.value)
        assert shm_key in msg and 'append 2 rows' in msg and 'only 1 free' in msg
        assert isinstance(exc.value, ValueError)
        shm.push(rows(1))  # exactly fits
        with pytest.raises(ShmOverrun, match=r'prepend 5 rows .* only 4 free'):
            shm.push(rows(5), prepend=True)
        assert (shm.first, shm.last) == (4, 10)  # a failed push moves nothing
        shm.push(rows(4), prepend=True)
        assert (shm.first, shm.last, len(shm)) == (0, 10, 10)


def test_extra_fields_dtype(shm_key):
    dt = np.dtype(
        DEFAULT_DTYPE.descr + [('bar_wap', 'f8'), ('count', 'i4'), ('vec', 'f4', (3,))]
    )
    with open_shm_array(6, key=shm_key, dtype=dt) as shm:
        assert shm.dtype == dt
        r = np.zeros(2, dtype=dt)
        r['bar_wap'] = [1.5, 2.5]
        r['vec'] = [[1, 2, 3], [4, 5, 6]]
        shm.push(r)
        # rows with a subset of the fields are copied by name
        shm.push(rows(1))
        assert shm.array['bar_wap'].tolist() == [1.5, 2.5, 0.0]
        assert shm.array['close'].tolist() == [0.0, 0.0, 100.0]

        tok = ShmToken.from_msg(ipc(shm.token))
        assert tok == shm.token and tok.dtype == dt
        other = attach_shm_array(tok)
        try:
            assert other.array['vec'].tolist()[1] == [4.0, 5.0, 6.0]
        finally:
            other.close()
        with pytest.raises(ValueError, match='lacks'):
            shm.push(np.zeros(1, dtype=[('nope', 'f8')]))


# -- tokens --------------------------------------------------------------------


def test_token_ipc_roundtrip(shm_key):
    with open_shm_array(4, key=shm_key) as shm:
        msg = ipc(shm.token)
        assert isinstance(msg, dict) and isinstance(msg['dtype_descr'][0], list)
        tok = ShmToken.from_msg(msg)
        assert tok == shm.token and hash(tok) == hash(shm.token)
        assert tok.dtype == DEFAULT_DTYPE
        assert msgspec.convert(msg, ShmToken) == tok
        assert ShmToken.from_msg(tok) is tok
        assert ShmToken.from_msg(json.loads(json.dumps(tok.to_msg()))) == tok


def test_the_creator_marks_the_first_live_bar_in_the_token(shm_key):
    with open_shm_array(4, key=shm_key) as shm:
        old = shm.token
        assert (old.first_live, old.first_partial, old.partial_index) == (
            None,
            False,
            None,
        )
        tok = shm.mark_live(7, partial=True)
        assert shm.token is tok and (tok.first_live, tok.first_partial) == (7, True)
        assert tok.partial_index == 7
        assert ShmToken.from_msg(ipc(tok)) == tok  # travels with it
        assert ShmToken.from_msg(old.to_msg()).first_live is None
        reader = attach_shm_array(ipc(tok))  # same segments, either token
        try:
            assert reader.token == tok
            with pytest.raises(PermissionError, match='only its creator marks it'):
                reader.mark_live(0, partial=False)
        finally:
            reader.close()
        assert shm.mark_live(7, partial=False).partial_index is None


@pytest.mark.parametrize(
    'bad',
    [
        {},
        'tsamp_x',
        {'shm_name': 'a', 'shm_ctl_name': 'a_ctl', 'size': 4},  # no dtype
        {
            'shm_name': 'a',
            'shm_ctl_name': 'a_ctl',
            'size': 0,
            'dtype_descr': [['f', '<f8']],
        },
        {'shm_name': 'a', 'shm_ctl_name': 'a_ctl', 'size': 4, 'dtype_descr': []},
        {'shm_name': 'a', 'shm_ctl_name': 'a_ctl', 'size': 4, 'dtype_descr': [['f']]},
        {
            'shm_name': 'a',
            'shm_ctl_name': 'a_ctl',
            'size': 4,
            'dtype_descr': [['f', '<zz']],
        },
        {
            'shm_name': 'a',
            'shm_ctl_name': 'a_ctl',
            'size': 4,
            'dtype_descr': [[1, '<f8']],
        },
        {
            'shm_name': '',
            'shm_ctl_name': 'a_ctl',
            'size': 4,
            'dtype_descr': [['f', '<f8']],
        },
        {
            'shm_name': 'a',
            'shm_ctl_name': 'a_ctl',
            'size': 4,
            'dtype_descr': [['f', '<f8']],
            'members': 2,
            'member': 2,
        },
        {
            'shm_name': 'a',
            'shm_ctl_name': 'a_ctl',
            'size': '4',
            'dtype_descr': [['f', '<f8']],
        },
    ],
)
def test_malformed_token(bad):
    with pytest.raises(ValueError, match='malformed shm token'):
        ShmToken.from_msg(bad)


def test_attach_missing_segment(shm_key):
    tok = ShmToken(
        shm_name=shm_key,
        shm_ctl_name=shm_key + '_ctl',
        dtype_descr=DEFAULT_DTYPE.descr,
        size=4,
    )
    with pytest.raises(FileNotFoundError, match=shm_key):
        attach_shm_array(tok)
    # and after its creator destroyed it
    shm = open_shm_array(4, key=shm_key)
    tok = shm.token
    shm.destroy()
    with pytest.raises(FileNotFoundError, match=shm_key):
        attach_shm_array(ipc(tok))


def test_attach_mismatched_token(shm_key):
    with open_shm_array(4, key=shm_key) as shm:
        tok = shm.token
        bigger = msgspec.structs.replace(tok, size=8)
        with pytest.raises(ValueError, match='does not match'):
            attach_shm_array(bigger)
        # same item size, other fields: caught by the dtype checksum
        other_dt = [(n.upper(), f) for n, f in DEFAULT_DTYPE.descr]
        with pytest.raises(ValueError, match='dtype'):
            attach_shm_array(msgspec.structs.replace(tok, dtype_descr=other_dt))
        wider = DEFAULT_DTYPE.descr + [('extra', '<f8')]
        with pytest.raises(ValueError, match='does not match'):
            attach_shm_array(msgspec.structs.replace(tok, dtype_descr=wider))
        with pytest.raises(ValueError, match='does not match'):
            attach_shm_array(msgspec.structs.replace(tok, members=2, member=1))
        # the failed attaches unlinked nothing
        assert attach_shm_array(tok).array.shape == (0,)


# -- read-only, ownership --------------------------------------------------------


def test_readonly_attach_same_process(shm_key):
    with open_shm_array(8, key=shm_key) as shm:
        shm.push(rows(2))
        ro = attach_shm_array(shm.token)
        assert ro.readonly and not ro.is_creator
        assert not ro.array.flags.writeable
        with pytest.raises(ValueError):
            ro.array['close'][0] = 1.0
        with pytest.raises(ValueError):
            ro.array.flags.writeable = True
        with pytest.raises(PermissionError, match='read-only'):
            ro.push(rows(1))
        with pytest.raises(PermissionError, match='only its creator'):
            ro.destroy()
        # the writer's pushes show through the attachment
        shm.push(rows(1, start=2))
        assert ro.array['index'].tolist() == [0, 1, 2]
        ro.close()
        ro.close()  # idempotent
        assert in_dev_shm(shm_key)

        rw = attach_shm_array(ipc(shm.token), readonly=False)
        rw.push(rows(1, start=3))
        assert shm.last == rw.last == 8
        rw.close()


def test_rows_and_window_are_the_shared_memory_itself(shm_key):
    """The writer's fast accessors: ``rows`` is every row of the storage
    and ``window`` the live (first, last) pair, both views into shared
    memory (another attachment sees writes through them at once),
    read-only for read-only attachments, refused once closed."""
    with open_shm_array(8, key=shm_key, start=2) as shm:
        shm.push(rows(3))
        assert shm.rows.shape == (8,) and shm.window.tolist() == [2, 5]
        ro = attach_shm_array(shm.token)
        shm.rows['close'][4] = 7.5  # the open row, written in place
        assert ro.rows['close'][4] == 7.5 == ro.array['close'][-1]
        shm.push(rows(1, start=3))
        assert ro.window.tolist() == [2, 6]
        assert not ro.rows.flags.writeable and not ro.window.flags.writeable
        with pytest.raises(ValueError):
            ro.rows['close'][4] = 1.0
        ro.close()
        for op in (lambda: ro.rows, lambda: ro.window):
            with pytest.raises(ValueError, match='closed'):
                op()


def test_close_with_views_outstanding(shm_key):
    with open_shm_array(8, key=shm_key) as shm:
        shm.push(rows(2))
        ro = attach_shm_array(shm.token)
        view = ro.array
        ro.close()  # the view keeps the mapping alive
        assert view['index'].tolist() == [0, 1]
        del view


# -- across processes ------------------------------------------------------------


class Child:
    """shm_child.py over trio pipes: one command line in, one JSON line out."""

    def __init__(self, proc: trio.Process) -> None:
        self.proc = proc
        self._buf = b''

    async def line(self) -> dict:
        assert self.proc.stdout is not None
        while b'\n' not in self._buf:
            chunk = await self.proc.stdout.receive_some()
            if not chunk:
                raise EOFError(f'child exited ({self.proc.returncode})')
            self._buf += chunk
        line, self._buf = self._buf.split(b'\n', 1)
        return json.loads(line)

    async def ask(self, cmd: str) -> dict | None:
        assert self.proc.stdin is not None
        await self.proc.stdin.send_all(cmd.encode() + b'\n')
        if cmd == 'exit':
            with trio.fail_after(10):
                await self.proc.wait()
            assert self.proc.returncode == 0
            return None
        return await self.line()


async def spawn_child(*args: str) -> Child:
    proc = await trio.lowlevel.open_process(
        [sys.executable, CHILD, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    child = Child(proc)
    with trio.fail_after(30):
        assert 'ready' in await child.line()
    return child


@linux_only
async def test_child_attaches_readonly_and_sees_writes(shm_key):
    with open_shm_array(32, key=shm_key) as shm:
        shm.push(rows(2))
        child = await spawn_child('attach', json.dumps(shm.token.to_msg()))
        try:
            with trio.fail_after(10):
                seen = await child.ask('read')
                assert seen == {
                    'first': 16,
                    'last': 18,
                    'close': [100.0, 101.0],
                    'writeable': False,
                }
                # writes after the child attached: appended, prepended, in place
                shm.push(rows(2, start=2))
                shm.push(rows(1, start=-1), prepend=True)
                shm.last_row['close'] = 55.0
                seen = await child.ask('read')
                assert seen['first'] == 15 and seen['last'] == 20
                assert seen['close'] == [99.0, 100.0, 101.0, 102.0, 55.0]

                assert await child.ask('write') == {
                    'push': 'PermissionError',
                    'assign': 'ValueError',
                    'flag': 'ValueError',
                }
                tracker = (await child.ask('tracker'))['pid']
                await child.ask('exit')
        finally:
            if child.proc.returncode is None:
                child.proc.kill()
                await child.proc.wait()
        # the attacher's exit (and its resource tracker's) leaves the segment
        if tracker is not None:
            await wait_pid_gone(tracker)
        assert in_dev_shm(shm_key) and in_dev_shm(shm_key + '_ctl')
        assert shm.array['close'].tolist() == [99.0, 100.0, 101.0, 102.0, 55.0]
        again = attach_shm_array(shm.token)
        assert len(again) == 5
        again.close()
    assert not in_dev_shm(shm_key)


@linux_only
async def test_creator_exit_unlinks(shm_key):
    child = await spawn_child('create', shm_key)
    try:
        with trio.fail_after(10):
            tok = ShmToken(
                shm_name=shm_key,
                shm_ctl_name=shm_key + '_ctl',
                dtype_descr=DEFAULT_DTYPE.descr,
                size=16,
            )
            shm = attach_shm_array(tok)
            assert shm.array['close'].tolist() == [1.0, 2.0, 3.0]
            assert in_dev_shm(shm_key)
            await child.ask('exit')  # returns without destroy()
    finally:
        if child.proc.returncode is None:
            child.proc.kill()
            await child.proc.wait()
    assert not in_dev_shm(shm_key) and not in_dev_shm(shm_key + '_ctl')
    # our mapping outlives the name
    assert shm.array['close'].tolist() == [1.0, 2.0, 3.0]
    shm.close()
    with pytest.raises(FileNotFoundError):
        attach_shm_array(tok)


@linux_only
def test_killed_creator_is_cleaned_by_resource_tracker(shm_key):
    """A creator killed before its atexit hook runs: the resource tracker it
    stayed registered with unlinks the segments."""
    proc = subprocess.Popen(
        [sys.executable, CHILD, 'create', shm_key],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert 'ready' in proc.stdout.readline()
        assert in_dev_shm(shm_key)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        # its resource tracker inherited the child's stdout and stderr: EOF
        # on both once the tracker has cleaned up and exited
        _, err = proc.communicate(timeout=10)
    assert 'leaked shared_memory' in err
    assert not in_dev_shm(shm_key) and not in_dev_shm(shm_key + '_ctl')


# -- groups and stepping -----------------------------------------------------------


def reference_step(before: list[np.ndarray], period: float) -> list[np.ndarray]:
    out = []
    for arr in before:
        if len(arr) == 0:
            out.append(arr.copy())
            continue
        new = arr[-1:].copy()
        new['index'] += 1
        new['time'] += period
        c = arr[-1]['close']
        new['open'] = new['high'] = new['low'] = c
        new['volume'] = 0
        out.append(np.concatenate([arr, new]))
    return out


def fill_randomly(group, rng: np.random.Generator) -> None:
    for i, shm in enumerate(group):
        n = int(rng.integers(0, 4))  # some members stay empty
        r = rows(n, start=100 * i)
        r['close'] = rng.normal(100, 5, n)
        r['high'] = r['close'] + 1
        r['volume'] = rng.integers(1, 50, n)
        shm.push(r)
        if n and i % 3 == 0:  # windows differ per member
            shm.push(rows(int(rng.integers(1, 3)), start=-5), prepend=True)


def test_group_step_matches_reference(shm_key):
    rng = np.random.default_rng(7)
    with open_shm_group(50, 20, key=shm_key) as group:
        assert len(group) == 50 and group.block.shape == (50, 20)
        fill_randomly(group, rng)
        before = [m.array.copy() for m in group]
        nonempty = sum(len(a) > 0 for a in before)
        assert 0 < nonempty < 50
        assert group.step(60.0) == nonempty
        expected = reference_step(before, 60.0)
        for m, exp in zip(group, expected, strict=True):
            np.testing.assert_array_equal(m.array, exp)
        # a second step goes from the stepped rows
        assert group.step(0.5) == nonempty
        expected = reference_step(expected, 0.5)
        for m, exp in zip(group, expected, strict=True):
            np.testing.assert_array_equal(m.array, exp)


def test_step_many_mixed_and_overrun(shm_key):
    with (
        open_shm_group(4, 6, key=shm_key, start=3) as group,
        open_shm_array(6, start=3) as alone,
    ):
        for m in [*group, alone]:
            m.push(rows(1))
        # a subset of the group plus a standalone buffer
        chosen = [group[1], group[3], alone]
        assert step_many(chosen, 1.0) == 3
        assert [len(m) for m in group] == [1, 2, 1, 2] and len(alone) == 2
        plan = StepPlan(chosen)
        assert plan.step(1.0) == 3
        assert alone.array['time'].tolist() == [0.0, 1.0, 2.0]
        # group[1] and alone are full now: nothing at all is written
        lasts = group.windows[:, 1].copy()
        with pytest.raises(ShmOverrun, match=r'cannot step members \[1, 3\]'):
            plan.step(1.0)
        np.testing.assert_array_equal(group.windows[:, 1], lasts)
        assert len(alone) == 3
        with pytest.raises(PermissionError, match='group'):
            group[0].destroy()


def test_group_member_attachable_alone(shm_key):
    with open_shm_group(3, 8, key=shm_key) as group:
        group[2].push(rows(2))
        tok = ipc(group[2].token)
        assert tok['member'] == 2 and tok['members'] == 3
        alone = attach_shm_array(tok)
        assert alone.array['index'].tolist() == [0, 1]
        # a process stepping the group (the sampler) attaches it writable
        stepper = attach_shm_group(group[0].token)
        assert stepper.step(60.0) == 1
        assert alone.array['index'].tolist() == [0, 1, 2]
        assert alone.array['time'].tolist() == [0.0, 60.0, 120.0]
        with pytest.raises(PermissionError, match='read-only'):
            step_many([alone], 1.0)
        stepper.close()
        alone.close()
    assert not in_dev_shm(shm_key)


def test_step_thousand_buffers_of_a_group_at_once(shm_key):
    # (how fast: benchmarks/bench_sampler.py, against a per-buffer loop)
    with open_shm_group(1000, 64, key=shm_key, start=0) as group:
        group.block[:, 0] = rows(1)[0]
        group.windows[:, 1] = 1
        plan = StepPlan(list(group))
        for _ in range(20):
            assert plan.step(1.0) == 1000
        assert (group.windows[:, 1] == 21).all()
        np.testing.assert_array_equal(group.block[:, 20]['time'], np.full(1000, 20.0))
        np.testing.assert_array_equal(group.block[:, 20]['index'], np.full(1000, 20))


async def test_step_from_trio_task(shm_key):
    """The sampler steps from a trio task: a few periods, readers see them."""
    with open_shm_group(10, 16, key=shm_key) as group:
        for m in group:
            m.push(rows(1))
        reader = attach_shm_array(group[4].token)
        for _ in range(3):
            group.step(0.1)
            await trio.lowlevel.checkpoint()
        assert reader.array['time'].tolist() == [0.0, 0.1, 0.2, 0.3]
        reader.close()


def test_closed_buffer_raises(shm_key):
    shm = open_shm_array(4, key=shm_key)
    shm.push(rows(1))
    ro = attach_shm_array(shm.token)
    ro.close()
    for op in (lambda: ro.array, lambda: ro.first, lambda: len(ro)):
        with pytest.raises(ValueError, match='closed'):
            op()
    assert 'closed' in repr(ro)
    shm.destroy()
    with pytest.raises(ValueError, match='closed'):
        shm.push(rows(1))
    shm.destroy()  # idempotent


def test_a_step_writes_the_boundary_time_and_marks_a_jump(shm_key):
    """Rows get the step's own (boundary) time, not previous + period;
    a buffer more than a period behind jumps, and the jump is counted;
    one already at the step's time waits."""
    with open_shm_group(3, 16, key=shm_key) as group:
        for m, t in zip(group, (100.0, 97.0, 101.0), strict=True):
            r = rows(1)
            r['time'] = t
            m.push(r)
        plan = StepPlan(list(group))
        assert plan.step(1.0, 101.0) == 2  # the third is already there
        assert (
            plan.waited == 1
            and plan.jumps == 1
            and plan.gap_bars == 3
            and plan.last_gap == 3
        )
        assert [m.array['time'].tolist() for m in group] == [
            [100.0, 101.0],
            [97.0, 101.0],
            [101.0],
        ]
        assert plan.step(1.0, 102.0) == 3 and plan.last_gap == 0
        # without a step time: each buffer's next boundary, never drifting
        assert plan.step(0.1) == 3
        assert group[0].array['time'][-1] == 102.1


#: rows of 60 bytes, fields beyond OHLCV (not a multiple of 8: the stepping
#: moves rows as raw bytes, whatever their size)
ODD_DTYPE = np.dtype(DEFAULT_DTYPE.descr + [('flag', 'u1'), ('tag', 'S3')])


def reference_one(
    arr: np.ndarray, period: float, step_time: float | None, stamp: str
) -> tuple[np.ndarray, str | int]:
    """One buffer stepped by the documented rules, row by row: its rows
    after the step and what happened ('empty', 'waited' or the boundaries
    its new row jumped over)."""
    if not len(arr):
        return arr.copy(), 'empty'
    prev = float(arr[-1]['time'])
    if step_time is None:
        t = (round(prev / period) + 1) * period
    else:
        t = step_time + (period if stamp == 'close' else 0.0)
    if t <= prev:
        return arr.copy(), 'waited'
    new = arr[-1:].copy()
    new['index'] += 1
    new['time'] = t
    new['open'] = new['high'] = new['low'] = arr[-1]['close']
    new['volume'] = 0
    return np.concatenate([arr, new]), round((t - prev) / period) - 1


def test_plans_on_subsets_odd_rows_and_mixed_states_match_the_reference(shm_key):
    """Every way a plan meets its buffers at once: a whole group, a
    contiguous run of members not starting at 0, scattered members, and a
    standalone buffer, in one plan; rows of an odd size with extra fields
    (copied along); members empty, already at the step's time (waiting),
    one period behind, several behind (a jump), and a close-stamped group.
    Each step leaves exactly the rows, counters and return value a
    per-buffer reference gives."""
    rng = np.random.default_rng(12)
    with (
        open_shm_group(10, 40, key=shm_key, dtype=ODD_DTYPE) as whole,
        open_shm_group(12, 40, dtype=ODD_DTYPE) as runs,
        open_shm_group(6, 40, dtype=ODD_DTYPE, stamp='close') as closing,
        open_shm_array(40, dtype=ODD_DTYPE) as alone,
    ):
        bufs = [*whole, *runs[3:8], runs[0], runs[9], runs[11], *closing, alone]
        for i, shm in enumerate([*whole, *runs, *closing, alone]):
            n = int(rng.integers(0, 3))  # some stay empty
            if not n:
                continue
            r = np.zeros(n, dtype=ODD_DTYPE)
            r['index'] = np.arange(n) + 10 * i
            # last rows from 4 periods behind the first step to at it
            r['time'] = 100.0 + np.arange(n) - int(rng.integers(0, 5))
            r['close'] = rng.normal(100, 5, n)
            r['high'] = r['close'] + 1
            r['volume'] = rng.integers(1, 50, n)
            r['flag'] = i
            r['tag'] = f't{i}'.encode()
            shm.push(r)
        outside = [runs[i].array.copy() for i in (1, 2, 8, 10)]
        plan = StepPlan(bufs)
        waited = jumps = gap_bars = 0
        for step_time in (101.0, 102.0, 106.0, None, 106.0, 107.0):
            expected, outcomes = [], []
            for shm in bufs:
                rows_after, what = reference_one(
                    shm.array.copy(), 1.0, step_time, shm.token.stamp
                )
                expected.append(rows_after)
                outcomes.append(what)
            stepped = sum(isinstance(w, int) for w in outcomes)
            gaps = [w for w in outcomes if isinstance(w, int) and w > 0]
            waited += outcomes.count('waited')
            if step_time is not None:
                jumps += len(gaps)
                gap_bars += sum(gaps)
            assert plan.step(1.0, step_time) == stepped
            for shm, exp in zip(bufs, expected, strict=True):
                np.testing.assert_array_equal(shm.array, exp)
            assert (plan.waited, plan.jumps, plan.gap_bars) == (
                waited,
                jumps,
                gap_bars,
            )
            if step_time is not None:
                assert plan.last_gap == max(gaps, default=0)
        # every state came up, and members outside the plan were not touched
        assert waited and jumps and any(not len(shm) for shm in bufs)
        for i, before in zip((1, 2, 8, 10), outside, strict=True):
            np.testing.assert_array_equal(runs[i].array, before)
