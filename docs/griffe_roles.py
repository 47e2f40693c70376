"""A griffe extension for the API reference (``extensions:`` of the python handler in mkdocs.yml).

The docstrings use Sphinx roles (``:class:`Policy```, ``:func:`~supervisor.load_primary```), which Markdown would
show as they are written; this turns each into a code span of its target (the last part only where the target
starts with ``~``), so the reference reads as the code means it. The docstrings themselves are not changed.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|data|attr|exc|obj|const):`(~?)([^`]+)`")


def _plain(match: re.Match[str]) -> str:
    target = match.group(2)
    return f"`{target.rsplit('.', 1)[-1] if match.group(1) else target}`"


class SphinxRoles(griffe.Extension):
    def on_object(self, *, obj: griffe.Object, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _ROLE.sub(_plain, obj.docstring.value)
