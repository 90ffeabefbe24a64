"""
feedbus' wire codec: how data messages travel on a feed stream.

Quotes, frames and batches go as msgpack ``bytes``, encoded once by the
producer (:func:`pack`, :func:`pack_many` for a batch) and decoded and
validated on receipt by a typed decoder (:func:`decoder`).  Control
requests and replies stay plain maps (see :mod:`feedbus.protocol`), so a
receiver tells the two apart by type.  For a protocol of your own built
on :class:`feedbus.protocol.StreamReaders` (tractor-sampler's sample
streams are one).

"""

from ._wire import decoder as decoder
from ._wire import pack as pack
from ._wire import pack_many as pack_many

__all__ = ['decoder', 'pack', 'pack_many']
