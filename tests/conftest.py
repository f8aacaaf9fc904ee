"""Shared fixtures: a deterministic fake encoder, tiny corpora, the real encoder and the shared data.

Nothing a test run writes leaves its temporary directories: every cache the library would keep
in ``~/.cache/sleuth`` (document embeddings, exported ONNX graphs, the demo index), the model
registry and third-party caches go to one temporary directory per session
(:func:`pytest_configure`). Every run is therefore cold and embeds what it uses, which is why the
real-data tests run on a SciFact subset (:func:`scifact_train_dir`) and embed documents with the
ONNX runtime of the real encoder.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
RETRIEVAL_DATA = SHARED_DATA / "retrieval"
LINKING_DATA = SHARED_DATA / "linking"


class FakeEncoder:
    """Encodes a text as the normalized counts of a fixed keyword list (plus a bias dimension).

    Deterministic and instant: tests of fusion and the pipeline get exact, explainable dense
    scores without a model (the sentence-transformers trick for IR evaluator tests).
    """

    def __init__(self, keywords: list[str]) -> None:
        self.keywords = keywords
        self.name = "fake-keywords"
        self.checksum = hashlib.sha256("\n".join(keywords).encode()).hexdigest()[:16]
        self.dimension = len(keywords) + 1
        self.calls: list[int] = []

    def encode(self, texts: list[str], *, batch_size: int = 64, show_progress: bool = False) -> np.ndarray:
        self.calls.append(len(texts))
        matrix = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for row, text in enumerate(texts):
            words = re.findall(r"\w+", text.lower())
            for col, keyword in enumerate(self.keywords):
                matrix[row, col] = sum(w.startswith(keyword) for w in words)
            matrix[row, -1] = 0.1
        return matrix / np.linalg.norm(matrix, axis=1, keepdims=True)


TINY_DOCS = [
    {"_id": "cats", "title": "Cats", "text": "Cats are small felines; a cat purrs and hunts mice."},
    {"_id": "dogs", "title": "Dogs", "text": "Dogs are loyal canines. A dog barks, fetches and guards the house."},
    {"_id": "kitten", "title": "Kitten care", "text": "A kitten is a young cat. Feed kittens often."},
    {"_id": "birds", "title": "Birds", "text": "Birds have feathers and most birds can fly; parrots talk."},
    {"_id": "wolves", "title": "Wolves", "text": "Wolves are wild canines that hunt in packs."},
    {"_id": "fish", "title": "Aquarium fish", "text": "Goldfish live in water and need clean tanks."},
]
TINY_KEYWORDS = ["cat", "kitten", "feline", "dog", "canine", "wolf", "bird", "fish", "pet"]


@pytest.fixture
def fake_encoder() -> FakeEncoder:
    return FakeEncoder(TINY_KEYWORDS)


@pytest.fixture
def tiny_corpus(tmp_path: Path) -> Path:
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps(d) + "\n" for d in TINY_DOCS), encoding="utf-8")
    return path


@pytest.fixture
def tiny_index(tiny_corpus: Path, tmp_path: Path, fake_encoder: FakeEncoder):
    from retrieval.index import SearchIndex

    return SearchIndex.build(tiny_corpus, tmp_path / "index", fake_encoder)


CACHE_VARIABLES = (
    "SLEUTH_CACHE_DIR",
    "SLEUTH_REGISTRY",
    "XDG_CACHE_HOME",
    "MPLCONFIGDIR",
    "HYPOTHESIS_STORAGE_DIRECTORY",
)
"""What points into the session's private directory: the library's cache (embeddings, ONNX graphs, demo
index), the default model registry, and the per-user cache of third-party libraries (onnxruntime writes
``$XDG_CACHE_HOME/Microsoft/DeveloperTools`` when imported; matplotlib its font cache; hypothesis its
example database, which would otherwise be ``./.hypothesis`` in the repository: failing examples are
therefore not replayed by the next session, only shrunk and reported in this one)."""


_PRIVATE_ROOT = pytest.StashKey[Path]()
_SAVED_ENV = pytest.StashKey[dict[str, str | None]]()


def pytest_configure(config: pytest.Config) -> None:
    """Give the session a private directory for every cache before anything is imported or collected.

    Set here rather than in a fixture because imports at collection time (onnxruntime) already
    write to the user's cache. Subprocesses that tests start inherit the environment.
    """
    root = Path(tempfile.mkdtemp(prefix="sleuth-tests-"))
    config.stash[_PRIVATE_ROOT] = root
    config.stash[_SAVED_ENV] = {name: os.environ.get(name) for name in CACHE_VARIABLES}
    os.environ["SLEUTH_CACHE_DIR"] = str(root / "sleuth")
    os.environ["SLEUTH_REGISTRY"] = str(root / "registry")
    os.environ["XDG_CACHE_HOME"] = str(root / "xdg-cache")
    os.environ["MPLCONFIGDIR"] = str(root / "matplotlib")
    os.environ["HYPOTHESIS_STORAGE_DIRECTORY"] = str(root / "hypothesis")


def pytest_unconfigure(config: pytest.Config) -> None:
    """Restore the environment and delete the session's private directory."""
    for name, value in config.stash.get(_SAVED_ENV, {}).items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    root = config.stash.get(_PRIVATE_ROOT, None)
    if root is not None:
        shutil.rmtree(root, ignore_errors=True)


