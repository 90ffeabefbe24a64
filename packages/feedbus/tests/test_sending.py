"""The producer's sending rules in one process, under trio's mock clock:
the stall rule judged by progress, the removed subscriber's last message,
the owner's exit with a stuck send, pause, and quotes refused at publish."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import msgspec
import pytest
import trio

from feedbus import (
    BadQuote,
    FeedsBus,
    Frame,
    Quote,
    SubStats,
    open_sub,
    pause_sub,
    resume_sub,
)
from feedbus.wire import decoder

DATA = decoder(Quote | Frame)


class _Sock:
    def __init__(self, stream: FakeStream) -> None:
        self._stream = stream

    def close(self) -> None:
        self._stream.aborted = True
        self._stream.gate.set()


class FakeStream:
    """A subscriber's stream whose sends block while ``gate`` is shut (a
    subscriber that stopped reading).  ``abort_connection`` reaches its
    fake socket the way it reaches a5's."""

    def __init__(self) -> None:
        self.gate = trio.Event()
        self.gate.set()
        self.sent: list[Any] = []
        self.in_send = 0
        self.entered = trio.Event()
        self.aborted = False
        self.msgstream = SimpleNamespace(stream=SimpleNamespace(socket=_Sock(self)))

    def shut(self) -> None:
        self.gate = trio.Event()
        self.entered = trio.Event()

    async def send(self, msg: Any) -> None:
        self.in_send += 1
        self.entered.set()
        try:
            await self.gate.wait()
        finally:
            self.in_send -= 1
        if self.aborted:
            raise trio.ClosedResourceError('connection aborted')
        self.sent.append(msg)

    def data(self) -> list[Any]:
        out: list[Any] = []
        for m in self.sent:
            if isinstance(m, bytes):
                d = DATA.decode(m)
                out.extend(d if isinstance(d, list) else [d])
        return out

    def last_control(self) -> Any:
        return [m for m in self.sent if not isinstance(m, bytes)][-1]


async def wait_for(pred: Any, timeout: float = 60.0) -> None:
    with trio.fail_after(timeout):
        while not pred():
            await trio.sleep(0.01)


def publish_n(bus: FeedsBus, topic: str, n: int) -> None:
    for i in range(n):
        bus.publish(topic, {'last': float(i)}, [{'type': 'bid', 'price': float(i)}])


async def test_a_stalled_subscriber_is_removed_then_told_why(
    autojump_clock: Any,
) -> None:
    bus = FeedsBus()
    bus.add_topic('a')
    stream = FakeStream()
    with trio.fail_after(60):
        async with open_sub(bus, stream, stall_timeout=1.0) as (sub, ready):
            bus.add_subs('a', {sub})
            ready.set()
            publish_n(bus, 'a', 1)
            await wait_for(lambda: len(stream.sent) == 1)
            stream.shut()  # the subscriber stops reading
            publish_n(bus, 'a', 1)
            await stream.entered.wait()
            start = trio.current_time()
            await wait_for(lambda: sub.stats.removed is not None)
            stalled_for = trio.current_time() - start
            # removed by the rule (within a tick past the timeout), not cut
            assert 1.0 <= stalled_for <= 1.0 + 0.25 + 1e-6
            assert sub.stats.reason == 'stalled'
            assert stream.in_send == 1 and not stream.aborted
            assert bus.get_subs('a') == set()
            publish_n(bus, 'a', 3)  # nothing more is queued for it
            assert len(sub.send_chan) == 0
            stream.gate.set()  # it reads again: the send finishes, then the last message
            await trio.sleep_forever()  # the block is cancelled once it went out
    last = stream.last_control()
    assert last['type'] == 'dropped' and last['reason'] == 'stalled'
    assert 'stall_timeout=1 s' in last['detail']
    final = msgspec.convert(last['stats'], SubStats)
    assert final.delivered == 2 and final.removed == last['detail']
    assert [q.seq for q in stream.data()] == [1, 2]


async def test_a_paused_sender_does_not_drop_its_subscriber(
    autojump_clock: Any,
) -> None:
    """The producer's own process stops (SIGSTOP, a VM pause) while a send
    is in flight: on resume, the time it was stopped is not the
    subscriber's stall."""
    bus = FeedsBus()
    bus.add_topic('a')
    stream = FakeStream()
    with trio.fail_after(60):
        async with open_sub(bus, stream, stall_timeout=1.0) as (sub, ready):
            bus.add_subs('a', {sub})
            ready.set()
            stream.shut()
            publish_n(bus, 'a', 1)
            await stream.entered.wait()
            await trio.sleep(0.6)  # a slow subscriber, but well within the rule
            autojump_clock.jump(30)  # this process was stopped for 30 s
            stream.gate.set()  # and on resume the send completes at once
            await wait_for(lambda: len(stream.sent) == 1)
            publish_n(bus, 'a', 1)
            await wait_for(lambda: len(stream.sent) == 2)
            assert sub.stats.removed is None and bus.get_subs('a') == {sub}
    assert [q.seq for q in stream.data()] == [1, 2]


