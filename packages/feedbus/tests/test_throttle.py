"""
The throttler under trio's mock clock: properties over random tick streams,
plus the behaviours the spec names (rate, quiet sources, trades, close).
"""

from __future__ import annotations

import copy
import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import hypothesis.strategies as st
import msgspec
import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings

from feedbus import SubStats
from feedbus._msgs import (
    CLEARING_TICK_TYPES,
    Frame,
    Quote,
    TopicFrame,
    decode_feed_msg,
)
from feedbus._throttle import Throttler
from feedbus.protocol import Outbox

EPS = 1e-9
TICK_TYPES = ('bid', 'ask', 'bsize', 'asize', 'trade', 'utrade')


# -- harness ------------------------------------------------------------------


@dataclass
class Run:
    rate: float
    arrivals: list[tuple[float, Quote]] = field(default_factory=list)
    frames: list[tuple[float, Frame]] = field(default_factory=list)
    throttler: Throttler | None = None

    @property
    def period(self) -> float:
        return 1.0 / self.rate


async def feed_and_throttle(
    rate: float,
    schedule: Sequence[tuple[float, Quote]],
    *,
    close_at: float | None = None,
    send_takes: float = 0.0,
    outbox: bool = False,
) -> Run:
    """
    Feed each quote at its (absolute, relative to start) mock time, close
    the channel (after the last quote, or at ``close_at``), and record every
    frame with the time ``send`` was called (each ``send`` then takes
    ``send_takes`` seconds). Returns once the throttler has.

    The channel is a trio memory channel, or with ``outbox`` the bus's
    :class:`Outbox` (which the throttler drains in bulk).
    """
    run = Run(rate)
    thr = run.throttler = Throttler(rate)
    send_ch, recv_ch = trio.open_memory_channel[Quote](math.inf)
    if outbox:
        return await _feed_outbox(run, schedule, close_at, send_takes)

    async def send(frame: Frame) -> None:
        run.frames.append((trio.current_time(), frame))
        if send_takes:
            await trio.sleep(send_takes)

    start = trio.current_time()
    async with trio.open_nursery() as tn:
        await tn.start(thr.run, recv_ch, send)
        async with send_ch:
            for at, quote in schedule:
                await trio.sleep_until(start + at)
                run.arrivals.append((trio.current_time(), quote))
                await send_ch.send(quote)
            if close_at is not None:
                await trio.sleep_until(start + close_at)
    return run


async def _feed_outbox(
    run: Run,
    schedule: Sequence[tuple[float, Quote]],
    close_at: float | None,
    send_takes: float,
) -> Run:
    assert run.throttler is not None
    box = Outbox(len(schedule) + 1, SubStats())

    async def send(frame: Frame) -> None:
        run.frames.append((trio.current_time(), frame))
        if send_takes:
            await trio.sleep(send_takes)

    start = trio.current_time()
    async with trio.open_nursery() as tn:
        await tn.start(run.throttler.run, box, send)
        try:
            for at, quote in schedule:
                await trio.sleep_until(start + at)
                run.arrivals.append((trio.current_time(), quote))
                box.put(quote)
            if close_at is not None:
                await trio.sleep_until(start + close_at)
        finally:
            box.close()
    assert box.stats.dropped == 0
    return run


def make_quote(
    topic: str,
    seq: int,
    tick_types: Sequence[str] = (),
    fields: dict[str, Any] | None = None,
) -> Quote:
    return Quote(
        topic=topic,
        seq=seq,
        fields=fields if fields is not None else {'last': float(seq)},
        ticks=[
            {'type': t, 'price': float(seq), 'size': 1.0, 'n': (seq, i)}
            for i, t in enumerate(tick_types)
        ],
    )


def topic_frames(run: Run, topic: str) -> list[TopicFrame]:
    return [f.topics[topic] for _, f in run.frames if topic in f.topics]


