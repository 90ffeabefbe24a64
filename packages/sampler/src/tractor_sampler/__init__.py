'''
tractor-sampler: the ``samplerd`` daemon, stepping shared-memory OHLCV
buffers and broadcasting each step to its subscribers.

'''
from tractor_services import compat as _compat  # noqa: F401  (tractor import guard)

__version__ = '0.1.0'

__all__: list[str] = []
