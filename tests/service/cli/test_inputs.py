"""What a new user trips over on the command line: bad inputs fail at once, in one line, before any model loads.

Every test here runs with the loaders of encoders, spaCy, KBs, models and indexes replaced by
fakes that fail the test if called (:func:`no_loading`), so "refused before loading" is asserted
by behaviour, not by timing.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from linking import KnowledgeBase
from service.cli import main
from service.cli.main import DefaultsHelpFormatter, build_parser, iter_parsers
from tests.conftest import TINY_DOCS
from tests.linking.conftest import ALIASES, ENTITIES

NOT_UTF8 = b"\xff\xfe broken"


@pytest.fixture
def no_loading(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every loader of a model, KB or index fails the test if a command calls it."""
    import spacy

    import service.serving.loading
    import service.serving.workers
    from linking import Disambiguator
    from retrieval.cross_encoder import CrossEncoderReranker
    from retrieval.dense import TorchEncoder
    from retrieval.index import SearchIndex
    from retrieval.onnx_encoder import OnnxEncoder
    from retrieval.rerank import LearnedReranker

    def refuse(what: str):
        def loader(*args, **kwargs):
            raise AssertionError(f"{what} was loaded before the bad input was refused")

        return loader

    monkeypatch.setattr(TorchEncoder, "load", refuse("the torch encoder"))
    monkeypatch.setattr(OnnxEncoder, "load", refuse("the ONNX encoder"))
    monkeypatch.setattr(spacy, "load", refuse("spaCy"))
    monkeypatch.setattr(KnowledgeBase, "load", refuse("a KB"))
    monkeypatch.setattr(KnowledgeBase, "from_files", refuse("the demo KB"))
    monkeypatch.setattr(Disambiguator, "load", refuse("a linker model"))
    monkeypatch.setattr(SearchIndex, "load", refuse("a search index"))
    monkeypatch.setattr(LearnedReranker, "load", refuse("a reranker"))
    monkeypatch.setattr(CrossEncoderReranker, "load", refuse("a cross-encoder reranker"))
    monkeypatch.setattr(service.serving.loading, "load_services", refuse("the served objects"))
    monkeypatch.setattr(service.serving.workers, "run", refuse("the server"))


@pytest.fixture
def inputs(tmp_path: Path, tiny_index, tiny_corpus: Path) -> dict[str, Path]:
    """Valid inputs of every kind (index, KB, queries, qrels, benchmark, token), and a path that does not exist."""
    kb = tmp_path / "kb"
    KnowledgeBase(ENTITIES, ALIASES).save(kb)
    queries = tmp_path / "queries.jsonl"
    queries.write_text('{"_id": "1", "text": "young cat"}\n{"_id": "2", "text": "fly"}\n', encoding="utf-8")
    qrels = tmp_path / "qrels.tsv"
    qrels.write_text("query-id\tcorpus-id\tscore\n1\tkitten\t1\n2\tbirds\t1\n", encoding="utf-8")
    bench = tmp_path / "bench.jsonl"
    bench.write_text(
        '{"id": "a", "text": "Paris is the capital city of France.", '
        '"mentions": [{"start": 0, "end": 5, "entity": "Paris"}]}\n',
        encoding="utf-8",
    )
    short_token = tmp_path / "token"
    short_token.write_text("too-short\n", encoding="utf-8")
    return {
        "index": tiny_index.path,
        "corpus": tiny_corpus,
        "kb": kb,
        "queries": queries,
        "qrels": qrels,
        "bench": bench,
        "short_token": short_token,
        "missing": tmp_path / "missing",
    }


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """Exit status and stderr of ``sleuth ARGV``."""
    code = main(argv)
    return code, capsys.readouterr().err


def assert_one_line_error(code: int, err: str, *fragments: str) -> None:
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "error:" in lines[0], err
    assert "Traceback" not in err and "was loaded" not in err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, err)


