"""Search: tokenization, BM25, dense retrieval, fusion, reranking, pipeline and evaluation."""

from retrieval.bm25 import BM25Config, BM25Index
from retrieval.corpus import load_corpus, load_qrels, load_queries
from retrieval.dense import (
    DEFAULT_ENCODER,
    DenseIndex,
    EmbeddingCache,
    Encoder,
    FaissConfig,
    SentenceTransformerEncoder,
    TorchEncoder,
)
from retrieval.errors import DataFormatError, InvalidRequestError, SearchError
from retrieval.evaluation import EvaluationReport, evaluate_run, read_trec_run, write_trec_run
from retrieval.fusion import FusionConfig, convex_combination, fuse, reciprocal_rank_fusion
from retrieval.index import SearchIndex
from retrieval.onnx_encoder import RUNTIMES, OnnxEncoder, load_encoder
from retrieval.pipeline import Reranker, Searcher, SearchRequest, SearchResult
from retrieval.sharding import ShardedSearchIndex
from retrieval.tokenization import Tokenizer, TokenizerConfig
from retrieval.types import Document, Hit, Query, ScoredHit

__all__ = [
    "DEFAULT_ENCODER",
    "RUNTIMES",
    "BM25Config",
    "BM25Index",
    "DataFormatError",
    "DenseIndex",
    "Document",
    "EmbeddingCache",
    "Encoder",
    "EvaluationReport",
    "FaissConfig",
    "FusionConfig",
    "Hit",
    "InvalidRequestError",
    "OnnxEncoder",
    "Query",
    "Reranker",
    "ScoredHit",
    "SearchError",
    "SearchIndex",
    "SearchRequest",
    "SearchResult",
    "Searcher",
    "SentenceTransformerEncoder",
    "ShardedSearchIndex",
    "Tokenizer",
    "TokenizerConfig",
    "TorchEncoder",
    "convex_combination",
    "evaluate_run",
    "fuse",
    "load_corpus",
    "load_encoder",
    "load_qrels",
    "load_queries",
    "read_trec_run",
    "reciprocal_rank_fusion",
    "write_trec_run",
]
