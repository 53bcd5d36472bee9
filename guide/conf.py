"""Sphinx configuration for the corduroy2 guide.

Build: ``.venv/bin/python -m sphinx -W --keep-going -b html guide /tmp/guide-out``
(``./dev.sh test`` does it too). The ``doctest`` builder runs the examples that need no server:
``.venv/bin/python -m sphinx -b doctest guide /tmp/guide-doctest``.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import corduroy2  # noqa: E402  (after the sys.path change)

project = "corduroy2"
author = "the corduroy2 authors"
copyright = "the corduroy2 authors"
release = corduroy2.__version__
version = ".".join(release.split(".")[:2])

# No sphinx.ext.intersphinx: the build must work without network access.
extensions = ["sphinx.ext.autodoc", "sphinx.ext.doctest"]

root_doc = "index"
exclude_patterns = ["_build"]
nitpicky = False
highlight_language = "python3"
pygments_style = "sphinx"

# Autodoc: members in source order, type hints in the description (long signatures with
# ``Callable[[Any, Status], Any] | None`` are unreadable inline).
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented"
autodoc_class_signature = "mixed"
autodoc_default_options = {"show-inheritance": True}

# Only the examples that need no server run under the doctest builder.
doctest_test_doctest_blocks = ""

html_theme = "alabaster"
html_theme_options = {
    "description": "An asynchronous CouchDB client for Tornado and Twisted",
    "fixed_sidebar": True,
}
html_static_path: list[str] = []
