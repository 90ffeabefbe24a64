"""
systemd's readiness protocol (``sd_notify``) without a dependency.

Under a ``Type=notify`` unit systemd sets ``$NOTIFY_SOCKET`` to a unix
datagram socket (a path, or an abstract name written ``@name``) and waits
for ``READY=1`` before it counts the service as started; ``STOPPING=1``
tells it the service is on its way out, ``STATUS=...`` is the line
``systemctl status`` shows.  :func:`sd_notify` sends one datagram of
newline-separated assignments; with no ``$NOTIFY_SOCKET`` (not under
systemd) it does nothing.  See docs/production.md, "systemd".
"""

from __future__ import annotations

import os
import socket

from tractor_services import compat

log = compat.get_logger('sdnotify', 'tractor_sampler')

#: the variable systemd sets for a Type=notify service
NOTIFY_SOCKET_ENV = 'NOTIFY_SOCKET'


def notify_address(value: str | None = None) -> str | None:
    """The socket address ``$NOTIFY_SOCKET`` names, for ``connect()``: a
    path as it is, an abstract name (``@name``) with its leading NUL;
    ``None`` when unset or not a unix socket (systemd's ``vsock:`` form
    is not supported)."""
    value = os.environ.get(NOTIFY_SOCKET_ENV) if value is None else value
    if not value:
        return None
    if value.startswith('@'):
        return '\0' + value[1:]
    if value.startswith('/'):
        return value
    return None


def sd_notify(*assignments: str) -> bool:
    """Send ``assignments`` (``'READY=1'``, ``'STATUS=...'``) to systemd in
    one datagram; ``True`` when sent.  Never raises: a failure is logged
    (the service runs on; systemd times out waiting if it needed it)."""
    addr = notify_address()
    if addr is None:
        return False
    msg = '\n'.join(assignments).encode()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.connect(addr)
            s.sendall(msg)
    except OSError as err:
        log.warning(
            f'sd_notify: cannot send to ${NOTIFY_SOCKET_ENV} '
            f'({os.environ.get(NOTIFY_SOCKET_ENV)!r}): {err.strerror or err}'
        )
        return False
    return True


__all__ = ['NOTIFY_SOCKET_ENV', 'notify_address', 'sd_notify']