# (argv with {placeholders} of the inputs fixture, fragments the one-line error must contain)
BAD_INPUTS = [
    (["link", ""], ["argument text", "must not be empty"]),
    (["link", "   "], ["argument text", "must not be empty"]),
    (["link", "--top", "-1", "Paris"], ["--top", "within [0, 99]"]),
    (["link", "--kb", "{missing}", "Paris"], ["--kb", "no such artifact directory"]),
    (["link", "--model", "{missing}", "Paris"], ["--model", "no such artifact directory"]),
    (["link", "--kb", "{index}", "Paris"], ["--kb", "expected a 'kb'"]),
    (["link", "--target", "127.0.0.1:1", "--kb", "{kb}", "Paris"], ["--target", "drop --kb"]),
    (["search", "--index", "{missing}", "cats"], ["--index", "no such artifact directory"]),
    (["search", "--index", "{kb}", "cats"], ["--index", "expected a 'search-index'"]),
    (["search", "--index", "{index}", " "], ["argument query", "must not be empty"]),
    (["search", "--index", "{index}", "cats", "-k", "0"], ["-k/--top-k", "within [1, 1000], got 0"]),
    (["search", "--index", "{index}", "cats", "-k", "1001"], ["-k/--top-k", "got 1001"]),
    (["search", "--target", "127.0.0.1:1", "cats", "-k", "0"], ["-k/--top-k", "got 0"]),
    (["search", "--index", "{index}", "cats", "--mode", "rerank"], ["--mode", "needs --reranker"]),
    (["search", "--index", "{index}", "cats", "--rerank-depth", "0"], ["--rerank-depth", "within [1, 1000]"]),
    (["search", "--index", "{index}", "cats", "--alpha", "2"], ["--alpha", "within [0, 1]"]),
    (
        ["eval", "search", "--index", "{index}", "--queries", "{queries}", "--qrels", "{qrels}", "--depth", "0"],
        ["--depth"],
    ),
    (["search", "--index", "{index}", "cats", "--mode", "rerank", "--reranker", "{missing}"], ["--reranker"]),
    (["search", "--target", "127.0.0.1:1", "cats", "--token-file", "{missing}"], ["--token-file", "no such file"]),
    (["search", "--target", "127.0.0.1:1", "cats", "--tls-ca", "{missing}"], ["--tls-ca", "no such file"]),
    (["eval", "search", "--index", "{index}", "--queries", "{missing}", "--qrels", "{qrels}"], ["missing"]),
    (["eval", "search", "--index", "{missing}", "--queries", "{queries}", "--qrels", "{qrels}"], ["--index"]),
    (["index", "build", "--corpus", "{missing}", "--out", "{missing}"], ["corpus file not found"]),
    (["index", "build", "--corpus", "{queries}", "--out", "{kb}"], ["--out", "already exists"]),
    (["index", "build", "--corpus", "{queries}", "--out", "{missing}", "--hnsw-m", "0"], ["--hnsw-m"]),
    (["eval", "link", "--kb", "{kb}", "--benchmark", "{missing}"], ["--benchmark", "no such file"]),
    (["eval", "link", "--kb", "{missing}", "--benchmark", "{bench}"], ["--kb", "no such artifact directory"]),
    (["train", "linker", "--kb", "{missing}", "--benchmark", "{bench}"], ["--kb", "no such artifact directory"]),
    (["train", "linker", "--kb", "{kb}", "--benchmark", "{bench}", "--folds", "1"], ["--folds"]),
    (["train", "linker", "--kb", "{kb}", "--benchmark", "{missing}"], ["--benchmark", "no such file"]),
    (["train", "reranker", "--index", "{index}", "--queries", "{queries}", "--qrels", "{missing}"], ["missing"]),
    (["train", "reranker", "--index", "{missing}", "--queries", "{queries}", "--qrels", "{qrels}"], ["--index"]),
    (
        [
            "train",
            "reranker",
            "--type",
            "cross",
            "--index",
            "{missing}",
            "--queries",
            "{queries}",
            "--qrels",
            "{qrels}",
        ],
        ["--index"],
    ),
    (
        [
            "train",
            "reranker",
            "--type",
            "cross",
            "--index",
            "{index}",
            "--queries",
            "{queries}",
            "--qrels",
            "{missing}",
        ],
        ["missing"],
    ),
    (
        [
            "train",
            "reranker",
            "--type",
            "cross",
            "--index",
            "{index}",
            "--queries",
            "{queries}",
            "--qrels",
            "{qrels}",
            "--depths",
            "0",
        ],
        ["depths"],
    ),
    (
        ["train", "reranker", "--type", "bert", "--index", "{index}", "--queries", "{queries}", "--qrels", "{qrels}"],
        ["--type", "invalid choice"],
    ),
    (
        ["train", "reranker", "--index", "{index}", "--queries", "{queries}", "--qrels", "{qrels}", "--out", "{kb}"],
        ["--out"],
    ),
    *[
        (["train", "encoder", "--corpus", "{corpus}", "--queries", "{queries}", "--qrels", "{qrels}", *extra], frags)
        for extra, frags in [
            (["--qrels", "{missing}"], ["--qrels", "no such file"]),
            (["--queries", "{missing}"], ["--queries", "no such file"]),
            (["--corpus", "{missing}"], ["corpus file not found"]),
            (["--out", "{kb}"], ["--out", "already exists"]),
            (["--index", "{kb}"], ["--index", "expected a 'search-index'"]),
            (["--batch-size", "1"], ["batch_size must be >= 2"]),
            (["--valid-folds", "1"], ["valid_folds"]),
            (["--max-seq-length", "4"], ["max_seq_length"]),
            ([], ["too few to hold out"]),
            (["--valid-folds", "0", "--corpus", "{queries}"], ["no judged document is in the corpus"]),
        ]
    ],
    (["serve", "--index", "{missing}"], ["--index", "no such artifact directory"]),
    (["serve", "--kb", "{index}"], ["--kb", "expected a 'kb'"]),
    (["serve", "--model", "{missing}"], ["--model"]),
    (["serve", "--tls-cert", "{missing}", "--tls-key", "{missing}"], ["--tls-cert", "no such file"]),
    (["serve", "--auth-token-file", "{short_token}"], ["shorter than"]),
    (["serve", "--port", "70000"], ["--port"]),
]


