"""LinkingService: converts messages, calls the linker, converts back.

The linker it serves is loaded (and swapped) by :mod:`service.serving.linker`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import Executor

import grpc

from linking import (
    KnowledgeBase,
    LinkOptions,
    Mention,
)
from linking.drift import link_features
from linking.types import Link
from retrieval.drift import DriftMonitor
from retrieval.errors import InvalidRequestError
from service.generated.sleuth.v1 import linking_pb2, linking_pb2_grpc
from service.interceptors.telemetry import note_linking
from service.servicers.status import abort_with
from service.serving.linker import LoadedLinker
from service.serving.state import ServingState

logger = logging.getLogger(__name__)


def options_from_proto(message: linking_pb2.LinkOptions) -> LinkOptions:
    """Overlay the set fields of ``message`` on the defaults."""
    defaults = LinkOptions()
    return LinkOptions(
        top_candidates=message.top_candidates if message.HasField("top_candidates") else defaults.top_candidates,
        nil_threshold=message.nil_threshold if message.HasField("nil_threshold") else None,
        coreference=message.coreference if message.HasField("coreference") else defaults.coreference,
        include_nil=message.include_nil if message.HasField("include_nil") else defaults.include_nil,
    )


def mentions_from_proto(request: linking_pb2.LinkRequest) -> list[Mention] | None:
    """Given spans as mentions (None when there are none); a span outside the text names its field."""
    if not request.mentions:
        return None
    text = request.text
    mentions = []
    for i, span in enumerate(request.mentions):
        if not 0 <= span.start < span.end <= len(text):
            raise InvalidRequestError(f"mentions[{i}]", f"span {span.start}-{span.end} is not inside the text")
        mentions.append(Mention(span.start, span.end, text[span.start : span.end]))
    return mentions


def link_to_proto(link: Link, kb: KnowledgeBase) -> linking_pb2.LinkedMention:
    def name(entity_id: str) -> str:
        return kb.entity(entity_id).name if entity_id in kb else entity_id

    return linking_pb2.LinkedMention(
        start=link.mention.start,
        end=link.mention.end,
        surface=link.mention.surface,
        entity_id=link.entity_id or "",
        name=name(link.entity_id) if link.entity_id is not None else "",
        score=link.score,
        nil=link.entity_id is None,
        label=link.mention.label or "",
        coreferent=link.coreferent,
        candidates=[
            linking_pb2.CandidateScore(entity_id=c.entity_id, name=name(c.entity_id), score=c.score)
            for c in link.candidates
        ],
    )


class LinkingServicer(linking_pb2_grpc.LinkingServiceServicer):
    """Serves one :class:`LoadedLinker`; the blocking work runs on ``executor`` threads."""

    def __init__(
        self, loaded: LoadedLinker | ServingState[LoadedLinker], executor: Executor, drift: DriftMonitor | None = None
    ) -> None:
        if not isinstance(loaded, ServingState):
            loaded = ServingState("linker", loaded, loaded.model_version)
        self.serving = loaded  # Activate/Rollback of a KB or linker version swaps it
        self._executor = executor
        self.drift = drift  # mentions per document and NIL rate vs the model's reference
        # The reference ``drift`` compares with: the served linker's at start, the new one's after a swap.
        self._drift_source = self.serving.current.drift_reference

    async def Link(
        self, request: linking_pb2.LinkRequest, context: grpc.aio.ServicerContext
    ) -> linking_pb2.LinkResponse:
        started = time.perf_counter()
        lease = self.serving.acquire()  # this request keeps this KB and model even if a swap happens
        loaded = lease.value
        linker = loaded.linker
        try:
            options = options_from_proto(request.options)
            mentions = mentions_from_proto(request)
            links = await asyncio.get_running_loop().run_in_executor(
                self._executor, linker.link, request.text, mentions, options
            )
            note_linking(loaded.model_version, len(links), sum(link.is_nil for link in links))
            if self.drift is not None and mentions is None:  # detected mentions only: given spans say nothing
                if loaded.drift_reference is not self._drift_source:  # a swapped-in model brings its own
                    self.drift.rebase(loaded.drift_reference)
                    self._drift_source = loaded.drift_reference
                self.drift.observe(link_features(links))
            return linking_pb2.LinkResponse(
                mentions=[link_to_proto(link, linker.kb) for link in links],
                kb_version=loaded.kb_version,
                model_version=loaded.model_version,
                server_time_ms=(time.perf_counter() - started) * 1000,
            )
        except Exception as exc:
            await abort_with(context, exc)
            raise  # unreachable: abort raises
        finally:
            lease.release()
