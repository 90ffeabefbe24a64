'''
Reading one tractor stream from many local tasks, with requests and
their replies on the same stream.

A :class:`StreamReaders` runs one pump task that never blocks between
receives (so tractor 0.1.0a5's context cannot overrun): data messages
(msgpack bytes, see :mod:`feedbus._wire`) go to every local reader's
bounded buffer, replies (maps) to the request waiting for their ``id``.
``Feed`` and tractor-sampler's ``SampleStream`` are both built on it.

'''
from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager as acm
from dataclasses import dataclass, field
from typing import Any, ClassVar

import msgspec
import trio

from ._bus import OUTBOX_SIZE, Outbox, SubStats


@dataclass(kw_only=True, eq=False)
class StreamReaders:
    '''Many local readers of one stream, and request/reply over it.

    Subclasses set ``data_decoder`` (a msgspec decoder of the stream's data
    messages) and ``decode_reply`` (a function validating a reply map with
    an ``id``), and may override :meth:`_unsolicited` and
    :meth:`_ended_reply`.'''
    data_decoder: ClassVar[msgspec.msgpack.Decoder]

    stream: Any
    buffer: int = OUTBOX_SIZE
    local_stats: SubStats = field(default_factory=SubStats)
    _readers: set[Outbox] = field(default_factory=set)
    _default: Outbox | None = None
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    _pending: dict[int, dict[str, Any]] = field(default_factory=dict)

    # --- reading -------------------------------------------------------------

    def __aiter__(self) -> StreamReaders:
        return self

    async def __anext__(self) -> Any:
        try:
            return await self.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None

    async def receive(self) -> Any:
        '''The next message for the default reader.'''
        if self._default is None:
            raise RuntimeError('this stream has no reader: it was opened without a data stream')
        return await self._default.receive()

    @acm
    async def open_reader(self) -> AsyncIterator[Outbox]:
        '''A reader of its own for one local task: every message from now
        on, in a bounded buffer that drops (and counts) the oldest.'''
        reader = Outbox(self.buffer, self.local_stats)
        self._readers.add(reader)
        try:
            yield reader
        finally:
            self._readers.discard(reader)
            reader.close()

    # --- requests ------------------------------------------------------------

    async def _ask(self, make: Callable[[int], Any]) -> Any:
        '''Send ``make(id)`` and return the reply carrying that id.'''
        rid = next(self._ids)
        slot: dict[str, Any] = {'done': trio.Event()}
        self._pending[rid] = slot
        try:
            await self.stream.send(msgspec.to_builtins(make(rid)))
            await slot['done'].wait()
        finally:
            self._pending.pop(rid, None)
        return slot['reply']

    @staticmethod
    def decode_reply(raw: Any) -> Any:
        '''Validate a reply map (it has an ``id``).'''
        raise NotImplementedError

    def _unsolicited(self, reply: Any) -> None:
        '''A reply nobody waits for (e.g. to a malformed request).'''

    def _ended_reply(self) -> Any:
        raise NotImplementedError

    # --- the pump --------------------------------------------------------------

    async def _pump(self) -> None:
        decode = self.data_decoder.decode
        readers = self._readers
        try:
            async for raw in self.stream:
                if isinstance(raw, bytes):
                    msg = decode(raw)
                    for reader in list(readers):
                        if type(msg) is list:
                            for m in msg:
                                reader.put(m)
                        else:
                            reader.put(msg)
                    continue
                reply = self.decode_reply(raw)
                slot = self._pending.get(reply.id)
                if slot is not None:
                    slot['reply'] = reply
                    slot['done'].set()
                else:
                    self._unsolicited(reply)
        finally:
            for reader in list(readers):
                reader.close()
            for slot in self._pending.values():
                slot['reply'] = self._ended_reply()
                slot['done'].set()

    @acm
    async def _running(self) -> AsyncIterator[None]:
        '''Run the pump with a default reader while the block runs.'''
        async with trio.open_nursery() as tn, self.open_reader() as default:
            self._default = default
            tn.start_soon(self._pump)
            try:
                yield
            finally:
                tn.cancel_scope.cancel()
