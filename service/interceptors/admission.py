"""Admission control and deadlines for RPCs that do not run through :class:`~service.serving.SearchRunner`.

The search path applies its limiter and deadline checks itself (it also batches encodings).
Other expensive RPCs (entity linking: spaCy, candidate generation and an encoder call per
document) get the same two guarantees from :class:`AdmissionInterceptor`, without their
servicers knowing:

* at most ``max_inflight`` calls of the guarded methods at once; past it, RESOURCE_EXHAUSTED at
  once (the handler never runs);
* a call whose deadline has already passed when it is admitted is answered DEADLINE_EXCEEDED
  without running. A call whose deadline passes while it waits for an executor thread is
  cancelled by gRPC; ``run_in_executor`` work that has not started is then dropped with it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc

from service.interceptors.base import Continuation
from service.serving.limits import AdmissionLimiter, Deadline, DeadlineExpiredError, OverloadedError

LINK_PREFIX = "/sleuth.v1.LinkingService/"
LINK_INFLIGHT_DIVISOR = 8
"""Link calls admitted per worker: ``max_inflight // 8`` (32 by default). A document costs tens to
hundreds of searches' worth of work, so its queue must be much shorter for the same wait."""


class AdmissionInterceptor(grpc.aio.ServerInterceptor):
    """Bounds the in-flight calls of the unary methods under ``prefixes`` with one shared limiter."""

    def __init__(self, limiter: AdmissionLimiter, prefixes: Sequence[str] = (LINK_PREFIX,)) -> None:
        self.limiter = limiter
        self._prefixes = tuple(prefixes)
        self._wrapped: dict[str, grpc.RpcMethodHandler] = {}

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        method = handler_call_details.method
        if not method.startswith(self._prefixes):
            return await continuation(handler_call_details)
        cached = self._wrapped.get(method)
        if cached is not None:
            return cached
        handler = await continuation(handler_call_details)
        if handler is None or handler.request_streaming or handler.response_streaming:
            return handler
        behaviour = handler.unary_unary
        limiter = self.limiter

        async def admitted(request: Any, context: grpc.aio.ServicerContext) -> Any:
            try:
                with limiter.admit():
                    Deadline.from_context(context).check("running")
                    return await behaviour(request, context)
            except OverloadedError as exc:
                await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
            except DeadlineExpiredError as exc:
                await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, str(exc))

        wrapped = grpc.unary_unary_rpc_method_handler(
            admitted,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
        self._wrapped[method] = wrapped
        return wrapped
