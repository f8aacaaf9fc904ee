"""SearchService: converts messages, calls the pipeline, converts back. Nothing else."""

from __future__ import annotations

import logging
import time
from concurrent.futures import Executor

import grpc

from retrieval.errors import InvalidRequestError
from retrieval.fusion import FusionConfig
from retrieval.pipeline import Searcher, SearchRequest, SearchResult, snippet
from service.generated.sleuth.v1 import search_pb2, search_pb2_grpc
from service.interceptors.telemetry import note_search
from service.servicers.status import abort_with
from service.serving.limits import Deadline
from service.serving.online import OnlineLoop
from service.serving.runner import SearchRunner
from service.serving.state import ServingState

logger = logging.getLogger(__name__)

MAX_BATCH = 256
DEFAULT_TOP_K = 10
DEFAULT_RERANK_DEPTH = 100


def fusion_from_proto(message: search_pb2.FusionSettings, prefix: str = "fusion") -> FusionConfig:
    """Overlay the set fields of ``message`` on the default fusion settings."""
    defaults = FusionConfig()
    try:
        return FusionConfig(
            method=message.method or defaults.method,
            rrf_k=message.rrf_k if message.HasField("rrf_k") else defaults.rrf_k,
            alpha=message.alpha if message.HasField("alpha") else defaults.alpha,
            normalization=message.normalization or defaults.normalization,
            depth=message.depth if message.HasField("depth") else defaults.depth,
        )
    except InvalidRequestError as exc:
        raise InvalidRequestError(exc.field.replace("fusion", prefix, 1), exc.message) from None


def request_from_proto(message: search_pb2.SearchRequest, prefix: str = "") -> SearchRequest:
    """Validate and convert; errors name the field (with ``prefix`` for batch items)."""
    try:
        return SearchRequest(
            query=message.query,
            top_k=message.top_k or DEFAULT_TOP_K,
            mode=message.mode or "hybrid",
            fusion=fusion_from_proto(message.fusion, prefix + "fusion"),
            rerank=message.rerank,
            rerank_depth=message.rerank_depth or DEFAULT_RERANK_DEPTH,
        )
    except InvalidRequestError as exc:
        if prefix and not exc.field.startswith(prefix):
            raise InvalidRequestError(prefix + exc.field, exc.message) from None
        raise


def response_to_proto(
    result: SearchResult, searcher: Searcher, mode: str, elapsed_ms: float
) -> search_pb2.SearchResponse:
    index = searcher.index
    hits = []
    for hit in result.hits:
        document = index.document(hit.doc_id)
        stages = search_pb2.StageScores()
        for name in ("bm25", "dense", "fused", "rerank"):
            value = getattr(hit, name)
            if value is not None:
                setattr(stages, name, value)
        hits.append(
            search_pb2.Hit(
                doc_id=hit.doc_id,
                score=hit.score,
                rank=hit.rank,
                title=document.title,
                snippet=snippet(document),
                stages=stages,
            )
        )
    return search_pb2.SearchResponse(
        hits=hits,
        index_version=result.index_version,
        server_time_ms=elapsed_ms,
        reranker_version=result.reranker_version or "",
        mode=mode,
        missing_shards=list(result.missing_shards),
    )


class SearchServicer(search_pb2_grpc.SearchServiceServicer):
    """Serves the current :class:`Searcher` of a :class:`ServingState` (or one fixed Searcher).

    Each request leases the version current when it starts and uses it throughout, so a hot swap
    never mixes two versions in one response (service/serving/state.py).
    """

    def __init__(
        self,
        searcher: Searcher | ServingState[Searcher],
        executor: Executor,
        runner: SearchRunner | None = None,
        online: OnlineLoop | None = None,
    ) -> None:
        if not isinstance(searcher, ServingState):
            searcher = ServingState("search-index", searcher, searcher.index.version)
        self.serving = searcher
        self._executor = executor
        # Admission control, deadlines and encode micro-batching (service/serving/runner.py).
        self._runner = runner or SearchRunner(executor)
        # Experiment arms and drift observation (service/serving/online.py).
        self.online = online or OnlineLoop()

    async def Search(
        self, request: search_pb2.SearchRequest, context: grpc.aio.ServicerContext
    ) -> search_pb2.SearchResponse:
        started = time.perf_counter()
        lease = self.serving.acquire()  # this request keeps this version even if a swap happens
        searcher = lease.value
        try:
            search_request = request_from_proto(request)
            search_request, assignment = self.online.apply(search_request, request.session_id, searcher)
            searcher = assignment.searcher or searcher  # an arm may serve another version
            result = await self._runner.search(searcher, search_request, Deadline.from_context(context))
            note_search(result.index_version, [result])
            self.online.observe(result, searcher.index)
            response = response_to_proto(result, searcher, search_request.mode, (time.perf_counter() - started) * 1000)
            return self.online.annotate(response, assignment)
        except Exception as exc:
            await abort_with(context, exc)
            raise  # unreachable: abort raises
        finally:
            lease.release()

    async def BatchSearch(
        self, request: search_pb2.BatchSearchRequest, context: grpc.aio.ServicerContext
    ) -> search_pb2.BatchSearchResponse:
        started = time.perf_counter()
        lease = self.serving.acquire()
        searcher = lease.value
        try:
            if not request.requests:
                raise InvalidRequestError("requests", "must hold at least one request")
            if len(request.requests) > MAX_BATCH:
                raise InvalidRequestError("requests", f"holds {len(request.requests)}; the limit is {MAX_BATCH}")
            applied = [
                self.online.apply(request_from_proto(r, f"requests[{i}]."), r.session_id)
                for i, r in enumerate(request.requests)
            ]
            converted = [search_request for search_request, _ in applied]
            results = await self._runner.batch_search(searcher, converted, Deadline.from_context(context))
            note_search(lease.version, results)
            elapsed = (time.perf_counter() - started) * 1000
            responses = []
            for result, (req, assignment) in zip(results, applied, strict=True):
                self.online.observe(result, searcher.index)
                responses.append(
                    self.online.annotate(response_to_proto(result, searcher, req.mode, elapsed), assignment)
                )
            return search_pb2.BatchSearchResponse(responses=responses)
        except Exception as exc:
            await abort_with(context, exc)
            raise
        finally:
            lease.release()
