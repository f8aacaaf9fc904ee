from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class FusionSettings(_message.Message):
    __slots__ = ("method", "rrf_k", "alpha", "normalization", "depth")
    METHOD_FIELD_NUMBER: _ClassVar[int]
    RRF_K_FIELD_NUMBER: _ClassVar[int]
    ALPHA_FIELD_NUMBER: _ClassVar[int]
    NORMALIZATION_FIELD_NUMBER: _ClassVar[int]
    DEPTH_FIELD_NUMBER: _ClassVar[int]
    method: str
    rrf_k: float
    alpha: float
    normalization: str
    depth: int
    def __init__(self, method: _Optional[str] = ..., rrf_k: _Optional[float] = ..., alpha: _Optional[float] = ..., normalization: _Optional[str] = ..., depth: _Optional[int] = ...) -> None: ...

class SearchRequest(_message.Message):
    __slots__ = ("query", "top_k", "mode", "fusion", "rerank", "rerank_depth", "session_id")
    QUERY_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    FUSION_FIELD_NUMBER: _ClassVar[int]
    RERANK_FIELD_NUMBER: _ClassVar[int]
    RERANK_DEPTH_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    query: str
    top_k: int
    mode: str
    fusion: FusionSettings
    rerank: bool
    rerank_depth: int
    session_id: str
    def __init__(self, query: _Optional[str] = ..., top_k: _Optional[int] = ..., mode: _Optional[str] = ..., fusion: _Optional[_Union[FusionSettings, _Mapping]] = ..., rerank: _Optional[bool] = ..., rerank_depth: _Optional[int] = ..., session_id: _Optional[str] = ...) -> None: ...

class StageScores(_message.Message):
    __slots__ = ("bm25", "dense", "fused", "rerank")
    BM25_FIELD_NUMBER: _ClassVar[int]
    DENSE_FIELD_NUMBER: _ClassVar[int]
    FUSED_FIELD_NUMBER: _ClassVar[int]
    RERANK_FIELD_NUMBER: _ClassVar[int]
    bm25: float
    dense: float
    fused: float
    rerank: float
    def __init__(self, bm25: _Optional[float] = ..., dense: _Optional[float] = ..., fused: _Optional[float] = ..., rerank: _Optional[float] = ...) -> None: ...

class Hit(_message.Message):
    __slots__ = ("doc_id", "score", "rank", "title", "snippet", "stages")
    DOC_ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    SNIPPET_FIELD_NUMBER: _ClassVar[int]
    STAGES_FIELD_NUMBER: _ClassVar[int]
    doc_id: str
    score: float
    rank: int
    title: str
    snippet: str
    stages: StageScores
    def __init__(self, doc_id: _Optional[str] = ..., score: _Optional[float] = ..., rank: _Optional[int] = ..., title: _Optional[str] = ..., snippet: _Optional[str] = ..., stages: _Optional[_Union[StageScores, _Mapping]] = ...) -> None: ...

class SearchResponse(_message.Message):
    __slots__ = ("hits", "index_version", "server_time_ms", "reranker_version", "mode", "request_id", "experiment", "arm", "missing_shards")
    HITS_FIELD_NUMBER: _ClassVar[int]
    INDEX_VERSION_FIELD_NUMBER: _ClassVar[int]
    SERVER_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    RERANKER_VERSION_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    ARM_FIELD_NUMBER: _ClassVar[int]
    MISSING_SHARDS_FIELD_NUMBER: _ClassVar[int]
    hits: _containers.RepeatedCompositeFieldContainer[Hit]
    index_version: str
    server_time_ms: float
    reranker_version: str
    mode: str
    request_id: str
    experiment: str
    arm: str
    missing_shards: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, hits: _Optional[_Iterable[_Union[Hit, _Mapping]]] = ..., index_version: _Optional[str] = ..., server_time_ms: _Optional[float] = ..., reranker_version: _Optional[str] = ..., mode: _Optional[str] = ..., request_id: _Optional[str] = ..., experiment: _Optional[str] = ..., arm: _Optional[str] = ..., missing_shards: _Optional[_Iterable[str]] = ...) -> None: ...

class BatchSearchRequest(_message.Message):
    __slots__ = ("requests",)
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    requests: _containers.RepeatedCompositeFieldContainer[SearchRequest]
    def __init__(self, requests: _Optional[_Iterable[_Union[SearchRequest, _Mapping]]] = ...) -> None: ...

class BatchSearchResponse(_message.Message):
    __slots__ = ("responses",)
    RESPONSES_FIELD_NUMBER: _ClassVar[int]
    responses: _containers.RepeatedCompositeFieldContainer[SearchResponse]
    def __init__(self, responses: _Optional[_Iterable[_Union[SearchResponse, _Mapping]]] = ...) -> None: ...
