"""feedbus' public surface, pinned: the front page, the three public
namespaces (endpoints, protocol, wire), the spec's hidden alias, and the
moved names that still import from the front page with a warning.

A change here is a change of the package's API: say so in the docs."""

from __future__ import annotations

import importlib
import importlib.util
import warnings

import pytest

import feedbus

FRONT_PAGE = {
    # subscribing
    'open_feed',
    'maybe_open_feed',
    'Feed',
    # producing: the bus, and an endpoint of your own on it
    'get_feed_bus',
    'reset_feed_bus',
    'FeedsBus',
    'publish_from',
    'BadQuote',
    'open_sub',
    'pause_sub',
    'resume_sub',
    'Sub',
    # messages, throttling
    'Quote',
    'Frame',
    'TopicFrame',
    'decode_feed_msg',
    'CLEARING_TICK_TYPES',
    'Throttler',
    # counters and limits
    'SubStats',
    'OUTBOX_SIZE',
    'STALL_TIMEOUT_S',
    # errors
    'FeedError',
    'SubscriptionDropped',
    'DROP_REASONS',
    # public modules
    'endpoints',
    'protocol',
    'wire',
}

NAMESPACES = {
    'feedbus.endpoints': {'open_feed_stream', 'producer_pid'},
    'feedbus.protocol': {
        'CtlMsg',
        'Ready',
        'Pause',
        'Resume',
        'Subscribe',
        'Unsubscribe',
        'SetRate',
        'GetStats',
        'decode_ctl',
        'Ack',
        'Error',
        'ReplyMsg',
        'decode_reply',
        'Dropped',
        'DROPPED_TAG',
        'StreamReaders',
        'Outbox',
    },
    'feedbus.wire': {'pack', 'pack_many', 'decoder'},
}

MOVED = {
    'Outbox': 'feedbus.protocol',
    'CtlMsg': 'feedbus.protocol',
    'decode_ctl': 'feedbus.protocol',
    'StreamReaders': 'feedbus.protocol',
    'open_feed_stream': 'feedbus.endpoints',
}


def _public(module: object) -> set[str]:
    return {n for n in vars(module) if not n.startswith('_')}


def test_front_page_names() -> None:
    assert _public(feedbus) == FRONT_PAGE


@pytest.mark.parametrize('name', sorted(NAMESPACES))
def test_namespace_names(name: str) -> None:
    module = importlib.import_module(name)
    assert _public(module) == NAMESPACES[name]
    assert set(module.__all__) == NAMESPACES[name]


def test_spec_alias_importable_but_not_advertised() -> None:
    from feedbus import _FeedsBus

    assert _FeedsBus is feedbus.FeedsBus
    assert '_FeedsBus' not in FRONT_PAGE


@pytest.mark.parametrize('name', sorted(MOVED))
def test_moved_names_still_import_with_a_warning(name: str) -> None:
    home = importlib.import_module(MOVED[name])
    with pytest.warns(
        DeprecationWarning, match=f'feedbus.{name} moved to {MOVED[name]}.{name}'
    ):
        old = getattr(feedbus, name)
    assert old is getattr(home, name)
    with pytest.warns(DeprecationWarning):
        exec(f'from feedbus import {name}', {})


def test_old_private_paths_still_import() -> None:
    """tractor-sampler imported these before the public namespaces existed."""
    from feedbus import wire
    from feedbus._readers import StreamReaders
    from feedbus._wire import decoder

    assert decoder is wire.decoder
    assert StreamReaders is feedbus.protocol.StreamReaders


def test_unknown_names_are_still_attribute_errors() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        with pytest.raises(AttributeError, match='no_such_thing'):
            feedbus.no_such_thing  # noqa: B018
        assert not hasattr(feedbus, 'open_feed_streams')


def test_front_page_fits_one_screen() -> None:
    source = importlib.util.find_spec('feedbus').origin  # type: ignore[union-attr]
    with open(source) as f:  # type: ignore[arg-type]
        assert len(f.read().splitlines()) <= 70
