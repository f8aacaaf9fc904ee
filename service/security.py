"""Transport security and authentication: TLS credentials and a bearer-token interceptor.

* ``--tls-cert/--tls-key`` (PEM files): the server listens with TLS only.
* ``--auth-token-file``: every RPC except the standard health service (which load balancers and
  orchestrators probe without credentials) requires the metadata
  ``authorization: Bearer <token>``; anything else is answered ``UNAUTHENTICATED`` before the
  request is even parsed. The token is compared with :func:`hmac.compare_digest`, in time that
  does not depend on where the first differing byte is.

A bearer token sent over plain TCP can be read by anyone on the path: use it with TLS, or on a
loopback or otherwise trusted network only (the server logs a warning otherwise).

Example:
    >>> interceptor = BearerTokenInterceptor("s3cret")
    >>> interceptor.authorized([("authorization", "Bearer s3cret")])
    True
    >>> interceptor.authorized([("authorization", "Bearer guess")])
    False
"""

from __future__ import annotations

import hmac
import logging
import stat
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import grpc

from service.config import ServerConfig

logger = logging.getLogger(__name__)

HEALTH_PREFIX = "/grpc.health.v1.Health/"
MIN_TOKEN_CHARS = 16


class SecurityConfigError(Exception):
    """A TLS or token file is missing, unreadable or unusable; the server does not start."""


def _read(path: Path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise SecurityConfigError(f"cannot read the {what} {path}: {exc.strerror or exc}") from exc


def load_token(path: Path) -> str:
    """The token in ``path`` (surrounding whitespace removed); at least 16 characters."""
    raw = _read(path, "auth token file")
    try:
        token = raw.decode("utf-8").strip()
    except UnicodeDecodeError as exc:
        raise SecurityConfigError(f"the auth token file {path} is not UTF-8 text") from exc
    if len(token) < MIN_TOKEN_CHARS:
        raise SecurityConfigError(f"the auth token in {path} is shorter than {MIN_TOKEN_CHARS} characters")
    if any(c.isspace() or not c.isprintable() for c in token):
        raise SecurityConfigError(f"the auth token in {path} must be one line of printable characters")
    mode = Path(path).stat().st_mode
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        logger.warning("auth token file %s is readable by other users (chmod 600 it)", path)
    return token


def server_credentials(cert: Path, key: Path) -> grpc.ServerCredentials:
    """TLS credentials from a PEM certificate (chain) and its PEM private key."""
    cert_pem = _read(cert, "TLS certificate")
    key_pem = _read(key, "TLS private key")
    if b"-----BEGIN" not in cert_pem or b"-----BEGIN" not in key_pem:
        raise SecurityConfigError("the TLS certificate and key must be PEM files")
    return grpc.ssl_server_credentials([(key_pem, cert_pem)])


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


Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]]


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


def server_interceptors(config: ServerConfig) -> list[grpc.aio.ServerInterceptor]:
    """The interceptors ``config`` asks for, outermost first: authentication, parse errors, admission."""
    from service.admission import LINK_INFLIGHT_DIVISOR, AdmissionInterceptor
    from service.limits import AdmissionLimiter
    from service.validation import MalformedRequestInterceptor

    chain: list[grpc.aio.ServerInterceptor] = []
    if config.auth_token_file is not None:
        chain.append(BearerTokenInterceptor(load_token(config.auth_token_file)))
        if config.tls_cert is None and config.host not in ("localhost", "127.0.0.1", "::1", "[::1]"):
            logger.warning("bearer tokens on %s travel in clear text: serve with --tls-cert/--tls-key", config.host)
    chain.append(MalformedRequestInterceptor())
    chain.append(AdmissionInterceptor(AdmissionLimiter(max(1, config.max_inflight // LINK_INFLIGHT_DIVISOR))))
    return chain


def add_port(server: grpc.aio.Server, config: ServerConfig) -> int:
    """Bind ``config.address``, with TLS when a certificate and key are configured; the bound port."""
    if (config.tls_cert is None) != (config.tls_key is None):
        raise SecurityConfigError("--tls-cert and --tls-key go together")
    if config.tls_cert is not None and config.tls_key is not None:
        port = server.add_secure_port(config.address, server_credentials(config.tls_cert, config.tls_key))
    else:
        port = server.add_insecure_port(config.address)
    return port
