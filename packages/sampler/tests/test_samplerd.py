"""samplerd across real actors."""

import os
import signal
from functools import partial

import pytest
import sampler_endpoints as se
import trio

from tractor_sampler import (
    NO_INDEX,
    Backfill,
    SamplerError,
    Step,
    maybe_open_samplerd,
    open_sample_stream,
    open_shm_array,
)
from tractor_sampler._sampler import register_with_sampler
from tractor_sampler.endpoints import sampler_info
from tractor_services import compat, open_service_root
from tractor_services.testing import actor_pids

P = 0.1  # a short period keeps the tests quick


async def info():
    async with maybe_open_samplerd() as portal:
        return await portal.run(sampler_info)


async def wait_info(pred, timeout=20):
    with trio.fail_after(timeout):
        while not pred(i := await info()):
            await trio.sleep(0.02)
    return i


async def test_five_actors_register_at_once_one_samplerd_one_incrementer(other_addr):
    async with open_service_root(other_addr) as mngr:
        async with trio.open_nursery() as tn:
            for i in range(5):
                tn.start_soon(
                    partial(
                        mngr.start_service,
                        f'reg{i}',
                        partial(se.register_buffer, period_s=P),
                    )
                )
        assert len(actor_pids('samplerd')) == 1
        assert [s.name for s in await mngr.list_services()].count('samplerd') == 1
        i = await wait_info(lambda i: i['buffers'].get(P) == 5)
        assert i['incrementers'] == 1 and i['periods'] == [P]
        # the one incrementer keeps stepping all five
        await wait_info(lambda j: j['steps'].get(P, 0) >= i['steps'].get(P, 0) + 3)
        for n in range(5):
            await mngr.cancel_service(f'reg{n}')
        await wait_info(lambda i: i['buffers'] == {} and i['periods'] == [])


async def test_steps_append_rows_on_boundaries_and_stream_them(other_addr):
    async with open_service_root(other_addr):
        with open_shm_array(64) as shm:
            se.seeded(shm, close=12.5, index=7)
            async with open_sample_stream(P, {P: shm}) as ss:
                steps = [await ss.receive() for _ in range(5)]
            assert all(isinstance(s, Step) and s.period_s == P for s in steps)
            times = [s.time for s in steps]
            assert all(round(t * 10) == t * 10 for t in times)  # on 0.1 s boundaries
            assert [
                round(b - a, 6) for a, b in zip(times, times[1:], strict=False)
            ] == [P] * 4
            rows = shm.array
            assert list(rows['index'][:6]) == list(range(7, 13))
            assert set(rows['close']) == {12.5} and set(rows['open'][1:]) == {12.5}
            assert set(rows['volume'][1:]) == {0.0}
            # each step's index is the row it appended (a step may land between
            # the registration and the stream's subscription: the first one
            # received is then not the first one made)
            idx = [s.index for s in steps]
            assert idx == list(range(idx[0], idx[0] + 5))
            assert set(idx) <= set(rows['index'][1:].tolist())


async def test_broadcast_before_any_buffer_has_sentinel_index(other_addr):
    async with open_service_root(other_addr):
        async with open_sample_stream(P) as ss:
            step = await ss.receive()
        assert step.index == NO_INDEX


async def test_backfill_event_reaches_every_subscriber(other_addr):
    async with open_service_root(other_addr):
        got = []

        async def listener(task_status=trio.TASK_STATUS_IGNORED):
            async with open_sample_stream(P) as ss:
                task_status.started()
                async for msg in ss:
                    if isinstance(msg, Backfill):
                        got.append(msg)
                        return

        with trio.fail_after(30):
            async with trio.open_nursery() as tn:
                for _ in range(3):
                    await tn.start(listener)
                async with open_sample_stream(P) as ss:
                    reached = await ss.backfilled('btc', P, 10, 20)
        assert reached == 4  # the three listeners and the sender itself
        assert (
            got
            == [Backfill(topic='btc', timeframe=P, start_index=10, end_index=20)] * 3
        )


async def test_subscribers_join_and_leave_during_broadcasts(other_addr):
    async with open_service_root(other_addr):
        async with open_sample_stream(P) as steady:
            seen = []
            async with trio.open_nursery() as tn:

                async def record():
                    async for msg in steady:
                        seen.append(msg.time)

                tn.start_soon(record)
                with trio.fail_after(60):
                    for _ in range(20):
                        async with open_sample_stream(P) as ss:
                            await ss.receive()
                tn.cancel_scope.cancel()
            assert seen == sorted(set(seen))  # no step twice, order kept
            i = await info()
            assert i['subscribers'] == {f'period:{P:g}': 1}  # nothing leaked


