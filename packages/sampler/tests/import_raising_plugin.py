"""A plugin module that raises when it is imported (its venue SDK is not
configured): a feed daemon given it with ``--plugin`` leaves it out in
one line and serves every other backend."""

raise RuntimeError('the venue SDK is not configured')
