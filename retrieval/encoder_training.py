"""Adapting the sentence encoder to a collection: fine-tuning on training qrels (``sleuth train encoder``).

The loss is the multiple-negatives ranking loss (Henderson et al., "Efficient Natural Language
Response Suggestion for Smart Reply", 2017; ``MultipleNegativesRankingLoss`` in
sentence-transformers): for a batch of (query, relevant document, hard negative) triples, each
query's softmax over ``scale * cos(query, document)`` for every document in the batch (the other
queries' documents are in-batch negatives) is pushed towards its own relevant document.

Hard negatives are mined once, before training, from the hybrid ranking of an index built with the
base encoder: documents at fused ranks ``negative_skip + 1 .. negative_depth`` that the qrels do not
judge relevant (the top few are skipped: on collections judged shallowly, as SciFact is, they are
often unjudged relevant documents).

The judged training queries are split by a hash of the query id (:func:`fold_of` with its own
salt); one fold is held out. After each epoch the held-out queries are scored by hybrid NDCG@10
(BM25 of the index fused by RRF with the adapted encoder's ranking of the whole corpus), and the
best epoch is kept, the base weights (epoch 0) included: a run that does not help says so in its
metrics. The result is a directory with ``manifest.json`` (kind ``encoder``: base weights checksum,
data checksums, parameters, per-epoch validation) and the sentence-transformers model in ``model/``;
:func:`retrieval.dense.resolve_model` loads such a directory by its top-level path.

Runs are seeded: the shuffles, the negatives drawn, dropout and the new weights follow ``seed``,
so one machine gives the same weights for the same seed and data (torch on CPU with the same thread
count is deterministic for these operations).

Example:
    >>> result = train_encoder("corpus.jsonl", "queries.jsonl", "qrels/train.tsv", "models/enc")  # doctest: +SKIP
    >>> result.metrics["valid"]["best_epoch"]  # doctest: +SKIP
"""

from __future__ import annotations

import copy
import json
import logging
import random
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from artifacts import (
    Manifest,
    checksum_files,
    code_version,
    library_versions,
    sha256_file,
    sha256_tree,
    staged_directory,
    utc_now,
)
from retrieval.corpus import Qrels, load_corpus, load_qrels, load_queries, resolve_corpus_path
from retrieval.dense import DEFAULT_ENCODER, EmbeddingCache, resolve_model
from retrieval.evaluation import evaluate_run
from retrieval.fusion import FusionConfig, reciprocal_rank_fusion
from retrieval.index import SearchIndex
from retrieval.pipeline import Searcher, SearchRequest
from retrieval.rerank_training import fold_of
from retrieval.types import Document, Hit, Query

logger = logging.getLogger(__name__)

KIND = "encoder"
FORMAT_VERSION = 1
MODEL_DIR = "model"
"""The sentence-transformers model inside an adapted-encoder directory."""
SPLIT_SALT = "sleuth-encoder"


