"""The producer's control protocol, one request at a time, in process:
each request type has its method on the subscriber's session, every
request but Ready gets exactly one reply, refusals are Error replies."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
import trio

from feedbus import FeedsBus, Quote, Sub, SubStats, Throttler
from feedbus._producer import _Session
from feedbus.protocol import Outbox, decode_reply


def _session(throttled: bool = False) -> tuple[_Session, FeedsBus, Sub]:
    bus = FeedsBus()
    for t in ('a', 'b'):
        bus.add_topic(t)
    bus.publish('b', {'last': 1.0})
    stats = SubStats()
    sub = Sub(
        ipc=None,  # type: ignore[arg-type]
        send_chan=Outbox(16, stats),
        throttle_cs=trio.CancelScope(),
        stats=stats,
        throttler=Throttler(5.0) if throttled else None,
        ctl=Outbox(16, SubStats()),
    )
    return _Session(bus, sub, trio.Event(), {'a'}), bus, sub


def _replies(sub: Sub) -> list[Any]:
    assert sub.ctl is not None
    return [decode_reply(r) for r in sub.ctl.take_all()]


def test_every_request_has_its_method() -> None:
    assert {t.__name__ for t in _Session._methods} == {
        'Ready',
        'Pause',
        'Resume',
        'Subscribe',
        'Unsubscribe',
        'SetRate',
        'GetStats',
    }


def test_requests_and_their_replies() -> None:
    session, bus, sub = _session(throttled=True)
    assert bus.get_subs('a') == {sub}

    session.handle({'type': 'ready', 'id': 1})
    assert session.ready.is_set()
    assert _replies(sub) == []  # Ready gets no reply

    session.handle({'type': 'pause', 'id': 2})
    assert session.paused and bus.get_subs('a') == set()
    session.handle({'type': 'subscribe', 'id': 3, 'topics': ['b']})
    assert bus.get_subs('b') == set()  # paused: added, not delivered yet
    session.handle({'type': 'resume', 'id': 4})
    assert bus.get_subs('a') == bus.get_subs('b') == {sub}
    session.handle({'type': 'unsubscribe', 'id': 5, 'topics': ['a', 'zzz']})
    assert session.subscribed == {'b'} and bus.get_subs('a') == set()
    session.handle({'type': 'set_rate', 'id': 6, 'rate': 20.0})
    assert sub.rate == 20.0
    session.handle({'type': 'get_stats', 'id': 7})

    replies = _replies(sub)
    assert [(r.id, r.cmd) for r in replies] == [
        (2, 'pause'),
        (3, 'subscribe'),
        (4, 'resume'),
        (5, 'unsubscribe'),
        (6, 'setrate'),
        (7, 'getstats'),
    ]
    assert all(type(r).__name__ == 'Ack' for r in replies)
    assert msgspec.convert(replies[1].result['b'], Quote).topic == 'b'
    assert replies[-1].result['requests'] == 7


@pytest.mark.parametrize(
    ('raw', 'rid', 'cmd', 'words'),
    [
        ({'type': 'explode', 'id': 9}, 9, None, 'malformed control message'),
        ([1, 2], 0, None, 'malformed control message'),
        (
            {'type': 'subscribe', 'id': 10, 'topics': ['zzz']},
            10,
            'subscribe',
            "unknown topic(s) ['zzz']",
        ),
        ({'type': 'set_rate', 'id': 11, 'rate': 0.0}, 11, 'setrate', 'rate=0.0'),
    ],
)
def test_refused_requests_get_one_error_reply(
    raw: Any, rid: int, cmd: str | None, words: str
) -> None:
    session, _, sub = _session(throttled=True)
    session.handle(raw)
    [reply] = _replies(sub)
    assert type(reply).__name__ == 'Error'
    assert (reply.id, reply.cmd) == (rid, cmd)
    assert words in reply.error
    assert sub.rate == 5.0


def test_set_rate_on_an_unthrottled_subscription_is_refused() -> None:
    session, _, sub = _session(throttled=False)
    session.handle({'type': 'set_rate', 'id': 1, 'rate': 2.0})
    [reply] = _replies(sub)
    assert type(reply).__name__ == 'Error' and 'not throttled' in reply.error
