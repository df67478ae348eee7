"""Benchmarks write their results into docs/BENCHMARKS.md, one ``## section`` each."""

from __future__ import annotations

from pathlib import Path


def write_section(path: str | Path, section: str, body: str) -> None:
    """Replace ``section`` (its heading line up to the next ``## ``) in ``path`` with ``body``,
    which starts with that heading; append it if the file has no such section."""
    path = Path(path)
    doc = path.read_text()
    if section in doc:
        head, _, rest = doc.partition(section)
        tail = rest[rest.find("\n## "):] if "\n## " in rest else ""
        doc = head + body + tail
    else:
        doc = doc.rstrip() + "\n\n" + body
    path.write_text(doc)