@dataclass(frozen=True)
class EncoderTrainingConfig:
    """Everything that decides the adapted weights besides the data.

    ``valid_folds``: the judged queries are split into that many parts by hash and one is held out
    for choosing the epoch (``0``: no validation, the last epoch is kept).
    """

    base: str = DEFAULT_ENCODER
    epochs: int = 1
    batch_size: int = 16
    learning_rate: float = 2e-5
    warmup_fraction: float = 0.1
    weight_decay: float = 0.01
    max_seq_length: int = 256
    scale: float = 20.0
    hard_negatives: int = 1
    negative_skip: int = 3
    negative_depth: int = 30
    valid_folds: int = 5
    valid_depth: int = 100
    seed: int = 13
    encode_batch_size: int = 64

    def __post_init__(self) -> None:
        problems = []
        if self.epochs < 1:
            problems.append(f"epochs must be >= 1 (got {self.epochs})")
        if self.batch_size < 2:
            problems.append(f"batch_size must be >= 2 for in-batch negatives (got {self.batch_size})")
        if not 0 < self.learning_rate < 1:
            problems.append(f"learning_rate must be in (0, 1) (got {self.learning_rate})")
        if not 16 <= self.max_seq_length <= 512:
            problems.append(f"max_seq_length must be in 16..512 (got {self.max_seq_length})")
        if self.hard_negatives < 0:
            problems.append(f"hard_negatives must be >= 0 (got {self.hard_negatives})")
        if not 0 <= self.negative_skip < self.negative_depth:
            problems.append(
                f"need 0 <= negative_skip < negative_depth (got {self.negative_skip}, {self.negative_depth})"
            )
        if self.valid_folds == 1 or self.valid_folds < 0:
            problems.append(f"valid_folds must be 0 (no validation) or >= 2 (got {self.valid_folds})")
        if problems:
            raise ValueError("; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Triple:
    """One training example: a query, a document judged relevant to it, and hard negatives."""

    qid: str
    query: str
    positive: str
    negatives: tuple[str, ...]


@dataclass(frozen=True)
class EncoderTrainingResult:
    path: Path
    manifest: Manifest
    metrics: dict[str, Any]


def split_queries(queries: Sequence[Query], qrels: Qrels, folds: int) -> tuple[list[Query], list[Query]]:
    """(fit, held-out) judged queries that have at least one relevant document; fold 0 is held out."""
    judged = [q for q in queries if any(score > 0 for score in qrels.get(q.qid, {}).values())]
    if not judged:
        raise ValueError("no query has a relevant document in the qrels")
    if folds == 0:
        return judged, []
    held = [q for q in judged if fold_of(q.qid, folds, SPLIT_SALT) == 0]
    fit = [q for q in judged if fold_of(q.qid, folds, SPLIT_SALT) != 0]
    if not fit or not held:
        raise ValueError(f"{len(judged)} judged queries are too few to hold out 1 of {folds} folds")
    return fit, held


def draw_examples(
    index: SearchIndex,
    queries: Sequence[Query],
    ranked: Sequence[Sequence[str]],
    qrels: Qrels,
    *,
    skip: int,
    count: int,
    rng: random.Random,
    need_negatives: bool = False,
) -> list[Triple]:
    """One example per (query, document judged relevant and in the index), with ``count`` hard negatives
    drawn by ``rng`` from the query's ranked ids past the first ``skip`` that are not judged relevant.
    With ``need_negatives``, a query whose pool is empty gives no example."""
    known = {doc.doc_id for doc in index.documents}
    examples = []
    for query, ids in zip(queries, ranked, strict=True):
        judgments = qrels[query.qid]
        pool = [d for d in ids[skip:] if judgments.get(d, 0) <= 0]
        if need_negatives and not pool:
            continue
        for doc_id, score in sorted(judgments.items()):
            if score <= 0 or doc_id not in known:
                continue
            drawn = rng.sample(pool, min(count, len(pool)))
            examples.append(
                Triple(
                    query.qid,
                    query.text,
                    index.document(doc_id).contents,
                    tuple(index.document(n).contents for n in drawn),
                )
            )
    return examples


def mine_triples(
    index: SearchIndex, base_encoder: Any, queries: Sequence[Query], qrels: Qrels, config: EncoderTrainingConfig
) -> list[Triple]:
    """One triple per (query, relevant document), negatives drawn from the base hybrid ranking (seeded)."""
    searcher = Searcher(index, base_encoder)
    vectors = searcher.encode_queries([q.text for q in queries])
    ranked = []
    for query, vector in zip(queries, vectors, strict=True):
        request = SearchRequest(query.text, top_k=config.negative_depth, fusion=FusionConfig())
        ranked.append([h.doc_id for h in searcher.run(request, vector).hits])
    rng = random.Random(config.seed)
    return draw_examples(index, queries, ranked, qrels, skip=config.negative_skip, count=config.hard_negatives, rng=rng)


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and torch (training runs repeat on the same machine)."""
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _batches(triples: list[Triple], size: int, rng: random.Random) -> list[list[Triple]]:
    """Shuffled batches in which no query and no relevant document appears twice (they would be false
    in-batch negatives); a triple that collides waits for a later batch."""
    order = list(triples)
    rng.shuffle(order)
    batches: list[list[Triple]] = []
    while order:
        batch: list[Triple] = []
        seen: set[str] = set()
        rest = []
        for triple in order:
            keys = {f"q:{triple.qid}", f"d:{triple.positive}"}
            if len(batch) < size and not keys & seen:
                batch.append(triple)
                seen |= keys
            else:
                rest.append(triple)
        batches.append(batch)
        order = rest
    return [b for b in batches if len(b) >= 2]


def _embed(model: Any, texts: list[str], batch_size: int) -> np.ndarray:
    model.eval()
    vectors = model.encode(
        texts, batch_size=batch_size, convert_to_numpy=True, normalize_embeddings=True, show_progress_bar=False
    )
    return np.ascontiguousarray(vectors, dtype=np.float32)


def held_out_ndcg(
    model: Any,
    index: SearchIndex,
    documents: Sequence[Document],
    queries: Sequence[Query],
    qrels: Qrels,
    config: EncoderTrainingConfig,
) -> dict[str, float]:
    """Dense and hybrid (RRF with the index's BM25) NDCG@10 of ``queries`` with ``model`` embedding the corpus."""
    doc_vectors = _embed(model, [d.contents for d in documents], config.encode_batch_size)
    query_vectors = _embed(model, [q.text for q in queries], config.encode_batch_size)
    ids = [d.doc_id for d in documents]
    depth = min(config.valid_depth, len(ids))
    scores = query_vectors @ doc_vectors.T
    dense_lists = []
    for row in scores:
        top = np.lexsort((np.arange(len(ids)), -row))[:depth]
        dense_lists.append([Hit(ids[i], float(row[i])) for i in top])
    return _scores(index, dense_lists, queries, qrels, depth)


def index_held_out_ndcg(
    index: SearchIndex, encoder: Any, queries: Sequence[Query], qrels: Qrels, config: EncoderTrainingConfig
) -> dict[str, float]:
    """:func:`held_out_ndcg` of the encoder that built ``index`` (its stored vectors: the base weights, epoch 0)."""
    depth = min(config.valid_depth, len(index))
    dense_lists = index.dense.search(encoder.encode([q.text for q in queries]), depth)
    return _scores(index, dense_lists, queries, qrels, depth)


def _scores(
    index: SearchIndex, dense_lists: Sequence[list[Hit]], queries: Sequence[Query], qrels: Qrels, depth: int
) -> dict[str, float]:
    dense_run: dict[str, dict[str, float]] = {}
    hybrid_run: dict[str, dict[str, float]] = {}
    for dense, query in zip(dense_lists, queries, strict=True):
        lexical = index.bm25.search(query.text, depth)
        dense_run[query.qid] = {h.doc_id: h.score for h in dense}
        hybrid_run[query.qid] = {h.doc_id: h.score for h in reciprocal_rank_fusion([lexical, dense])[:depth]}
    held = {q.qid: qrels[q.qid] for q in queries}
    return {
        "dense_ndcg@10": round(evaluate_run(dense_run, held, ["ndcg@10"]).means["ndcg@10"], 6),
        "hybrid_ndcg@10": round(evaluate_run(hybrid_run, held, ["ndcg@10"]).means["ndcg@10"], 6),
    }


def optimization_step(
    model: Any, optimizer: Any, scheduler: Any, loss: Any, losses: list[float], step: int, steps: int, started: float
) -> None:
    """One clipped optimizer and scheduler step on ``loss``; the loss is kept in ``losses`` and logged
    every ten steps."""
    import torch

    optimizer.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    scheduler.step()
    losses.append(float(loss.detach()))
    if step % 10 == 0 or step == steps:
        logger.info("step %d/%d: loss %.4f (%.0f s)", step, steps, np.mean(losses[-10:]), time.perf_counter() - started)


def _train_epoch(model: Any, optimizer: Any, scheduler: Any, batches: list[list[Triple]], scale: float) -> float:
    import torch

    model.train()
    losses: list[float] = []
    started = time.perf_counter()
    for step, batch in enumerate(batches, start=1):
        queries = [t.query for t in batch]
        documents = [t.positive for t in batch] + [n for t in batch for n in t.negatives]
        q = model(model.tokenize(queries))["sentence_embedding"]
        d = model(model.tokenize(documents))["sentence_embedding"]
        q = torch.nn.functional.normalize(q, dim=-1)
        d = torch.nn.functional.normalize(d, dim=-1)
        logits = scale * q @ d.T
        loss = torch.nn.functional.cross_entropy(logits, torch.arange(len(batch)))
        optimization_step(model, optimizer, scheduler, loss, losses, step, len(batches), started)
    return float(np.mean(losses)) if losses else 0.0


def _inputs(corpus: Path, queries: Path | None, qrels: Path | None) -> dict[str, Any]:
    inputs: dict[str, Any] = {"corpus": {"path": str(corpus), "sha256": sha256_file(corpus)}}
    if queries is not None:
        inputs["queries"] = {"path": str(queries), "sha256": sha256_file(queries)}
    if qrels is not None:
        inputs["qrels"] = {"path": str(qrels), "sha256": sha256_file(qrels)}
    return inputs


def train_encoder(
    corpus: str | Path,
    queries: str | Path,
    qrels: str | Path,
    out_dir: str | Path,
    config: EncoderTrainingConfig | None = None,
    *,
    index: SearchIndex | None = None,
    overwrite: bool = False,
) -> EncoderTrainingResult:
    """Fine-tune ``config.base`` on the judged ``queries`` of ``corpus`` and write it to ``out_dir``.

    ``index`` supplies the hard negatives and the held-out BM25 ranking; without one, an index of
    ``corpus`` with the base encoder is built in a temporary directory (its document vectors come
    from the embedding cache when they are there).
    """
    import torch
    from sentence_transformers import SentenceTransformer
    from transformers import get_linear_schedule_with_warmup

    from retrieval.onnx_encoder import load_encoder

    started = time.perf_counter()
    config = config or EncoderTrainingConfig()
    corpus_path = resolve_corpus_path(corpus)
    query_list = load_queries(queries)
    judgments = load_qrels(qrels)
    fit, held = split_queries(query_list, judgments, config.valid_folds)
    documents = load_corpus(corpus_path, warn_empty=False)
    base_location = resolve_model(config.base)
    base_checksum = sha256_tree(base_location)[:16] if Path(base_location).is_dir() else config.base

    base_encoder = load_encoder(config.base, "onnx")
    with tempfile.TemporaryDirectory(prefix="sleuth-encoder-") as scratch:
        if index is None:
            logger.info("indexing %s with the base encoder to mine hard negatives", corpus_path)
            index = SearchIndex.build(corpus_path, Path(scratch) / "index", base_encoder, cache=EmbeddingCache())
        triples = mine_triples(index, base_encoder, fit, judgments, config)
        base_scores = index_held_out_ndcg(index, base_encoder, held, judgments, config) if held else {}
    logger.info("%d training triples from %d queries; %d queries held out", len(triples), len(fit), len(held))

    set_seed(config.seed)
    model = SentenceTransformer(base_location, device="cpu")
    model.max_seq_length = config.max_seq_length
    rng = random.Random(config.seed)
    epoch_batches = [_batches(triples, config.batch_size, rng) for _ in range(config.epochs)]
    total_steps = sum(len(b) for b in epoch_batches)
    no_decay = ("bias", "LayerNorm.weight", "LayerNorm.bias")
    groups = [
        {
            "params": [p for n, p in model.named_parameters() if not any(x in n for x in no_decay)],
            "weight_decay": config.weight_decay,
        },
        {"params": [p for n, p in model.named_parameters() if any(x in n for x in no_decay)], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=config.learning_rate)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(config.warmup_fraction * total_steps), total_steps)

    history: list[dict[str, Any]] = []
    best_state: dict[str, Any] | None = None
    best = -1.0
    if held:
        # The base weights are scored by the index they built (the same vectors to a cosine of 0.99999).
        history.append({"epoch": 0, **base_scores})
        best, best_state = base_scores["hybrid_ndcg@10"], copy.deepcopy(model.state_dict())
        logger.info("held-out NDCG@10 of the base weights: %s", base_scores)
    best_epoch = 0
    for epoch, batches in enumerate(epoch_batches, start=1):
        t0 = time.perf_counter()
        loss = _train_epoch(model, optimizer, scheduler, batches, config.scale)
        row: dict[str, Any] = {
            "epoch": epoch,
            "loss": round(loss, 6),
            "train_seconds": round(time.perf_counter() - t0, 1),
        }
        if held:
            row.update(held_out_ndcg(model, index, documents, held, judgments, config))
            if row["hybrid_ndcg@10"] > best:
                best, best_epoch, best_state = row["hybrid_ndcg@10"], epoch, copy.deepcopy(model.state_dict())
        else:
            best_epoch, best_state = epoch, None
        history.append(row)
        logger.info("epoch %d: %s", epoch, row)
    if best_state is not None:
        model.load_state_dict(best_state)

    out = Path(out_dir)
    with staged_directory(out, overwrite=overwrite) as staging:
        model.save(str(staging / MODEL_DIR), create_model_card=False)
        weights = sha256_tree(staging / MODEL_DIR)[:16]
        metrics = {
            "valid": {
                "criterion": "held-out hybrid NDCG@10 (BM25 + this encoder, RRF k=60)",
                "fit_queries": len(fit),
                "held_out_queries": len(held),
                "best_epoch": best_epoch,
                "epochs": history,
            }
        }
        manifest = Manifest(
            kind=KIND,
            format_version=FORMAT_VERSION,
            created_at=utc_now(),
            files=checksum_files(staging),
            params={**config.to_dict(), "triples": len(triples), "steps": total_steps},
            inputs=_inputs(corpus_path, Path(queries), Path(qrels)),
            parents={"base_encoder": base_checksum, "negatives_index": index.manifest.content_id},
            stats={"weights_checksum": weights, "train_seconds": round(time.perf_counter() - started, 1)},
            metrics=metrics,
            libraries=library_versions(),
            code_version=code_version(),
        )
        manifest.write(staging)
    logger.info("encoder %s (weights %s, epoch %d) written to %s", manifest.version, weights, best_epoch, out)
    return EncoderTrainingResult(out, manifest, metrics)


def describe_history(metrics: dict[str, Any]) -> str:
    """The per-epoch validation as lines of text (for the CLI)."""
    return "\n".join(json.dumps(row) for row in metrics.get("valid", {}).get("epochs", []))
