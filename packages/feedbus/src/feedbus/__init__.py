'''
feedbus: real-time feed subscriptions across tractor actors.

'''
from tractor_services import compat as _compat  # noqa: F401  (tractor import guard)

__version__ = '0.1.0'

__all__: list[str] = []
