"""Sphinx configuration: MyST pages (``.md``), the furo theme, autodoc.

Build: ``uv run nox -s docs`` (``sphinx-build -W --keep-going -b html docs
docs/_build/html``).
"""

from __future__ import annotations

project = "tractor-services"
author = "tractor-services contributors"
copyright = "the tractor-services contributors"
release = "0.1.0"

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
    "sphinxcontrib_trio",
]

# No intersphinx: it would link to trio's docs
# (https://trio.readthedocs.io/en/stable/), but fetching the inventory needs
# the network, and an unreachable inventory is a warning that fails the
# ``-W`` build on machines that only reach package registries.  Name trio
# objects in plain literals instead.

source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]

myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}

html_theme = "furo"
html_title = "tractor-services"
