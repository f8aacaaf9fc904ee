"""Requests that do not even parse: answered INVALID_ARGUMENT, not a leaked parser exception.

protobuf rejects a string field holding invalid UTF-8 (and any corrupt wire data) while
deserializing, before a servicer runs; grpc then answers UNKNOWN with the parser's exception text.
:class:`MalformedRequestInterceptor` wraps each unary method's deserializer so that a parse failure
becomes a marker the wrapped handler answers with ``INVALID_ARGUMENT: request: ...``.

Field-level checks (sizes, ranges, enumerations) live with the types they protect
(``SearchRequest``, ``FusionConfig``) and the servicers' converters; message sizes are bounded
by the channel options ``grpc.max_receive_message_length``/``grpc.max_send_message_length``
(``ServerConfig.max_message_bytes``), answered RESOURCE_EXHAUSTED by grpc itself.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from service.interceptors.base import Continuation

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class MalformedRequest:
    """Stands in for a request that failed to parse; ``reason`` is the parser's message."""

    reason: str


def tolerant(deserialize: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    """``deserialize``, returning :class:`MalformedRequest` instead of raising on bad input."""

    def parse(data: bytes) -> Any:
        try:
            return deserialize(data)
        except (DecodeError, UnicodeDecodeError, ValueError) as exc:
            reason = str(exc).rpartition(": ")[2] or type(exc).__name__
            return MalformedRequest(reason)

    return parse


class MalformedRequestInterceptor(grpc.aio.ServerInterceptor):
    """Turns request parse failures of unary-request methods into INVALID_ARGUMENT."""

    def __init__(self) -> None:
        self._wrapped: dict[str, grpc.RpcMethodHandler] = {}

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        method = handler_call_details.method
        cached = self._wrapped.get(method)
        if cached is not None:
            return cached
        handler = await continuation(handler_call_details)
        if handler is None or handler.request_streaming or handler.request_deserializer is None:
            return handler
        if handler.response_streaming:
            return handler  # (only grpc's health Watch here; left as grpc made it)
        behaviour = handler.unary_unary

        async def guarded(request: Any, context: grpc.aio.ServicerContext) -> Any:
            if isinstance(request, MalformedRequest):
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"request: malformed message ({request.reason})")
            return await behaviour(request, context)

        wrapped = grpc.unary_unary_rpc_method_handler(
            guarded,
            request_deserializer=tolerant(handler.request_deserializer),
            response_serializer=handler.response_serializer,
        )
        self._wrapped[method] = wrapped
        return wrapped