# -- properties ---------------------------------------------------------------


quote_spec = st.tuples(
    # gap before this quote, in periods (0 = same instant as the previous)
    st.one_of(st.just(0.0), st.floats(0.0, 3.0), st.sampled_from([1.0, 0.5, 2.0])),
    st.integers(0, 1),  # topic index
    st.lists(st.sampled_from(TICK_TYPES), max_size=4),
    st.dictionaries(
        st.sampled_from(['last', 'bid', 'ask', 'volume']),
        st.integers(0, 100),
        max_size=3,
    ),
)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    rate=st.one_of(st.floats(1.0, 120.0), st.sampled_from([1.0, 7.0, 60.0, 120.0])),
    specs=st.lists(quote_spec, min_size=1, max_size=60),
    outbox=st.booleans(),
)
def test_throttle_properties(
    rate: float,
    specs: list[tuple[float, int, list[str], dict[str, int]]],
    outbox: bool,
) -> None:
    period = 1.0 / rate
    topics = ('AAA', 'BBB')
    seqs = dict.fromkeys(topics, 0)
    schedule: list[tuple[float, Quote]] = []
    at = 0.0
    for gap, ti, tick_types, fields in specs:
        at += gap * period
        topic = topics[ti]
        seqs[topic] += 1
        schedule.append((at, make_quote(topic, seqs[topic], tick_types, fields)))
    pristine = copy.deepcopy([(q.topic, q.seq, q.fields, q.ticks) for _, q in schedule])

    run = trio.run(
        functools.partial(feed_and_throttle, rate, schedule, outbox=outbox),
        clock=trio.testing.MockClock(autojump_threshold=0),
    )
    frames = run.frames
    assert frames, 'every quote must be delivered in some frame'

    # frame seq counts from 1; no frame is empty; has_clearing is right
    assert [f.seq for _, f in frames] == list(range(1, len(frames) + 1))
    for _, f in frames:
        assert f.topics
        assert f.has_clearing == any(
            t['type'] in CLEARING_TICK_TYPES
            for tf in f.topics.values()
            for t in tf.ticks
        )

    # 1. never more than `rate` frames per second
    times = [t for t, _ in frames]
    for prev, nxt in zip(times, times[1:], strict=False):
        assert nxt - prev >= period - EPS, (prev, nxt, period)

    # 4. a frame with a trade leaves by max(its first trade's arrival,
    # previous frame + P); one without leaves within a period of its first
    # quote, or one period after the previous frame
    arrivals = iter(run.arrivals)
    prev_sent = -math.inf
    for sent, f in frames:
        # the quotes conflated into this frame are the next sum(n_quotes)
        n = sum(tf.n_quotes for tf in f.topics.values())
        mine = [next(arrivals) for _ in range(n)]
        assert all(t <= sent + EPS for t, _ in mine)
        first = mine[0][0]
        trade_at = [
            t
            for t, q in mine
            if any(tk['type'] in CLEARING_TICK_TYPES for tk in q.ticks)
        ]
        if trade_at:
            assert sent <= max(trade_at[0], prev_sent + period) + EPS
        else:
            assert sent <= max(first, prev_sent) + period + EPS
        prev_sent = sent
    assert next(arrivals, None) is None

    for topic in topics:
        inputs = [q for _, q in schedule if q.topic == topic]
        tfs = topic_frames(run, topic)
        in_ticks = [t for q in inputs for t in q.ticks]

        # 2. every tick exactly once, in order
        assert [t for tf in tfs for t in tf.ticks] == in_ticks

        # 3. ticks_by_type: FIFO per type, the same ticks
        for ttype in TICK_TYPES:
            got = [t for tf in tfs for t in tf.ticks_by_type.get(ttype, [])]
            assert got == [t for t in in_ticks if t['type'] == ttype]
        for tf in tfs:
            assert all(tf.ticks_by_type.values())  # no empty lists

        # 5. seq metadata: contiguous ranges, counts, merged fields
        pos = 0
        expect_first = 1
        for tf in tfs:
            assert tf.first_seq == expect_first
            assert tf.n_quotes == tf.last_seq - tf.first_seq + 1 >= 1
            conflated = inputs[pos : pos + tf.n_quotes]
            assert [q.seq for q in conflated] == list(
                range(tf.first_seq, tf.last_seq + 1)
            )
            merged: dict[str, Any] = {}
            for q in conflated:
                merged.update(q.fields)
            assert tf.fields == merged
            pos += tf.n_quotes
            expect_first = tf.last_seq + 1
        assert pos == len(inputs)

    # 6. the caller's quotes are untouched
    assert [(q.topic, q.seq, q.fields, q.ticks) for _, q in schedule] == pristine

    assert run.throttler is not None
    stats = run.throttler.stats
    assert stats.frames_sent == len(frames)
    assert stats.quotes_in == len(schedule)
    assert stats.ticks_in == sum(len(q.ticks) for _, q in schedule)