async def test_sigkilled_subscriber_and_its_buffer_are_removed(other_addr):
    async with open_service_root(other_addr) as mngr:
        pid = await mngr.start_service(
            'victim', partial(se.register_buffer, period_s=P)
        )
        await mngr.start_service('other', partial(se.listen_steps, period_s=P))
        await wait_info(
            lambda i: (
                i['buffers'].get(P) == 1 and i['subscribers'].get(f'period:{P:g}') == 2
            )
        )
        os.kill(pid, signal.SIGKILL)
        # its subscription is dropped and its buffer unregistered (two steps
        # that may finish in either order)
        i = await wait_info(
            lambda i: (
                i['subscribers'].get(f'period:{P:g}') == 1 and not i['buffers'].get(P)
            )
        )
        steps = i['steps'][P]
        await wait_info(lambda i: i['steps'][P] > steps + 3)  # still stepping


@pytest.mark.parametrize(
    'period, match',
    [
        (0, 'positive'),
        (float('nan'), 'positive'),
        (0.25, 'multiple of 0.1'),
        (-1, 'positive'),
    ],
)
async def test_bad_periods_are_refused(other_addr, period, match):
    async with open_service_root(other_addr):
        with pytest.raises(ValueError, match=match):
            async with open_sample_stream(period):
                pass
        async with maybe_open_samplerd() as portal:
            with pytest.raises(compat.RemoteActorError, match=match):
                async with compat.open_context(
                    portal, register_with_sampler, period_s=period
                ):
                    pass
        async with open_sample_stream(P) as ss:  # samplerd keeps serving
            await ss.receive()


async def test_another_program_reads_steps_from_the_trees_samplerd(other_addr):
    import json
    import sys
    from pathlib import Path

    host, port = other_addr
    async with open_service_root(other_addr) as mngr:
        async with open_sample_stream(P):  # samplerd runs in this tree now
            pid = mngr.info('samplerd').pid
            with trio.fail_after(60):
                proc = await trio.run_process(
                    [
                        sys.executable,
                        str(Path(__file__).parent / 'programs' / 'sample_client.py'),
                        host,
                        str(port),
                        '5',
                    ],
                    capture_stdout=True,
                    capture_stderr=True,
                    check=False,
                )
            assert proc.returncode == 0, proc.stderr.decode()[-2000:]
            steps = json.loads(proc.stdout.decode().splitlines()[-1])['steps']
            assert len(steps) == 5 and steps == sorted(set(steps))
            # it used the running samplerd: still one, the same process
            assert actor_pids('samplerd') == [pid]


async def test_bad_tokens_and_requests_get_clear_errors(other_addr):
    async with open_service_root(other_addr):
        async with maybe_open_samplerd() as portal:
            with open_shm_array(8) as shm:
                token = shm.token.to_msg()
            # the segment is gone now
            with pytest.raises(compat.RemoteActorError, match='no shm segment'):
                async with compat.open_context(
                    portal, register_with_sampler, shms_by_period={'0.1': token}
                ):
                    pass
            with open_shm_array(8) as shm:
                wrong = shm.token.to_msg()
                wrong['dtype_descr'] = [['index', '<i8'], ['time', '<f8']]
                with pytest.raises(compat.RemoteActorError, match='dtype|match'):
                    async with compat.open_context(
                        portal, register_with_sampler, shms_by_period={'0.1': wrong}
                    ):
                        pass
            with pytest.raises(
                compat.RemoteActorError, match='shms_by_period must map'
            ):
                async with compat.open_context(
                    portal, register_with_sampler, shms_by_period=[1, 2]
                ):
                    pass
            with pytest.raises(compat.RemoteActorError, match='token'):
                async with compat.open_context(
                    portal,
                    register_with_sampler,
                    shms_by_period={'0.1': {'shm_name': 3}},
                ):
                    pass
        async with open_sample_stream(P) as ss:
            slot = ss._pending[5] = {'done': trio.Event()}
            await ss.stream.send(
                {'type': 'broadcast', 'msg': {'type': 'nonsense'}, 'id': 5}
            )
            with trio.fail_after(10):
                await slot['done'].wait()
            assert 'malformed sampler request' in slot['reply'].error
            assert isinstance(await ss.receive(), Step)  # still serving
            with pytest.raises(SamplerError, match=r'period_s'):
                await ss.broadcast({'x': 1}, period_s='fast')
            with pytest.raises(SamplerError, match='multiple of 0.1'):
                await ss.broadcast({'x': 1}, period_s=0.25)


async def test_a_dead_samplerd_ends_its_clients_streams_not_hangs_them(other_addr):
    from tractor_services import PeerGone

    async with open_service_root(other_addr):
        with pytest.raises(PeerGone, match='samplerd'):
            async with open_sample_stream(P) as ss:
                await ss.receive()
                os.kill(actor_pids('samplerd')[0], signal.SIGKILL)
                with trio.fail_after(10):
                    async for _ in ss:
                        pass
