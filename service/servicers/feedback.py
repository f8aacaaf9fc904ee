"""FeedbackService: validate events, write them durably, acknowledge."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import Executor

import grpc

from retrieval.errors import InvalidRequestError
from service.generated.sleuth.v1 import feedback_pb2, feedback_pb2_grpc
from service.mlops.feedback import MAX_EVENTS_PER_CALL, FeedbackEvent, FeedbackLog
from service.servicers.status import abort_with


def events_from_proto(request: feedback_pb2.FeedbackRequest, now: float) -> list[FeedbackEvent]:
    if not request.events:
        raise InvalidRequestError("events", "must hold at least one event")
    if len(request.events) > MAX_EVENTS_PER_CALL:
        raise InvalidRequestError("events", f"holds {len(request.events)}; the limit is {MAX_EVENTS_PER_CALL}")
    events = []
    for i, e in enumerate(request.events):
        event = FeedbackEvent(
            kind=e.kind,
            request_id=e.request_id,
            session_id=e.session_id,
            arm=e.arm,
            query=e.query or None,
            doc_id=e.doc_id or None,
            position=e.position or None,
            dwell_ms=e.dwell_ms if e.HasField("dwell_ms") else None,
            timestamp=e.timestamp if e.timestamp > 0 else now,
        )
        problem = event.problem()
        if problem is not None:
            raise InvalidRequestError(f"events[{i}].{problem[0]}", problem[1])
        events.append(event)
    return events


class FeedbackServicer(feedback_pb2_grpc.FeedbackServiceServicer):
    def __init__(self, log: FeedbackLog, executor: Executor) -> None:
        self.log = log
        self._executor = executor

    async def Record(
        self, request: feedback_pb2.FeedbackRequest, context: grpc.aio.ServicerContext
    ) -> feedback_pb2.FeedbackResponse:
        try:
            events = events_from_proto(request, time.time())
            written = await asyncio.get_running_loop().run_in_executor(self._executor, self.log.record, events)
            return feedback_pb2.FeedbackResponse(recorded=written)
        except Exception as exc:
            await abort_with(context, exc)
            raise
