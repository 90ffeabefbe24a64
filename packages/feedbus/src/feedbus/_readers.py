"""
Reading one tractor stream from many local tasks, with requests and
their replies on the same stream.

A :class:`StreamReaders` runs one pump task that never blocks between
receives (so tractor 0.1.0a5's context cannot overrun): data messages
(msgpack bytes, see :mod:`feedbus._wire`) go to every local reader's
bounded buffer, replies (maps) to the request waiting for their ``id``.
``Feed`` and tractor-sampler's ``SampleStream`` are both built on it.

A producer that removes its subscriber (``feedbus.open_sub``) says so in a
last :class:`~feedbus._ctl.Dropped` message: then every reader raises
:class:`~feedbus.SubscriptionDropped` once it has read what arrived
before, and so does every request.  Requests are sent whole (never cut
part-way: a5 would corrupt the connection).

"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager as acm
from dataclasses import dataclass, field
from typing import Any, ClassVar

import msgspec
import trio

from tractor_services import compat
from tractor_services._heartbeat import is_heartbeat, silence_timeout, watch_silence

from ._bus import OUTBOX_SIZE, Outbox, SubStats
from ._ctl import DROPPED_TAG, Dropped
from ._errors import SubscriptionDropped

#: seconds a request whose send is stuck (the producer stopped reading)
#: may delay its cancelled caller before the connection is closed
SEND_GRACE_S: float = 1.0


@dataclass(kw_only=True, eq=False)
class StreamReaders:
    """Many local readers of one stream, and request/reply over it.

    Subclasses set ``data_decoder`` (a msgspec decoder of the stream's data
    messages) and ``decode_reply`` (a function validating a reply map with
    an ``id``), and may override :meth:`_unsolicited` and
    :meth:`_ended_reply`.  ``dropped`` is set once the producer removed
    this subscriber.  With ``end_is_error``, a stream that the producer
    ends without a word is treated as dropped too (reason ``'ended'``)."""

    data_decoder: ClassVar[msgspec.msgpack.Decoder]
    end_is_error: ClassVar[bool] = False

    stream: compat.MsgStream
    buffer: int = OUTBOX_SIZE
    local_stats: SubStats = field(default_factory=SubStats)
    _readers: set[Outbox] = field(default_factory=set)
    _default: Outbox | None = None
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    _pending: dict[int, dict[str, Any]] = field(default_factory=dict)
    #: why the producer removed this subscriber, once it did
    dropped: SubscriptionDropped | None = None
    #: data messages received (a batch counts once)
    received: int = 0
    #: the heartbeat interval this side asked the producer for (a producer
    #: on another host, see :mod:`tractor_services._heartbeat`): heartbeats
    #: are dropped here, and silence raises PeerGone (:meth:`_watch_silence`)
    heartbeat_s: float | None = None
    #: what the PeerGone of a silent producer names
    peer_what: str = 'the producer'
    #: heartbeats received (never delivered to a reader)
    heartbeats: int = 0
    _heard: float = 0.0

    # --- reading -------------------------------------------------------------

    def __aiter__(self) -> StreamReaders:
        return self

    async def __anext__(self) -> Any:
        try:
            return await self.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None

    async def receive(self) -> Any:
        """The next message for the default reader."""
        if self._default is None:
            raise RuntimeError(
                'this stream has no reader: it was opened without a data stream'
            )
        return await self._default.receive()

    @acm
    async def open_reader(self) -> AsyncIterator[Outbox]:
        """A reader of its own for one local task: every message from now
        on, in a bounded buffer that drops (and counts) the oldest."""
        reader = Outbox(self.buffer, self.local_stats)
        if self.dropped is not None:
            reader.close(self.dropped)
        self._readers.add(reader)
        try:
            yield reader
        finally:
            self._readers.discard(reader)
            reader.close()

    # --- requests ------------------------------------------------------------

    async def _ask(self, make: Callable[[int], Any]) -> Any:
        """Send ``make(id)`` and return the reply carrying that id;
        :class:`SubscriptionDropped` once the producer removed us."""
        if self.dropped is not None:
            raise self.dropped
        rid = next(self._ids)
        slot: dict[str, Any] = {'done': trio.Event()}
        self._pending[rid] = slot
        try:
            await compat.send_whole_or_abort(
                self.stream, msgspec.to_builtins(make(rid)), SEND_GRACE_S
            )
            await slot['done'].wait()
        finally:
            self._pending.pop(rid, None)
        if 'error' in slot:
            raise slot['error']
        return slot['reply']

    @staticmethod
    def decode_reply(raw: Any) -> Any:
        """Validate a reply map (it has an ``id``)."""
        raise NotImplementedError

    def _unsolicited(self, reply: Any) -> None:
        """A reply nobody waits for (e.g. to a malformed request)."""

    def _ended_reply(self) -> Any:
        raise NotImplementedError

    # --- the pump --------------------------------------------------------------

    def _drop(self, err: SubscriptionDropped) -> None:
        """The subscription is over: readers raise ``err`` once they have
        read what they hold, requests raise it."""
        if self.dropped is None:
            self.dropped = err
        for reader in list(self._readers):
            reader.close(self.dropped)
        for slot in self._pending.values():
            slot['error'] = self.dropped
            slot['done'].set()

    def _on_dropped(self, raw: dict[str, Any]) -> None:
        try:
            msg = msgspec.convert(raw, Dropped)
        except msgspec.ValidationError as err:
            msg = Dropped(
                reason='ended', detail=f'a malformed last message {raw!r}: {err}'
            )
        stats: Any = msg.stats
        try:
            stats = msgspec.convert(msg.stats, SubStats)
        except msgspec.ValidationError:
            pass
        self._drop(SubscriptionDropped(msg.reason, msg.detail, stats))

    async def _pump(self) -> None:
        decode = self.data_decoder.decode
        readers = self._readers
        watched = self.heartbeat_s is not None
        try:
            async for raw in self.stream:
                if watched:
                    self._heard = trio.current_time()
                if isinstance(raw, bytes):
                    msg = decode(raw)
                    self.received += 1
                    for reader in list(readers):
                        if type(msg) is list:
                            for m in msg:
                                reader.put(m)
                        else:
                            reader.put(msg)
                    continue
                if type(raw) is dict and raw.get('type') == DROPPED_TAG:
                    self._on_dropped(raw)
                    continue
                if is_heartbeat(raw):
                    self.heartbeats += 1
                    continue
                reply = self.decode_reply(raw)
                slot = self._pending.get(reply.id)
                if slot is not None:
                    slot['reply'] = reply
                    slot['done'].set()
                else:
                    self._unsolicited(reply)
            if self.end_is_error and self.dropped is None:
                self._drop(
                    SubscriptionDropped(
                        'ended',
                        'the producer ended the stream without saying why',
                        None,
                    )
                )
        finally:
            for reader in list(readers):
                reader.close(self.dropped)
            for slot in self._pending.values():
                if self.dropped is not None:
                    slot['error'] = self.dropped
                else:
                    slot['reply'] = self._ended_reply()
                slot['done'].set()

    @acm
    async def _running(self) -> AsyncIterator[None]:
        """Run the pump with a default reader while the block runs."""
        async with trio.open_nursery() as tn, self.open_reader() as default:
            self._default = default
            tn.start_soon(self._pump)
            if self.heartbeat_s is not None:
                tn.start_soon(self._watch_silence)
            try:
                yield
            finally:
                tn.cancel_scope.cancel()

    async def _watch_silence(self) -> None:
        """Raise :class:`tractor_services.PeerGone` (cancelling the block
        running the pump) once the producer, which was asked for heartbeats,
        sent nothing for ``silence_timeout(heartbeat_s)`` (3 s by default):
        stuck, its host silent or the link cut; the connection is then
        marked disconnected."""
        self._heard = trio.current_time()
        timeout = silence_timeout(self.heartbeat_s)
        assert timeout is not None
        chan, _ = compat._transport_socket(self.stream)
        await watch_silence(lambda: self._heard, self.peer_what, timeout, chan)
