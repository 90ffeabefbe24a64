"""``python -m tractor_sampler``: the ``samplerd`` command."""

import sys

from ._cli import main

if __name__ == '__main__':
    sys.exit(main())
