"""tractor-services' tests.  The fixtures (``reg_addr``, ``other_addr``)
and the leak checks come from the package's pytest plugin,
``tractor_services.testing``."""

from __future__ import annotations

from pathlib import Path

from tractor_services.testing import importable_by_subactors

# subactors import this folder's endpoint modules by name
importable_by_subactors(Path(__file__).parent)