HEAVY_FIXTURES = {"scifact_index": "scifact-index", "trained": "linking-guard"}
"""Session fixtures worth building once per run, and the group every test that uses one runs in."""

MODULE_GROUPS = {
    "tests/retrieval/test_quality.py": "scifact-index",
    "tests/retrieval/test_rerank_integration.py": "scifact-index",
    "tests/retrieval/test_onnx_encoder.py": "scifact-index",
    "tests/linking/test_benchmarks.py": "linking-guard",
}
"""Modules whose tests use a heavy fixture (tests/test_scheduling_groups.py checks the table)."""

LONGEST_GROUPS = ("ray", "linking-guard", "scifact-index")
"""Scheduled first, in this order (each takes minutes; most modules take seconds)."""


def scheduling_group(nodeid: str) -> str:
    """The group a test runs in when ``make test`` runs pytest on two workers.

    A group runs whole on one worker, in collection order: the Ray tests (they share one session
    cluster, and some start private clusters that should not overlap with it), the users of each
    heavy session fixture (so it is built once), and otherwise each module (so module fixtures are
    built once too).
    """
    module = nodeid.split("::", 1)[0]
    if module.startswith("tests/service/cluster/"):
        return "ray"
    return MODULE_GROUPS.get(module, module)


@pytest.hookimpl(tryfirst=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    """xdist's scope scheduling with :func:`scheduling_group` as the scope."""
    from xdist.scheduler import LoadScopeScheduling

    class GroupScheduling(LoadScopeScheduling):
        ordered = False

        def _split_scope(self, nodeid: str) -> str:
            return scheduling_group(nodeid)

        def _assign_work_unit(self, node: Any) -> None:
            if not self.ordered:  # the longest groups first, so that none of them starts last
                for group in reversed(LONGEST_GROUPS):
                    if group in self.workqueue:
                        self.workqueue.move_to_end(group, last=False)
                self.ordered = True
            super()._assign_work_unit(node)

    return GroupScheduling(config, log)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def private_caches() -> Path:
    """The library's cache directory for this session (``$SLEUTH_CACHE_DIR``, see :func:`pytest_configure`)."""
    return Path(os.environ["SLEUTH_CACHE_DIR"])


@pytest.fixture(scope="session")
def real_encoder():
    """all-MiniLM-L6-v2 on torch: the reference runtime."""
    from retrieval.onnx_encoder import load_encoder

    return load_encoder(runtime="torch")


@pytest.fixture(scope="session")
def onnx_encoder(private_caches: Path):
    """The same weights on ONNX Runtime (float32, two threads), exported once per session into the
    private cache (``private_caches / "onnx"``). Its vectors are the torch ones to a cosine of
    0.99999 (tests/retrieval/test_onnx_encoder.py checks it) at under half the CPU, so the
    real-data fixtures embed their documents with it."""
    from retrieval.onnx_encoder import load_encoder

    return load_encoder(runtime="onnx", threads=2)


@pytest.fixture(scope="session")
def int8_encoder(private_caches: Path):
    """The same weights on ONNX Runtime with int8 weights (two threads): vectors within a cosine of
    about 0.993 of the float32 ones at under half their CPU. Fixtures that only need *some* real
    embedding of a large text set (the linking guard's 10,244 KB entities) use it."""
    from retrieval.onnx_encoder import load_encoder

    return load_encoder(runtime="onnx-int8", threads=2)


def _shared(path: Path) -> Path:
    if not path.exists():
        pytest.fail(f"shared evaluation data missing at {path}: the repo must sit beside ../shared")
    return path


@pytest.fixture(scope="session")
def scifact_dir() -> Path:
    """The full shared SciFact (read-only). Tests read its train qrels only: test qrels are report data."""
    return _shared(RETRIEVAL_DATA / "scifact")


SCIFACT_SAMPLE_SEED = 13
SCIFACT_UNJUDGED_DOCS = 935
DEV_SALT = "sleuth-tests-dev"
DEV_FOLDS = 5


def dev_fold(qid: str) -> bool:
    """Whether a SciFact train query is in the tests' held-out dev fold (one in five, by a hash of its id;
    another salt than the reranker's own validation folds)."""
    from retrieval.rerank_training import fold_of

    return fold_of(qid, DEV_FOLDS, DEV_SALT) == 0


@pytest.fixture(scope="session")
def scifact_train_dir(scifact_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A BEIR directory with a subset of SciFact's training data, written to a temporary directory.

    How it is built (deterministic, from the shared files, nothing copied into the repository):
    the corpus is every document judged for a *train* query (565) plus a fixed random sample of
    935 others (``random.Random(13)`` over the remaining ids in file order): 1,500 of the 5,183
    documents, in the original line order. queries.jsonl holds the 809 judged train queries;
    qrels/train.tsv is the full train qrels, split by query into qrels/fit.tsv (four fifths) and
    qrels/dev.tsv (the held-out fifth: 175 queries, :func:`dev_fold`). Test qrels are not copied: SciFact test
    is report data.

    With about a third of the distractors, scores here are higher than on the full corpus and are
    not comparable to published SciFact numbers (or to docs/benchmarks.md); they serve as guards
    against regressions only.
    """
    out = tmp_path_factory.mktemp("scifact-train")
    (out / "qrels").mkdir()
    train_lines = (scifact_dir / "qrels" / "train.tsv").read_text(encoding="utf-8").splitlines()
    header, rows = train_lines[0], [line.split("\t") for line in train_lines[1:] if line.strip()]
    judged_docs = {row[1] for row in rows}
    judged_queries = {row[0] for row in rows}
    corpus_lines = (scifact_dir / "corpus.jsonl").read_text(encoding="utf-8").splitlines()
    ids = [json.loads(line)["_id"] for line in corpus_lines]
    others = [doc_id for doc_id in ids if doc_id not in judged_docs]
    keep = judged_docs | set(random.Random(SCIFACT_SAMPLE_SEED).sample(others, SCIFACT_UNJUDGED_DOCS))
    (out / "corpus.jsonl").write_text(
        "".join(line + "\n" for line, doc_id in zip(corpus_lines, ids, strict=True) if doc_id in keep),
        encoding="utf-8",
    )
    query_lines = (scifact_dir / "queries.jsonl").read_text(encoding="utf-8").splitlines()
    (out / "queries.jsonl").write_text(
        "".join(line + "\n" for line in query_lines if line.strip() and json.loads(line)["_id"] in judged_queries),
        encoding="utf-8",
    )
    splits = {"train": rows, "fit": [r for r in rows if not dev_fold(r[0])], "dev": [r for r in rows if dev_fold(r[0])]}
    for name, chosen in splits.items():
        lines = [header, *("\t".join(row) for row in chosen)]
        (out / "qrels" / f"{name}.tsv").write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return out


@pytest.fixture(scope="session")
def scifact_index(scifact_train_dir: Path, onnx_encoder, tmp_path_factory: pytest.TempPathFactory):
    """The SciFact subset indexed once per session (documents embedded by the ONNX runtime; the index
    records the weights' checksum, so the torch encoder is accepted for its queries too)."""
    from retrieval.index import SearchIndex

    return SearchIndex.build(scifact_train_dir, tmp_path_factory.mktemp("scifact") / "index", onnx_encoder)
