"""``FeedsBus.subscriptions`` and ``watch_subscriptions``: what a producer
counts as a topic's users (a feed daemon keeps a topic running while
anyone subscribes to it), in process through the subscriber's session:
opening and subscribing count, a pause does not uncount, unsubscribing,
leaving and the producer's removal do; a watcher hears every change and
one that raises does not break the bus."""

from __future__ import annotations

import trio

from feedbus import FeedsBus, Sub, SubStats
from feedbus._producer import _Session
from feedbus.protocol import Outbox


def _sub() -> Sub:
    stats = SubStats()
    return Sub(
        ipc=None,  # type: ignore[arg-type]
        send_chan=Outbox(16, stats),
        throttle_cs=trio.CancelScope(),
        stats=stats,
        ctl=Outbox(16, SubStats()),
    )


def test_subscriptions_are_counted_per_topic_and_watched() -> None:
    bus = FeedsBus()
    for t in ('a', 'b'):
        bus.add_topic(t)
    heard: list[tuple[str, int]] = []
    unwatch = bus.watch_subscriptions(lambda t, n: heard.append((t, n)))

    def broken(topic: str, n: int) -> None:
        raise RuntimeError('a watcher bug')

    bus.watch_subscriptions(broken)  # logged, the bus goes on

    s1, s2 = _sub(), _sub()
    one = _Session(bus, s1, trio.Event(), {'a'})
    two = _Session(bus, s2, trio.Event(), {'a'})
    assert bus.subscriptions('a') == 2 and heard == [('a', 1), ('a', 2)]
    # a producer's own subscriber (add_subs alone) is not counted
    bus.add_subs('a', {_sub()})
    assert bus.subscriptions('a') == 2

    one.handle({'type': 'pause', 'id': 1})
    assert bus.subscriptions('a') == 2  # paused: still subscribed
    one.handle({'type': 'subscribe', 'id': 2, 'topics': ['b']})
    assert bus.subscriptions('b') == 1 and heard[-1] == ('b', 1)
    one.handle({'type': 'resume', 'id': 3})
    one.handle({'type': 'unsubscribe', 'id': 4, 'topics': ['a']})
    assert bus.subscriptions('a') == 1 and heard[-1] == ('a', 1)

    bus.forget_sub(s1)  # it left (open_sub's exit)
    assert bus.subscriptions('b') == 0 and heard[-1] == ('b', 0)
    two.handle({'type': 'pause', 'id': 5})
    bus.remove_subs('a', {s2})  # the producer ends its topic for it
    assert bus.subscriptions('a') == 0 and heard[-1] == ('a', 0)

    unwatch()
    n = len(heard)
    _Session(bus, _sub(), trio.Event(), {'a'})
    assert bus.subscriptions('a') == 1 and len(heard) == n
