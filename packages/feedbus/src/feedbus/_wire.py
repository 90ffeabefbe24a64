"""
How data messages travel.

Quotes, frames and batches go over the tractor stream as msgpack
``bytes`` (a msgpack ``bin``), encoded once by the producer and decoded
on receipt by a typed ``msgspec`` decoder, which also validates them.  A
quote is encoded once however many subscribers get it; a batch is a
msgpack array made by concatenating already-encoded items behind an
array header.  Control requests and their replies stay plain msgpack
maps, so a receiver tells them apart by type (``bytes`` or not).

Why: a quote is encoded once however many subscribers get it, and a
batch costs one frame on the connection.  (tractor 0.1.0a5 also formats a
debug string of every message it sends and receives, a cost that grows
with the message: the adapter removes it, see
``tractor_services.compat._install_quiet_messages``.)

"""

from __future__ import annotations

import struct
from typing import Any, Union

import msgspec

_encoder = msgspec.msgpack.Encoder()


def pack(msg: Any) -> bytes:
    """One message (a struct, or already-packed bytes) as msgpack bytes."""
    if isinstance(msg, bytes):
        return msg
    return _encoder.encode(msg)


def pack_many(items: list[Any]) -> bytes:
    """Several messages as one msgpack array, without re-encoding any."""
    n = len(items)
    if n < 16:
        head = bytes((0x90 | n,))
    elif n < 1 << 16:
        head = b'\xdc' + struct.pack('>H', n)
    else:
        head = b'\xdd' + struct.pack('>I', n)
    return head + b''.join(pack(i) for i in items)


def decoder(item_type: Any) -> msgspec.msgpack.Decoder:
    """A decoder of one ``item_type`` (a struct or a union of tagged
    structs) or an array of them (a batch)."""
    return msgspec.msgpack.Decoder(Union[item_type, list[item_type]])  # type: ignore[valid-type]
