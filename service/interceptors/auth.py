"""Bearer-token authentication of every RPC but the standard health service.

With ``--auth-token-file`` every RPC except the standard health service (which load balancers and
orchestrators probe without credentials) requires the metadata ``authorization: Bearer <token>``;
anything else is answered ``UNAUTHENTICATED`` before the request is even parsed. The token is
compared with :func:`hmac.compare_digest`, in time that does not depend on where the first
differing byte is. The token file is read by :func:`service.security.load_token`.

Example:
    >>> interceptor = BearerTokenInterceptor("s3cret")
    >>> interceptor.authorized([("authorization", "Bearer s3cret")])
    True
    >>> interceptor.authorized([("authorization", "Bearer guess")])
    False
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Sequence
from typing import Any

import grpc

from service.interceptors.base import Continuation
from service.security import SecurityConfigError

HEALTH_PREFIX = "/grpc.health.v1.Health/"


def refusing_handler(handler: grpc.RpcMethodHandler, code: grpc.StatusCode, message: str) -> grpc.RpcMethodHandler:
    """A handler of the same shape as ``handler`` that answers every call with ``code``.

    The request is not deserialized (raw bytes pass through), so nothing of an unauthenticated
    payload is parsed.
    """

    async def refuse(request: Any, context: grpc.aio.ServicerContext) -> None:
        await context.abort(code, message)

    def raw(data: bytes) -> bytes:
        return data

    if handler.request_streaming and handler.response_streaming:
        factory = grpc.stream_stream_rpc_method_handler
    elif handler.request_streaming:
        factory = grpc.stream_unary_rpc_method_handler
    elif handler.response_streaming:
        factory = grpc.unary_stream_rpc_method_handler
    else:
        factory = grpc.unary_unary_rpc_method_handler
    return factory(refuse, request_deserializer=raw, response_serializer=handler.response_serializer)


class BearerTokenInterceptor(grpc.aio.ServerInterceptor):
    """Requires ``authorization: Bearer <token>`` on every method outside ``exempt_prefixes``."""

    def __init__(self, token: str, exempt_prefixes: Sequence[str] = (HEALTH_PREFIX,)) -> None:
        if not token:
            raise SecurityConfigError("the auth token is empty")
        self._token = token.encode("utf-8")
        self._exempt = tuple(exempt_prefixes)

    def authorized(self, metadata: Iterable[tuple[str, str | bytes]] | None) -> bool:
        """Whether ``metadata`` carries the right bearer token (compared in constant time)."""
        for key, value in metadata or ():
            if key != "authorization":
                continue
            text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
            scheme, _, credential = text.strip().partition(" ")
            if scheme.lower() == "bearer" and hmac.compare_digest(
                credential.strip().encode("utf-8", "replace"), self._token
            ):
                return True
        return False

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        if handler_call_details.method.startswith(self._exempt) or self.authorized(
            handler_call_details.invocation_metadata
        ):
            return await continuation(handler_call_details)
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        message = "missing or invalid credentials: send 'authorization: Bearer <token>'"
        return refusing_handler(handler, grpc.StatusCode.UNAUTHENTICATED, message)
