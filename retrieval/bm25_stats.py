"""Corpus-wide BM25 statistics, and BM25 indexes of a part of a corpus scored with them.

A BM25 score depends on the whole corpus through three statistics: the document count ``N``, each
term's document frequency ``df(t)`` (through the idf) and the average document length ``avgdl``
(see :mod:`retrieval.bm25` for the formula). A shard that computed them from its own documents
would score the same document differently from an unsharded index, and scores of different shards
could not be compared. So a sharded build computes the statistics once over the whole corpus
(:class:`BM25Statistics`) and builds every shard's precomputed score matrix with them
(:func:`build_shard_bm25`): each (term, document) entry is then bit-for-bit the entry an unsharded
index holds, and a query's score, a sum of those entries in query-term order, is too.

Every shard keeps the corpus vocabulary (term ids are the same everywhere), so a shard's index
files are ordinary bm25s files that :meth:`BM25Index.load` opens.

bm25s has no public entry point for scoring with given statistics; this module calls the internals
that ``bm25s.BM25.build_index_from_ids`` is made of (``bm25s.scoring``), with the corpus statistics
in place of the ones that function would compute from the documents it is given.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import bm25s
import numpy as np
from bm25s import scoring

from retrieval.bm25 import BM25Config, BM25Index
from retrieval.tokenization import Tokenizer

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BM25Statistics:
    """The corpus-wide statistics BM25 needs: vocabulary, document frequencies, count, mean length.

    ``vocabulary`` numbers the terms in sorted order, as :meth:`BM25Index.build` does, so the same
    corpus gives the same term ids sharded or not.
    """

    vocabulary: dict[str, int]
    document_frequencies: np.ndarray
    doc_count: int
    average_length: float

    @classmethod
    def from_tokens(cls, corpus_tokens: Sequence[Sequence[str]]) -> BM25Statistics:
        """Statistics of an analyzed corpus (one token list per document)."""
        terms = sorted({t for tokens in corpus_tokens for t in tokens})
        vocabulary = {term: i for i, term in enumerate(terms)}
        frequencies = np.zeros(len(terms), dtype=np.int64)
        for tokens in corpus_tokens:
            for term in set(tokens):
                frequencies[vocabulary[term]] += 1
        # The same expression as bm25s's, so the float64 mean is bit-for-bit the unsharded one.
        average = np.array([len(tokens) for tokens in corpus_tokens]).mean()
        return cls(vocabulary, frequencies, len(corpus_tokens), float(average))

    def to_dict(self) -> dict[str, float | int]:
        """The scalar statistics, for a manifest."""
        return {
            "doc_count": self.doc_count,
            "average_length": self.average_length,
            "vocabulary_size": len(self.vocabulary),
        }


def build_shard_bm25(
    shard_tokens: Sequence[Sequence[str]],
    doc_ids: Sequence[str],
    statistics: BM25Statistics,
    config: BM25Config,
    tokenizer: Tokenizer,
) -> BM25Index:
    """A BM25 index of some documents of a corpus whose scores use the corpus's ``statistics``.

    Raises ``ValueError`` if a document has a term outside the statistics' vocabulary (the
    statistics were computed over another corpus).
    """
    if len(shard_tokens) != len(doc_ids):
        raise ValueError("shard tokens and doc_ids differ in length")
    vocab = statistics.vocabulary
    try:
        corpus_ids = [[vocab[t] for t in tokens] for tokens in shard_tokens]
    except KeyError as exc:
        raise ValueError(f"term {exc.args[0]!r} is not in the corpus statistics' vocabulary") from None
    model = bm25s.BM25(k1=config.k1, b=config.b, method=config.method)
    global_df = {term_id: int(df) for term_id, df in enumerate(statistics.document_frequencies)}
    idf_scorer = scoring._select_idf_scorer(model.idf_method)
    # bm25s keeps avgdl as a numpy float64; a Python float rounds the same, but keep the type so the
    # float32/float64 promotions in its scoring code are the ones of an unsharded build.
    average = np.float64(statistics.average_length)
    idf = scoring._build_idf_array(global_df, statistics.doc_count, idf_scorer, dtype=model.dtype)
    nonoccurrence = None
    if model.method in model.methods_requiring_nonoccurrence:
        nonoccurrence = scoring._build_nonoccurrence_array(
            global_df,
            statistics.doc_count,
            idf_scorer,
            scoring._select_tfc_scorer(model.method),
            l_d=average,
            l_avg=average,
            k1=model.k1,
            b=model.b,
            delta=model.delta,
            dtype=model.dtype,
        )
    # Only the sum of this argument is read (the number of (term, document) entries to allocate),
    # and it must be the shard's own, so pass the shard's document frequencies.
    shard_df = Counter(term for ids in corpus_ids for term in set(ids))
    values, rows, cols = scoring._build_scores_and_indices_for_matrix(
        corpus_token_ids=corpus_ids,
        idf_array=idf,
        avg_doc_len=average,
        doc_frequencies=shard_df,
        k1=model.k1,
        b=model.b,
        delta=model.delta,
        nonoccurrence_array=nonoccurrence,
        method=model.method,
        dtype=model.dtype,
        int_dtype=model.int_dtype,
        show_progress=False,
    )
    data, indices, indptr = model._np_csc(data=values, rows=rows, cols=cols, shape=(len(corpus_ids), len(vocab)))
    model.scores = {
        "data": data.astype(model.dtype),
        "indices": indices,
        "indptr": indptr,
        "num_docs": len(corpus_ids),
    }
    model.nonoccurrence_array = nonoccurrence
    # bm25s appends the empty token to the vocabulary of an index it builds; do the same, so the
    # saved vocabulary (and the vocabulary size) match an unsharded index's.
    model.vocab_dict = {**vocab, "": len(vocab)}
    model.unique_token_ids_set = set(model.vocab_dict.values())
    return BM25Index(model, list(doc_ids), tokenizer, config)
