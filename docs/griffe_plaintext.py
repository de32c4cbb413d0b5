"""Griffe extension for the API pages: square brackets in docstrings are text, not Markdown links.

The docstrings are plain text that write tensor shapes and command lines with brackets
(``W [out, K]``, ``codebook[g][index]``, ``[--run-dir DIR] [--steps N]``). Markdown reads two
bracket groups in a row as a reference link, and mkdocs-autorefs then reports a missing
cross-reference target, which ``mkdocs build --strict`` turns into a failure. This extension
escapes the second bracket of such pairs outside code (indented blocks and backtick spans), so
only real broken links in docs/*.md fail the build. Loaded by mkdocs.yml (mkdocstrings options).
"""

from __future__ import annotations

import re
from typing import Any

import griffe

# "]" then at most one space or newline then "[": what Python-Markdown may read as [text][ref].
_PAIR = re.compile(r"\](\s?)\[")
# Inline code spans (one or more backticks, the same number closing), left untouched.
_CODE_SPAN = re.compile(r"(`+)(?:.+?)\1")


def escape_reference_pairs(text: str) -> str:
    """Escape ``][`` and ``] [`` outside code spans and indented code lines, so Markdown keeps them as text."""
    out = []
    for line in text.split("\n"):
        if line.startswith("    ") or line.startswith("\t"):
            out.append(line)  # an indented block is code: a backslash would show there
            continue
        pieces, pos = [], 0
        for match in _CODE_SPAN.finditer(line):
            pieces.append(_PAIR.sub(r"]\1\\[", line[pos:match.start()]))
            pieces.append(match.group(0))
            pos = match.end()
        pieces.append(_PAIR.sub(r"]\1\\[", line[pos:]))
        out.append("".join(pieces))
    return "\n".join(out)


class PlainTextBrackets(griffe.Extension):
    """Rewrites every loaded object's docstring with :func:`escape_reference_pairs`."""

    def on_object(self, *, obj: griffe.Object, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        """Escape bracket pairs in the docstring of ``obj`` (a module, class, function or attribute)."""
        if obj.docstring is not None:
            obj.docstring.value = escape_reference_pairs(obj.docstring.value)
