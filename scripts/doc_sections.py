"""Generated sections of the docs: the text between ``<!-- NAME:start -->`` and ``<!-- NAME:end -->``.

The benchmark scripts' ``--write-doc(s)`` options replace their own section of a Markdown file and
leave the rest of it alone. The markers are appended to the file when it has none yet.

Example:
    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "bench.md"
    >>> replace_section(path, "search", "| mode | queries/s |")
    >>> replace_section(path, "search", "| mode | q/s |")
    >>> path.read_text(encoding="utf-8").count("<!-- search:start -->")
    1
"""

from __future__ import annotations

from pathlib import Path

NEW_FILE = "# Benchmarks\n"


def markers(name: str) -> tuple[str, str]:
    """The start and end markers of section ``name``."""
    return f"<!-- {name}:start -->", f"<!-- {name}:end -->"


def replace_section(path: Path, name: str, body: str) -> None:
    """Put ``body`` between the markers of ``name`` in ``path`` (a new file starts as a Benchmarks page)."""
    start, end = markers(name)
    text = path.read_text(encoding="utf-8") if path.exists() else NEW_FILE
    if start not in text or end not in text:
        text = text.rstrip("\n") + f"\n\n{start}\n{end}\n"
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{head}{start}\n{body.strip(chr(10))}\n{end}{tail}", encoding="utf-8")
