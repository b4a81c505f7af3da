"""A Griffe extension for the API reference: tickerq's docstrings use a few
reStructuredText habits (roles such as ``:class:`X```, ``Example::`` before an
indented block); this turns them into the Markdown that mkdocstrings renders.

- ``:class:`~pkg.mod.Name``` (and ``:meth:``, ``:func:``, ``:attr:``, ``:data:``,
  ``:mod:``, ``:exc:``) becomes inline code (the last part only with ``~``);
- a paragraph ending in ``::`` ends in ``:``, and the indented block after it
  becomes a fenced Python code block.
"""

from __future__ import annotations

import re
import textwrap
from typing import Any

import griffe

_ROLE = re.compile(r":(?:class|meth|func|attr|data|mod|exc|obj):`(~?)([^`]+)`")


def _role(match: re.Match[str]) -> str:
    short, target = match.group(1), match.group(2)
    if short:
        target = target.rsplit(".", 1)[-1]
    return f"`{target}`"


def to_markdown(text: str) -> str:
    """The docstring ``text`` with its reST roles and literal blocks in Markdown."""
    text = _ROLE.sub(_role, text)
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.rstrip().endswith("::"):
            head = line.rstrip()[:-2].rstrip()
            if head:
                out.append(head + ":")
            i += 1
            block: list[str] = []
            while i < len(lines) and (not lines[i].strip() or lines[i].startswith(" ")):
                block.append(lines[i])
                i += 1
            while block and not block[-1].strip():
                block.pop()
            body = textwrap.dedent("\n".join(block)).strip("\n")
            out += ["", "```python", *body.split("\n"), "```", ""]
            continue
        out.append(line)
        i += 1
    return "\n".join(out)


class ReSTRoles(griffe.Extension):
    """Rewrite each object's docstring from tickerq's reST habits to Markdown."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = to_markdown(obj.docstring.value)