@pytest.mark.parametrize(
    ("argv", "fragments"), BAD_INPUTS, ids=[" ".join(a[:2]) + f"-{i}" for i, (a, _) in enumerate(BAD_INPUTS)]
)
def test_bad_input_is_one_line_exit_2_before_anything_loads(
    argv: list[str], fragments: list[str], inputs: dict[str, Path], no_loading: None, capsys
) -> None:
    code, err = run([arg.format(**{k: str(v) for k, v in inputs.items()}) for arg in argv], capsys)
    assert_one_line_error(code, err, *fragments)


def test_input_files_with_bad_bytes_name_file_and_line(tmp_path: Path, inputs, no_loading: None, capsys) -> None:
    corpus = tmp_path / "name.jsonl"
    good = b"".join(json.dumps(doc).encode() + b"\n" for doc in TINY_DOCS[:2])
    corpus.write_bytes(good + b'{"_id": "x", "title": "' + NOT_UTF8 + b'", "text": ""}\n')
    code, err = run(["index", "build", "--corpus", str(corpus), "--out", str(tmp_path / "out")], capsys)
    assert_one_line_error(code, err, "name.jsonl:3", "not valid UTF-8", "0xff")
    assert not (tmp_path / "out").exists()

    queries = tmp_path / "queries.jsonl"
    queries.write_bytes(b'{"_id": "1", "text": "cat"}\n{"_id": "2", "text": "dog"}\n{"_id": "3", "text": "\xff"}\n')
    argv = ["eval", "search", "--index", str(inputs["index"]), "--queries", str(queries), "--qrels"]
    assert_one_line_error(*run([*argv, str(inputs["qrels"])], capsys), "queries.jsonl:3", "not valid UTF-8")

    qrels = tmp_path / "qrels.tsv"
    qrels.write_bytes(b"query-id\tcorpus-id\tscore\n1\tkitten\t1\n2\t\xffbirds\t1\n")
    argv = ["eval", "search", "--index", str(inputs["index"]), "--queries", str(inputs["queries"]), "--qrels"]
    assert_one_line_error(*run([*argv, str(qrels)], capsys), "qrels.tsv:3", "not valid UTF-8")

    bench = tmp_path / "bench.jsonl"
    bench.write_bytes(inputs["bench"].read_bytes() * 2 + b'{"id": "c", "text": "\xff", "mentions": []}\n')
    code, err = run(["eval", "link", "--kb", str(inputs["kb"]), "--benchmark", str(bench)], capsys)
    assert_one_line_error(code, err, "bench.jsonl:3", "not valid UTF-8")
    code, err = run(["train", "linker", "--kb", str(inputs["kb"]), "--benchmark", str(bench)], capsys)
    assert_one_line_error(code, err, "bench.jsonl:3", "not valid UTF-8")


def test_undecodable_command_line_text_names_the_argument(inputs, no_loading: None, capsys) -> None:
    # What Python makes of `sleuth search $'\xff'`: the byte it cannot decode becomes U+DCFF.
    code, err = run(["search", "--index", str(inputs["index"]), "caf\udcff"], capsys)
    assert_one_line_error(code, err, "argument query", "not valid UTF-8", "0xff")
    code, err = run(["link", "\udce9t\udce9"], capsys)
    assert_one_line_error(code, err, "argument text", "0xe9")
    code, err = run(["search", "--target", "127.0.0.1:1", "cats", "--session", "\udcff"], capsys)
    assert_one_line_error(code, err, "argument --session")


def test_every_option_of_every_command_has_help_that_shows_its_default() -> None:
    parser, _ = build_parser()
    checked = 0
    for command in iter_parsers(parser):
        formatter = DefaultsHelpFormatter(command.prog)
        for action in command._actions:
            if isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
                continue
            where = f"{command.prog} {'/'.join(action.option_strings) or action.dest}"
            assert (action.help or "").strip(), f"{where} has no help"
            default = action.default
            if action.option_strings and default not in (None, False, [], argparse.SUPPRESS):
                shown = formatter._expand_help(action)
                assert "default" in shown.lower(), f"{where}: help does not show its default {default!r}: {shown}"
            checked += 1
    assert checked > 100  # every command group was walked (serve alone has 30 options)
    serve = next(p for p in iter_parsers(parser) if p.prog == "sleuth serve")
    assert "(default: 50051" in serve.format_help() or "default 50051" in serve.format_help()


def test_help_exits_0_and_parser_errors_are_one_line(capsys) -> None:
    assert main(["search", "--help"]) == 0
    out = capsys.readouterr().out
    assert "(default: hybrid)" in out and "(default: 60.0)" in out and "(default: 10)" in out
    code, err = run(["search", "cats"], capsys)  # neither --index nor --target
    assert_one_line_error(code, err, "sleuth search: error:", "--index", "--target")