async def test_progress_resets_the_stall_rule(autojump_clock: Any) -> None:
    """A subscriber that is slow but keeps taking messages is never
    "stalled", however long the whole backlog takes."""
    bus = FeedsBus()
    bus.add_topic('a')
    stream = FakeStream()
    async with open_sub(bus, stream, stall_timeout=1.0, batch=False) as (sub, ready):
        bus.add_subs('a', {sub})
        ready.set()
        stream.shut()
        publish_n(bus, 'a', 20)
        for _ in range(20):  # one message per 0.6 s: 12 s in all
            await stream.entered.wait()
            await trio.sleep(0.6)
            gate = stream.gate
            stream.shut()
            gate.set()
        stream.gate.set()
        await wait_for(lambda: len(stream.sent) == 20)
        assert sub.stats.removed is None


async def test_owner_exit_with_a_stuck_send_closes_the_connection(
    autojump_clock: Any,
) -> None:
    from feedbus._producer import SEND_GRACE_S

    bus = FeedsBus()
    bus.add_topic('a')
    stream = FakeStream()
    with trio.fail_after(60):
        with trio.CancelScope() as owner:
            async with open_sub(bus, stream, stall_timeout=100.0) as (sub, ready):
                bus.add_subs('a', {sub})
                ready.set()
                stream.shut()
                publish_n(bus, 'a', 1)
                await stream.entered.wait()
                start = trio.current_time()
                owner.cancel()  # the owner goes while the send is stuck
                await trio.sleep_forever()
        # the exit waited its grace, then closed the whole connection
        # rather than cut the send or hang
        assert stream.aborted and trio.current_time() - start == pytest.approx(
            SEND_GRACE_S
        )
    assert stream.sent == []


async def test_pause_stops_even_the_throttlers_pending_frame(
    autojump_clock: Any,
) -> None:
    bus = FeedsBus()
    bus.add_topic('a')
    stream = FakeStream()
    async with open_sub(bus, stream, rate=2.0) as (sub, ready):
        bus.add_subs('a', {sub})
        ready.set()
        publish_n(bus, 'a', 1)
        await wait_for(lambda: len(stream.sent) == 1)
        publish_n(bus, 'a', 3)  # churn: pending, due half a second later
        # pending: in the throttler's frame, or queued for it until the frame is due
        await wait_for(lambda: sub.throttler._pending or len(sub.send_chan))
        pause_sub(bus, sub, ['a'])
        publish_n(bus, 'a', 3)
        await trio.sleep(10)  # twenty periods
        assert len(stream.sent) == 1  # nothing after the pause
        resume_sub(bus, sub, ['a'])
        publish_n(bus, 'a', 1)
        await wait_for(lambda: len(stream.sent) == 2)
        frame = stream.data()[-1]
        assert frame.topics['a'].first_seq == frame.topics['a'].last_seq == 8


def test_clearing_empty_means_none() -> None:
    from feedbus._bus import check_clearing

    assert check_clearing([]) == frozenset()
    assert check_clearing(None) is None
    with pytest.raises(ValueError, match='clearing=5'):
        check_clearing(5)


@pytest.mark.parametrize(
    'fields, ticks, problem',
    [
        ({'last': object()}, [], 'unsupported'),
        ({1: 2.0}, [], 'field name 1'),
        ({'last': 1.0}, ['trade'], "tick 'trade' is not a dict"),
        ({'last': 1.0}, [{'type': 'bid', 2: 1}], 'key 2'),
        ({'last': 1.0}, [{'price': 1.0}], "no string 'type'"),
        ({'last': 1.0}, [{'type': 7}], "no string 'type'"),
        ([1, 2], [], 'is not a dict'),
    ],
)
async def test_a_bad_quote_is_refused_at_publish_and_harms_no_one(
    fields: Any,
    ticks: Any,
    problem: str,
    autojump_clock: Any,
) -> None:
    bus = FeedsBus()
    bus.add_topic('a')
    plain, throttled = FakeStream(), FakeStream()
    async with (
        open_sub(bus, plain) as (s1, r1),
        open_sub(bus, throttled, rate=5.0) as (s2, r2),
    ):
        bus.add_subs('a', {s1, s2})
        r1.set()
        r2.set()
        publish_n(bus, 'a', 2)
        with pytest.raises(BadQuote, match=problem) as err:
            bus.publish('a', fields, ticks)
        assert isinstance(err.value, ValueError) and "'a'" in str(err.value)
        assert bus.refused == {'a': 1}
        publish_n(bus, 'a', 2)
        await wait_for(
            lambda: (
                sum(q.n_quotes for f in throttled.data() for q in f.topics.values())
                == 4
            )
        )
        await wait_for(lambda: len(plain.data()) == 4)
        assert [q.seq for q in plain.data()] == [
            1,
            2,
            3,
            4,
        ]  # no gap where it was refused
        tfs = [f.topics['a'] for f in throttled.data()]
        assert (tfs[0].first_seq, tfs[-1].last_seq) == (1, 4)
        assert s1.stats.removed is None and s2.stats.removed is None
        assert bus.latest('a').seq == 4
