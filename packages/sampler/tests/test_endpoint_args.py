"""Every sampler endpoint refuses bad arguments before it starts anything,
with one error naming the argument, and its actor serves on."""

from __future__ import annotations

import pytest
import trio

from tractor_sampler import maybe_open_samplerd
from tractor_sampler._feedd import check_buffers
from tractor_sampler._sampler import register_with_sampler, samplerd
from tractor_sampler.endpoints import sampler_info
from tractor_services import compat, open_service_root

BAD_REGISTRATIONS = [
    ({'period_s': 'soon'}, 'period_s'),
    ({'period_s': 0}, 'period_s'),
    ({'shms_by_period': 5}, 'shms_by_period'),
    ({'shms_by_period': {'x': []}}, 'shms_by_period'),
    ({'shms_by_period': {1.0: {'shm_name': 5}}}, 'shm token'),
    ({'period_s': 1.0, 'open_index_stream': 'yes'}, 'open_index_stream'),
    ({'period_s': 1.0, 'sub_for_broadcasts': 3}, 'sub_for_broadcasts'),
]


async def test_register_with_sampler_refuses_bad_arguments_and_serves_on(other_addr):
    async with open_service_root(other_addr):
        async with maybe_open_samplerd() as portal:
            for kwargs, named in BAD_REGISTRATIONS:
                with (
                    trio.fail_after(30),
                    pytest.raises(compat.RemoteActorError) as info,
                ):
                    async with compat.open_context(
                        portal, register_with_sampler, **kwargs
                    ):
                        pass
                assert compat.remote_error_type(info.value) == 'ValueError', kwargs
                assert named in compat.remote_error_message(info.value), kwargs
            # nothing registered, and samplerd answers as before
            with trio.fail_after(30):
                i = await portal.run(sampler_info)
            assert i['buffers'] == {} and i['incrementers'] == 1


@pytest.mark.parametrize(
    'kwargs, named',
    [
        ({'keep_lateness': -1}, 'keep_lateness'),
        ({'keep_lateness': 'many'}, 'keep_lateness'),
        ({'spin_s': 'soon'}, 'spin_s'),
        ({'spin_s': 5}, 'spin_s'),
    ],
)
async def test_samplerd_endpoint_refuses_bad_arguments(kwargs, named):
    # the checks run before the Sampler is made: call the endpoint's body
    # directly (no actor needed to see what it refuses)
    with pytest.raises(ValueError, match=named):
        await samplerd(None, **kwargs)


@pytest.mark.parametrize(
    'buffers',
    [
        {'x': 10},
        {1.0: 'ten'},
        {1.0: (100, 10, 1)},
        {1.0: 2},
        {1.0: (100, 90)},
        [],
        5,
    ],
)
def test_feed_daemon_buffers_are_refused_with_one_line(buffers):
    with pytest.raises(ValueError, match='buffers'):
        check_buffers(buffers)
