"""Rewriting the results section of ``docs/performance.md`` (``run.py --update-docs``).

Only the text between the two marker comments changes; the method above it is hand-written.
"""

from __future__ import annotations

__all__ = ["END", "START", "replace_section"]

START = "<!-- benchmark-results:start -->"
END = "<!-- benchmark-results:end -->"


def replace_section(document: str, section: str) -> str:
    """``document`` with the text between :data:`START` and :data:`END` set to ``section``.

    Raises ``ValueError`` when the markers are missing or out of order.
    """
    start = document.find(START)
    end = document.find(END)
    if start < 0 or end < start:
        raise ValueError(f"the document needs {START!r} followed by {END!r}")
    head = document[: start + len(START)]
    return f"{head}\n{section.strip()}\n{document[end:]}"
