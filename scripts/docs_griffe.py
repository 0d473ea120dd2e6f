"""A griffe extension for the API reference (``mkdocs.yml``: the python handler's ``extensions``).

The docstrings use Sphinx roles (``:func:`~changecap.models.build_model```), which Markdown would show as they are
written; this turns each into a code span of the name (the last part of a ``~`` path), as Sphinx would display it.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:func|class|meth|attr|mod|data|exc|obj|const):`(~?)([^`]+)`")


def plain(docstring: str) -> str:
    """``docstring`` with every Sphinx role replaced by a code span of its target."""
    return ROLE.sub(lambda m: f"`{m.group(2).rsplit('.', 1)[-1] if m.group(1) else m.group(2)}`", docstring)


class SphinxRoles(griffe.Extension):
    """Rewrites the Sphinx roles of every docstring griffe loads."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = plain(obj.docstring.value)