# -- plain behaviours -----------------------------------------------------------


@pytest.mark.parametrize('outbox', [False, True])
async def test_dense_churn_delivers_the_full_rate(
    autojump_clock: Any,
    outbox: bool,
) -> None:
    rate, secs = 60.0, 10.0
    schedule = [
        (i * 0.001, make_quote('AAA', i + 1, ['bid', 'ask']))
        for i in range(int(secs / 0.001))
    ]
    run = await feed_and_throttle(rate, schedule, outbox=outbox)
    in_window = [t for t, _ in run.frames if t - run.frames[0][0] < secs]
    assert 0.99 * rate * secs <= len(in_window) <= rate * secs + 1
    # and evenly: one period apart
    gaps = {
        round(b - a, 9)
        for (a, _), (b, _) in zip(run.frames, run.frames[1:], strict=False)
    }
    assert gaps == {round(1 / rate, 9)}
    assert sum(f.topics['AAA'].n_quotes for _, f in run.frames) == len(schedule)


class TaskSteps(trio.abc.Instrument):
    """Counts how often trio runs the task whose name ends with ``name``."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.steps = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if task.name.endswith(self.name):
            self.steps += 1


@pytest.mark.parametrize('tick_types', [['bid', 'ask'], ['bid', 'trade']])
def test_dense_flow_wakes_the_throttler_once_per_frame(tick_types: list[str]) -> None:
    # from an outbox, steady flow costs one wake-up per frame (its due time)
    # and one checkpoint, never a wake-up per quote nor one on the first
    # quote after each frame: trio's scheduling is most of a frame's CPU
    rate, secs = 60.0, 5.0
    schedule = [
        (i * 0.001, make_quote('AAA', i + 1, tick_types))
        for i in range(int(secs / 0.001))
    ]
    steps = TaskSteps('Throttler.run')
    run = trio.run(
        functools.partial(feed_and_throttle, rate, schedule, outbox=True),
        clock=trio.testing.MockClock(autojump_threshold=0),
        instruments=[steps],
    )
    n = len(run.frames)
    assert n >= rate * secs * 0.99
    assert sum(f.topics['AAA'].n_quotes for _, f in run.frames) == len(schedule)
    # the first frame (before the flow is steady: a wake-up per arrival,
    # ~17 of them) and the close cost a few more
    assert steps.steps <= 2 * n + 25, (steps.steps, n)


class LateWakeupClock(trio.abc.Clock):
    """
    Virtual time that, once every task is blocked, jumps to the next
    deadline plus ``lateness``: every timer fires that late, as an epoll
    timer does (up to a millisecond).
    """

    def __init__(self, lateness: float) -> None:
        self.lateness = lateness
        self._now = 0.0

    def start_clock(self) -> None:
        pass

    def current_time(self) -> float:
        return self._now

    def deadline_to_sleep_time(self, deadline: float) -> float:
        if deadline == math.inf:
            return math.inf
        self._now = max(self._now, deadline + self.lateness)
        return 0.0


@pytest.mark.parametrize('outbox', [False, True])
@pytest.mark.parametrize(
    ('lateness', 'send_takes'),
    [(0.001, 0.0), (0.0, 0.001), (0.001, 0.001), (0.004, 0.003)],
)
def test_late_wakeups_do_not_lower_the_rate(
    lateness: float,
    send_takes: float,
    outbox: bool,
) -> None:
    # timers firing late and sends taking time must not add up: dense churn
    # still gets `rate` frames/s (frames are timed from their due times)
    rate, secs = 60.0, 10.0
    schedule = [
        (i * 0.001, make_quote('AAA', i + 1, ['bid'])) for i in range(int(secs / 0.001))
    ]
    run = trio.run(
        functools.partial(
            feed_and_throttle,
            rate,
            schedule,
            send_takes=send_takes,
            outbox=outbox,
        ),
        clock=LateWakeupClock(lateness),
    )
    times = [t for t, _ in run.frames]
    in_window = [t for t in times if t - times[0] < secs]
    assert 0.99 * rate * secs <= len(in_window) <= rate * secs + 1
    # no drift: the k-th frame leaves k periods after the first, give or
    # take one wake-up's lateness (which varies: 0 to `lateness`)
    period = 1 / rate
    drift = [t - times[0] - k * period for k, t in enumerate(times)]
    assert max(abs(d) for d in drift) <= lateness + EPS
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert min(gaps) >= period - lateness - EPS
    assert sum(f.topics['AAA'].n_quotes for _, f in run.frames) == len(schedule)


async def test_quiet_source_frame_leaves_one_period_after_arrival(
    autojump_clock: Any,
) -> None:
    rate = 4.0
    run = await feed_and_throttle(
        rate,
        [(5.0, make_quote('AAA', 1, ['bid']))],
        close_at=100.0,  # the channel stays open: no flush-on-close help
    )
    start = run.arrivals[0][0] - 5.0
    [(sent, frame)] = run.frames
    assert sent - start == pytest.approx(5.0 + 1 / rate)
    assert frame.topics['AAA'].n_quotes == 1
    assert not frame.has_clearing


async def test_quiet_source_after_earlier_frames(autojump_clock: Any) -> None:
    # a long-quiet source: its next quote waits one period, not for more ticks
    run = await feed_and_throttle(
        2.0,
        [(0.0, make_quote('AAA', 1, ['ask'])), (10.0, make_quote('AAA', 2, ['ask']))],
        close_at=50.0,
    )
    start = run.arrivals[0][0]
    assert [t - start for t, _ in run.frames] == pytest.approx([0.5, 10.5])


async def test_trade_after_quiet_gap_goes_out_immediately(
    autojump_clock: Any,
) -> None:
    run = await feed_and_throttle(
        1.0,
        [
            (0.0, make_quote('AAA', 1, ['trade'])),
            (7.25, make_quote('AAA', 2, ['bid', 'trade', 'ask'])),
        ],
        close_at=20.0,
    )
    start = run.arrivals[0][0]
    assert [t - start for t, _ in run.frames] == pytest.approx([0.0, 7.25])
    second = run.frames[1][1].topics['AAA']
    assert [t['type'] for t in second.ticks] == ['bid', 'trade', 'ask']
    assert [t['type'] for t in second.ticks_by_type['trade']] == ['trade']


async def test_trade_waits_only_for_the_rate(autojump_clock: Any) -> None:
    run = await feed_and_throttle(
        1.0,
        [
            (0.0, make_quote('AAA', 1, ['trade'])),
            (0.1, make_quote('AAA', 2, ['bid'])),
            (0.3, make_quote('AAA', 3, ['trade'])),
        ],
    )
    start = run.arrivals[0][0]
    assert [t - start for t, _ in run.frames] == pytest.approx([0.0, 1.0])
    assert run.frames[1][1].topics['AAA'].n_quotes == 2


@pytest.mark.parametrize('how', ['close_send', 'close_receive'])
async def test_channel_close_flushes_pending_and_returns(
    autojump_clock: Any,
    how: str,
) -> None:
    thr = Throttler(2.0)
    frames: list[tuple[float, Frame]] = []

    async def send(frame: Frame) -> None:
        frames.append((trio.current_time(), frame))

    send_ch, recv_ch = trio.open_memory_channel[Quote](math.inf)
    start = trio.current_time()
    async with trio.open_nursery() as tn:
        await tn.start(thr.run, recv_ch, send)
        await send_ch.send(make_quote('AAA', 1, ['bid']))
        await send_ch.send(make_quote('BBB', 1, ['ask']))
        await trio.sleep(0.1)
        if how == 'close_send':
            await send_ch.aclose()
        else:
            await recv_ch.aclose()
    # the nursery exited: run() returned cleanly, after flushing at the
    # frame's due time (the rate still holds on close)
    [(sent, frame)] = frames
    assert sent - start == pytest.approx(0.5)
    assert set(frame.topics) == {'AAA', 'BBB'}
    assert thr.stats.frames_sent == 1


async def test_outbox_close_flushes_pending_and_returns(autojump_clock: Any) -> None:
    thr = Throttler(2.0)
    frames: list[tuple[float, Frame]] = []

    async def send(frame: Frame) -> None:
        frames.append((trio.current_time(), frame))

    box = Outbox(16, SubStats())
    start = trio.current_time()
    async with trio.open_nursery() as tn:
        await tn.start(thr.run, box, send)
        box.put(make_quote('AAA', 1, ['bid']))
        box.put(make_quote('BBB', 1, ['ask']))
        await trio.sleep(0.1)
        box.put(make_quote('AAA', 2, ['trade']))  # due at once
        await trio.sleep(0.1)
        box.put(make_quote('AAA', 3, ['bid']))
        box.close()
    assert [t - start for t, _ in frames] == pytest.approx([0.1, 0.6])
    assert [sorted(f.topics) for _, f in frames] == [['AAA', 'BBB'], ['AAA']]
    assert frames[0][1].topics['AAA'].n_quotes == 2
    assert frames[0][1].has_clearing
    assert thr.stats.frames_sent == 2
    assert thr.stats.quotes_in == 4


async def test_close_with_nothing_pending_returns_at_once(
    autojump_clock: Any,
) -> None:
    thr = Throttler(1.0)
    send_ch, recv_ch = trio.open_memory_channel[Quote](0)

    async def send(frame: Frame) -> None:
        raise AssertionError('nothing to send')

    start = trio.current_time()
    async with trio.open_nursery() as tn:
        await tn.start(thr.run, recv_ch, send)
        await send_ch.aclose()
    assert trio.current_time() == start


async def test_rate_change_applies_to_the_pending_frame(
    autojump_clock: Any,
) -> None:
    thr = Throttler(1.0)
    frames: list[float] = []

    async def send(frame: Frame) -> None:
        frames.append(trio.current_time())

    send_ch, recv_ch = trio.open_memory_channel[Quote](math.inf)
    start = trio.current_time()
    async with trio.open_nursery() as tn:
        await tn.start(thr.run, recv_ch, send)
        await send_ch.send(make_quote('AAA', 1, ['bid']))  # due at 1.0
        await trio.sleep(0.5)
        thr.rate = 10.0  # now due at 0.1: already past, goes at once
        await trio.sleep(0.01)
        assert [t - start for t in frames] == pytest.approx([0.5])

        await send_ch.send(make_quote('AAA', 2, ['bid']))  # due at 0.6
        await trio.sleep(0.05)
        thr.rate = 0.5  # re-timed to 0.5 + 2.0
        await trio.sleep(1.0)
        assert len(frames) == 1
        await trio.sleep(1.0)
        assert [t - start for t in frames] == pytest.approx([0.5, 2.5])

        thr.rate = 4.0  # nothing pending: the next frame uses it
        await send_ch.send(make_quote('AAA', 3, ['ask']))
        await send_ch.aclose()
    assert [t - start for t in frames] == pytest.approx([0.5, 2.5, 2.75])


@pytest.mark.parametrize('bad', [0, -1, 0.0, math.nan, math.inf, -math.inf, 'x', None])
def test_invalid_rates_raise(bad: Any) -> None:
    with pytest.raises(ValueError):
        Throttler(bad)
    thr = Throttler(5.0)
    with pytest.raises(ValueError):
        thr.rate = bad
    assert thr.rate == 5.0


async def test_send_errors_propagate(autojump_clock: Any) -> None:
    thr = Throttler(10.0)

    async def send(frame: Frame) -> None:
        raise trio.BrokenResourceError('subscriber gone')

    send_ch, recv_ch = trio.open_memory_channel[Quote](math.inf)
    with pytest.raises(trio.BrokenResourceError):
        async with send_ch, trio.open_nursery() as tn:
            await tn.start(thr.run, recv_ch, send)
            await send_ch.send(make_quote('AAA', 1, ['trade']))
            await trio.sleep(1)
    assert thr.stats.frames_sent == 0


async def test_rate_change_in_the_window_after_a_frame(autojump_clock: Any) -> None:
    # from an outbox, quotes queued after a frame wait for the window's end
    # (L + P), which a rate change moves at once
    thr = Throttler(1.0)
    frames: list[float] = []

    async def send(frame: Frame) -> None:
        frames.append(trio.current_time())

    box = Outbox(64, SubStats())
    start = trio.current_time()
    async with trio.open_nursery() as tn:
        await tn.start(thr.run, box, send)
        box.put(make_quote('AAA', 1, ['trade']))  # due at once: L = 0
        await trio.sleep(0.1)
        box.put(make_quote('AAA', 2, ['bid']))  # due at L + 1.0
        await trio.sleep(0.1)
        thr.rate = 10.0  # now due at L + 0.1: past, goes at once
        await trio.sleep(0.01)
        assert [t - start for t in frames] == pytest.approx([0.0, 0.2])

        box.put(make_quote('AAA', 3, ['trade']))  # due at 0.2 + 0.1
        await trio.sleep(0.05)
        thr.rate = 0.5  # re-timed to 0.2 + 2.0
        await trio.sleep(1.0)
        assert len(frames) == 2
        await trio.sleep(1.0)
        assert [t - start for t in frames] == pytest.approx([0.0, 0.2, 2.2])
        box.close()
    assert thr.stats.quotes_in == 3


@pytest.mark.parametrize('outbox', [False, True])
async def test_discard_drops_the_pending_frame_and_keeps_the_rate(
    autojump_clock: Any,
    outbox: bool,
) -> None:
    thr = Throttler(1.0)
    frames: list[tuple[float, Frame]] = []

    async def send(frame: Frame) -> None:
        frames.append((trio.current_time(), frame))

    box = Outbox(64, SubStats())
    send_ch, recv_ch = trio.open_memory_channel[Quote](math.inf)

    async def put(quote: Quote) -> None:
        if outbox:
            box.put(quote)
        else:
            await send_ch.send(quote)

    start = trio.current_time()
    async with trio.open_nursery() as tn:
        await tn.start(thr.run, box if outbox else recv_ch, send)
        await put(make_quote('AAA', 1, ['trade']))  # sent at 0
        await trio.sleep(0.1)
        await put(make_quote('AAA', 2, ['trade']))
        await put(make_quote('AAA', 3, ['bid']))
        await trio.sleep(0.1)
        # a pause: the caller empties its outbox, the throttler its frame
        box.clear()
        thr.discard()
        await trio.sleep(0.1)
        await put(make_quote('AAA', 4, ['trade']))  # due at L + P = 1.0
        await trio.sleep(2.0)
        box.close()
        await send_ch.aclose()
    assert [t - start for t, _ in frames] == pytest.approx([0.0, 1.0])
    last = frames[1][1].topics['AAA']
    assert (last.first_seq, last.last_seq, last.n_quotes) == (4, 4, 1)


async def test_discard_drops_what_is_queued_for_the_frame_too(
    autojump_clock: Any,
) -> None:
    # from an outbox the quotes of the pending frame may still be queued
    # (taken in when the frame is due): discard() drops and counts them too,
    # so a caller that only calls discard() (a feed framing on its own
    # side) sends nothing after its pause
    thr = Throttler(2.0)
    frames: list[tuple[float, Frame]] = []

    async def send(frame: Frame) -> None:
        frames.append((trio.current_time(), frame))

    box = Outbox(64, SubStats())
    async with trio.open_nursery() as tn:
        await tn.start(thr.run, box, send)
        box.put(make_quote('AAA', 1, ['trade']))  # sent at once
        await trio.sleep(0.01)
        for seq in range(2, 6):
            box.put(make_quote('AAA', seq, ['bid']))
            await trio.sleep(0.01)
        assert thr.discard() == 4
        assert len(box) == 0
        await trio.sleep(5.0)  # ten periods
        assert len(frames) == 1
        box.put(make_quote('AAA', 6, ['bid']))
        box.close()
    assert [f.topics['AAA'].first_seq for _, f in frames] == [1, 6]
    assert thr.discard() == 0  # not running: nothing queued is its to clear
    assert thr.stats.quotes_in == 2


async def test_a_burst_within_one_period_is_taken_in_not_dropped(
    autojump_clock: Any,
) -> None:
    # the throttler sleeps to the window's end, but takes in a half-full
    # outbox at once: bursts of up to its size per period lose nothing
    thr = Throttler(1.0)
    frames: list[tuple[float, Frame]] = []

    async def send(frame: Frame) -> None:
        frames.append((trio.current_time(), frame))

    box = Outbox(8, SubStats())
    start = trio.current_time()
    seq = 0
    async with trio.open_nursery() as tn:
        await tn.start(thr.run, box, send)
        seq += 1
        box.put(make_quote('AAA', seq, ['trade']))  # sent at 0
        for _ in range(10):
            await trio.sleep(0.05)
            for _ in range(6):  # 60 in the window, 6 at a time
                seq += 1
                box.put(make_quote('AAA', seq, ['bid']))
        box.close()
    assert box.stats.dropped == 0
    assert [t - start for t, _ in frames] == pytest.approx([0.0, 1.0])
    assert frames[1][1].topics['AAA'].n_quotes == 60


async def test_quotes_queued_during_a_slow_send_go_when_it_returns(
    autojump_clock: Any,
) -> None:
    thr = Throttler(10.0)
    frames: list[tuple[float, Frame]] = []

    async def send(frame: Frame) -> None:
        frames.append((trio.current_time(), frame))
        if len(frames) == 1:
            await trio.sleep(1.0)  # ten periods

    box = Outbox(64, SubStats())
    start = trio.current_time()
    async with trio.open_nursery() as tn:
        await tn.start(thr.run, box, send)
        box.put(make_quote('AAA', 1, ['trade']))  # sent at 0, returns at 1.0
        await trio.sleep(0.5)
        box.put(make_quote('AAA', 2, ['bid']))
        await trio.sleep(1.0)
        box.close()
    # the rate holds (a period or more since the last send began), and
    # nothing waits longer than it must
    assert [t - start for t, _ in frames] == pytest.approx([0.0, 1.0])
    assert frames[1][1].topics['AAA'].first_seq == 2


async def test_custom_clearing_set(autojump_clock: Any) -> None:
    thr = Throttler(1.0, clearing=frozenset({'bid'}))
    frames: list[tuple[float, Frame]] = []

    async def send(frame: Frame) -> None:
        frames.append((trio.current_time(), frame))

    send_ch, recv_ch = trio.open_memory_channel[Quote](math.inf)
    start = trio.current_time()
    async with trio.open_nursery() as tn:
        await tn.start(thr.run, recv_ch, send)
        async with send_ch:
            await send_ch.send(make_quote('AAA', 1, ['trade']))  # churn now
            await trio.sleep(0.2)
            await send_ch.send(make_quote('AAA', 2, ['bid']))  # clearing now
    [(sent, frame)] = frames
    assert sent - start == pytest.approx(0.2)
    assert frame.has_clearing


async def test_frames_share_no_dicts_with_the_caller(autojump_clock: Any) -> None:
    quote = make_quote('AAA', 1, ['trade', 'bid'])
    run = await feed_and_throttle(10.0, [(0.0, quote)])
    tf = run.frames[0][1].topics['AAA']
    assert tf.ticks == quote.ticks
    assert all(a is not b for a, b in zip(tf.ticks, quote.ticks, strict=True))
    assert tf.fields is not quote.fields
    assert tf.ticks_by_type['trade'][0] is tf.ticks[0]


async def test_run_twice_concurrently_is_refused(autojump_clock: Any) -> None:
    thr = Throttler(1.0)

    async def send(frame: Frame) -> None:
        pass

    send_ch, recv_ch = trio.open_memory_channel[Quote](0)
    async with trio.open_nursery() as tn:
        await tn.start(thr.run, recv_ch, send)
        with pytest.raises(RuntimeError):
            await thr.run(recv_ch.clone(), send)
        await send_ch.aclose()


# -- messages -------------------------------------------------------------------


def test_messages_round_trip_through_the_union() -> None:
    tick = {'type': 'trade', 'price': 1.0, 'size': 2.0}
    quote = Quote(topic='AAA', seq=1, fields={'last': 1.0}, ticks=[tick])
    frame = Frame(
        seq=3,
        topics={
            'AAA': TopicFrame(
                ticks=[tick],
                ticks_by_type={'trade': [tick]},
                fields={'last': 1.0},
                n_quotes=1,
                first_seq=1,
                last_seq=1,
            ),
        },
        has_clearing=True,
    )
    for msg in (quote, frame):
        wire = msgspec.msgpack.encode(msg)
        assert decode_feed_msg(msgspec.msgpack.decode(wire)) == msg
        assert decode_feed_msg(msg) == msg
    assert msgspec.to_builtins(quote)['type'] == 'quote'
    assert msgspec.to_builtins(frame)['type'] == 'frame'
    # ticks default to empty, and the default is not shared
    a = Quote(topic='A', seq=1, fields={})
    b = Quote(topic='B', seq=1, fields={})
    assert a.ticks == [] and a.ticks is not b.ticks


@pytest.mark.parametrize(
    'obj',
    [
        {'type': 'nope', 'topic': 'AAA'},
        {'topic': 'AAA', 'seq': 1, 'fields': {}},
        {'type': 'quote', 'topic': 'AAA', 'seq': 'one', 'fields': {}},
        {'type': 'frame', 'seq': 1, 'topics': {'AAA': {}}, 'has_clearing': False},
        [1, 2, 3],
    ],
)
def test_invalid_messages_raise_value_error(obj: Any) -> None:
    with pytest.raises(ValueError, match='invalid feed message'):
        decode_feed_msg(obj)


def test_messages_are_frozen() -> None:
    quote = Quote(topic='AAA', seq=1, fields={})
    with pytest.raises(AttributeError):
        quote.seq = 2  # type: ignore[misc]
