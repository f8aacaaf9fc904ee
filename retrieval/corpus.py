"""Reading BEIR-layout files: corpus.jsonl, queries.jsonl and qrels TSV.

Errors name the file and line, so a bad row in a 5 GB corpus is found without a debugger.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from retrieval.errors import DataFormatError
from retrieval.types import Document, Query

Qrels = dict[str, dict[str, int]]


def resolve_corpus_path(path: str | Path) -> Path:
    """Accept a corpus file or a BEIR directory containing ``corpus.jsonl``."""
    path = Path(path)
    if path.is_dir():
        path = path / "corpus.jsonl"
    if not path.is_file():
        raise DataFormatError(f"{path}: corpus file not found")
    return path


def _json_lines(path: Path) -> Iterator[tuple[int, dict]]:
    try:
        handle = open(path, encoding="utf-8")  # noqa: SIM115 - closed by the with below
    except OSError as exc:
        raise DataFormatError(f"{path}: cannot open: {exc.strerror}") from exc
    with handle:
        for lineno, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise DataFormatError(f"{path}:{lineno}: not valid JSON: {exc}") from exc
            if not isinstance(row, dict):
                raise DataFormatError(f"{path}:{lineno}: expected a JSON object")
            yield lineno, row


def numbered_lines(path: Path, what: str) -> Iterator[tuple[int, str]]:
    """The non-blank lines of a text file with their 1-based numbers; an unreadable file is a
    :class:`DataFormatError` naming ``what`` it should have been."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataFormatError(f"{path}: cannot read {what}: {exc}") from exc
    for lineno, line in enumerate(lines, start=1):
        if line.strip():
            yield lineno, line


def _required_str(row: dict, key: str, path: Path, lineno: int, *, allow_empty: bool = False) -> str:
    value = row.get(key)
    if value is None and allow_empty:
        return ""
    if isinstance(value, int) and key == "_id":
        value = str(value)
    if not isinstance(value, str) or (not allow_empty and not value.strip()):
        raise DataFormatError(f"{path}:{lineno}: field {key!r} must be a non-empty string")
    return value


def iter_corpus(path: str | Path) -> Iterator[Document]:
    """Yield documents from a BEIR corpus file (or directory); ids must be unique."""
    path = resolve_corpus_path(path)
    seen: set[str] = set()
    for lineno, row in _json_lines(path):
        doc_id = _required_str(row, "_id", path, lineno)
        if doc_id in seen:
            raise DataFormatError(f"{path}:{lineno}: duplicate document id {doc_id!r}")
        seen.add(doc_id)
        title = _required_str(row, "title", path, lineno, allow_empty=True)
        text = _required_str(row, "text", path, lineno, allow_empty=True)
        if not (title.strip() or text.strip()):
            raise DataFormatError(f"{path}:{lineno}: document {doc_id!r} has neither title nor text")
        yield Document(doc_id=doc_id, title=title, text=text)


def load_corpus(path: str | Path) -> list[Document]:
    documents = list(iter_corpus(path))
    if not documents:
        raise DataFormatError(f"{resolve_corpus_path(path)}: corpus is empty")
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
