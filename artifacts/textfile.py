"""Reading user text files line by line, with errors that say where: ``path:line: problem``.

A corpus, a queries file, a qrels table, a KB entity file and a benchmark are all read through
:func:`text_lines`. It reads bytes and decodes each line on its own, so a stray non-UTF-8 byte is
reported with its line and byte offset ("corpus.jsonl:3: not valid UTF-8: byte 0xff at offset 12
of the line") instead of a ``UnicodeDecodeError`` at a position in a buffer nobody can find.

Each package raises its own named error (search: ``DataFormatError``; linking: ``KBFormatError``,
``BenchmarkFormatError``), so the caller passes a factory that builds it from (path, line, message);
line 0 means the whole file (it cannot be opened).

Example:
    >>> from pathlib import Path
    >>> def error(path: Path, line: int, message: str) -> ValueError:
    ...     return ValueError(f"{path}:{line}: {message}")
    >>> for line_no, line in text_lines(Path("queries.jsonl"), error):  # doctest: +SKIP
    ...     print(line_no, line)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

ErrorFactory = Callable[[Path, int, str], Exception]
"""Builds the caller's named error from (path, 1-based line or 0 for the whole file, message)."""

_BOM = "\ufeff"


def decode_line(raw: bytes) -> str:
    """One line's bytes as text (strict UTF-8, line ending removed); ``UnicodeDecodeError`` if invalid."""
    return raw.decode("utf-8").rstrip("\r\n")


def describe_decode_error(exc: UnicodeDecodeError) -> str:
    """What is wrong with the bytes, and where in the line: ``byte 0xff at offset 12 of the line``."""
    bad = exc.object[exc.start : exc.end]
    shown = " ".join(f"0x{b:02x}" for b in bad[:4])
    return (
        f"not valid UTF-8: {'byte' if len(bad) == 1 else 'bytes'} {shown} at offset {exc.start} of the line "
        "(save the file as UTF-8)"
    )


def text_lines(path: Path, error: ErrorFactory, *, skip_blank: bool = True) -> Iterator[tuple[int, str]]:
    """The lines of a UTF-8 text file with their 1-based numbers.

    Lines end at ``\\n`` (a ``\\r`` before it is dropped); a UTF-8 byte-order mark at the start is
    ignored. Blank lines are skipped unless ``skip_blank`` is False. The file is streamed, not read
    whole, so a corpus of any size costs one line of memory.

    Raises ``error(path, 0, ...)`` if the file cannot be opened or read, and
    ``error(path, line, ...)`` for a line that is not valid UTF-8.
    """
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed by the with below
    except OSError as exc:
        raise error(path, 0, f"cannot open: {exc.strerror or exc}") from exc
    with handle:
        line_no = 0
        try:
            for raw in handle:
                line_no += 1
                try:
                    line = decode_line(raw)
                except UnicodeDecodeError as exc:
                    raise error(path, line_no, describe_decode_error(exc)) from exc
                if line_no == 1 and line.startswith(_BOM):
                    line = line[len(_BOM) :]
                if skip_blank and not line.strip():
                    continue
                yield line_no, line
        except OSError as exc:  # e.g. a directory given as a file, or a read error mid-way
            raise error(path, line_no, f"cannot read: {exc.strerror or exc}") from exc
