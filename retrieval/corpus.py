"""Reading BEIR-layout files: corpus.jsonl, queries.jsonl and qrels TSV.

Errors name the file and line, so a bad row in a 5 GB corpus is found without a debugger.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

from artifacts.textfile import text_lines
from retrieval.errors import DataFormatError
from retrieval.types import Document, Query

logger = logging.getLogger(__name__)

Qrels = dict[str, dict[str, int]]
EMPTY_IDS_SHOWN = 5
"""How many empty documents' ids the warning of :func:`load_corpus` names."""


def resolve_corpus_path(path: str | Path) -> Path:
    """Accept a corpus file or a BEIR directory containing ``corpus.jsonl``."""
    path = Path(path)
    if path.is_dir():
        path = path / "corpus.jsonl"
    if not path.is_file():
        raise DataFormatError(f"{path}: corpus file not found")
    return path


def _data_error(path: Path, line: int, message: str) -> DataFormatError:
    """The search core's named error for a bad input file: ``path:line: message`` (no line for the whole file)."""
    return DataFormatError(f"{path}:{line}: {message}" if line else f"{path}: {message}")


def _json_lines(path: Path) -> Iterator[tuple[int, dict]]:
    for lineno, line in text_lines(path, _data_error):
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataFormatError(f"{path}:{lineno}: not valid JSON: {exc.msg} (column {exc.colno})") from exc
        if not isinstance(row, dict):
            raise DataFormatError(f"{path}:{lineno}: expected a JSON object")
        yield lineno, row


def numbered_lines(path: Path, what: str) -> Iterator[tuple[int, str]]:
    """The non-blank lines of a UTF-8 text file with their 1-based numbers.

    A file that cannot be read is a :class:`DataFormatError` naming ``what`` it should have been; a
    line that is not valid UTF-8 is one naming the file, line and byte offset.
    """

    def error(path: Path, line: int, message: str) -> DataFormatError:
        return _data_error(path, line, message if line else f"cannot read {what}: {message}")

    yield from text_lines(path, error)


_JSON_TYPES = {bool: "a boolean", int: "a number", float: "a number", list: "a list", dict: "an object"}


def _required_str(row: dict, key: str, path: Path, lineno: int, *, allow_empty: bool = False) -> str:
    value = row.get(key)
    if value is None and allow_empty:
        return ""
    if isinstance(value, int) and not isinstance(value, bool) and key == "_id":
        value = str(value)
    if isinstance(value, str) and (allow_empty or value.strip()):
        return value
    if value is None:
        problem = "it is missing" if key not in row else "it is null"
    elif isinstance(value, str):
        problem = "it is empty"
    else:
        problem = f"it is {_JSON_TYPES.get(type(value), type(value).__name__)}"
    wanted = "a string" if allow_empty else "a non-empty string"
    raise DataFormatError(f"{path}:{lineno}: field {key!r} must be {wanted}, but {problem}")


def iter_corpus(path: str | Path, *, strict: bool = False) -> Iterator[Document]:
    """Yield documents from a BEIR corpus file (or directory); ids must be unique.

    An empty document (no title and no text, or only whitespace) is yielded like any other: a few
    of them should not stop a whole collection from being indexed. With ``strict`` the first one is
    a :class:`DataFormatError` naming its file and line.
    """
    for _lineno, document in _numbered_documents(resolve_corpus_path(path), strict=strict):
        yield document


def _numbered_documents(path: Path, *, strict: bool) -> Iterator[tuple[int, Document]]:
    seen: set[str] = set()
    for lineno, row in _json_lines(path):
        doc_id = _required_str(row, "_id", path, lineno)
        if doc_id in seen:
            raise DataFormatError(f"{path}:{lineno}: duplicate document id {doc_id!r}")
        seen.add(doc_id)
        title = _required_str(row, "title", path, lineno, allow_empty=True)
        text = _required_str(row, "text", path, lineno, allow_empty=True)
        document = Document(doc_id=doc_id, title=title, text=text)
        if strict and document.is_empty:
            raise DataFormatError(f"{path}:{lineno}: document {doc_id!r} has neither title nor text (strict mode)")
        yield lineno, document


def load_corpus(path: str | Path, *, strict: bool = False, warn_empty: bool = True) -> list[Document]:
    """Read a BEIR corpus file (or directory): every document, empty ones included.

    Empty documents are kept (BM25 never matches them; the search index keeps them out of dense
    results) and, with ``warn_empty``, logged as one warning with their count and first ids;
    ``strict`` makes the first one an error instead (see :func:`iter_corpus`).

    Example:
        >>> docs = load_corpus("../shared/data/retrieval/scifact")  # doctest: +SKIP
    """
    resolved = resolve_corpus_path(path)
    documents = []
    empty: list[tuple[int, str]] = []
    for lineno, document in _numbered_documents(resolved, strict=strict):
        documents.append(document)
        if document.is_empty:
            empty.append((lineno, document.doc_id))
    if not documents:
        raise DataFormatError(f"{resolved}: corpus is empty")
    if empty and warn_empty:
        shown = ", ".join(f"{doc_id!r} (line {lineno})" for lineno, doc_id in empty[:EMPTY_IDS_SHOWN])
        more = f" and {len(empty) - EMPTY_IDS_SHOWN} more" if len(empty) > EMPTY_IDS_SHOWN else ""
        logger.warning(
            "%s: %d of %d documents have neither title nor text; they are indexed but never retrieved: %s%s",
            resolved,
            len(empty),
            len(documents),
            shown,
            more,
        )
    return documents


def load_queries(path: str | Path) -> list[Query]:
    """Read a BEIR queries.jsonl (``_id``, ``text``)."""
    path = Path(path)
    queries = [
        Query(qid=_required_str(row, "_id", path, lineno), text=_required_str(row, "text", path, lineno))
        for lineno, row in _json_lines(path)
    ]
    if not queries:
        raise DataFormatError(f"{path}: no queries")
    return queries


def load_qrels(path: str | Path) -> Qrels:
    """Read a qrels file: ``query-id <TAB> corpus-id <TAB> score`` (BEIR, header optional),
    or TREC's four columns ``qid iter docid rel``."""
    path = Path(path)
    qrels: Qrels = {}
    for lineno, line in numbered_lines(path, "qrels"):
        parts = line.split("\t") if "\t" in line else line.split()
        if len(parts) == 4:
            parts = [parts[0], parts[2], parts[3]]
        if len(parts) != 3:
            raise DataFormatError(f"{path}:{lineno}: expected 3 tab-separated columns, got {len(parts)}")
        qid, doc_id, rel = (p.strip() for p in parts)
        try:
            relevance = int(rel)
        except ValueError:
            if lineno == 1:  # header
                continue
            raise DataFormatError(f"{path}:{lineno}: relevance {rel!r} is not an integer") from None
        qrels.setdefault(qid, {})[doc_id] = relevance
    if not qrels:
        raise DataFormatError(f"{path}: no judgments")
    return qrels
