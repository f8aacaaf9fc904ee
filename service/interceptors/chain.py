"""The server's interceptor chain, in order, outermost first.

1. :class:`~service.interceptors.drain.HandlerTasks`: remembers each call's task, so that a stop
   can wait for the handlers (it must see every call, so it comes first);
2. :class:`~service.interceptors.telemetry.TelemetryInterceptor`: counts, times and logs every call,
   including those the interceptors after it refuse;
3. :class:`~service.interceptors.auth.BearerTokenInterceptor` (with ``--auth-token-file``): refuses
   calls without the token before their request is parsed;
4. :class:`~service.interceptors.validation.MalformedRequestInterceptor`: a request that does not
   parse is answered INVALID_ARGUMENT;
5. :class:`~service.interceptors.admission.AdmissionInterceptor`: bounds the in-flight linking calls
   and drops those whose deadline has passed.

The search path does its own admission and deadline checks (:class:`~service.serving.runner.SearchRunner`),
because it also batches encodings.
"""

from __future__ import annotations

import logging

import grpc

from service.config import ServerConfig
from service.interceptors.admission import LINK_INFLIGHT_DIVISOR, AdmissionInterceptor
from service.interceptors.auth import BearerTokenInterceptor
from service.interceptors.drain import HandlerTasks
from service.interceptors.telemetry import TelemetryInterceptor
from service.interceptors.validation import MalformedRequestInterceptor
from service.security import load_token
from service.serving.limits import AdmissionLimiter

logger = logging.getLogger(__name__)

LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1", "[::1]")


def server_interceptors(config: ServerConfig) -> list[grpc.aio.ServerInterceptor]:
    """The interceptors ``config`` asks for after telemetry, outermost first: authentication, parse errors,
    admission."""
    chain: list[grpc.aio.ServerInterceptor] = []
    if config.auth_token_file is not None:
        chain.append(BearerTokenInterceptor(load_token(config.auth_token_file)))
        if config.tls_cert is None and config.host not in LOOPBACK_HOSTS:
            logger.warning("bearer tokens on %s travel in clear text: serve with --tls-cert/--tls-key", config.host)
    chain.append(MalformedRequestInterceptor())
    chain.append(AdmissionInterceptor(AdmissionLimiter(max(1, config.max_inflight // LINK_INFLIGHT_DIVISOR))))
    return chain


def interceptor_chain(
    config: ServerConfig, handler_tasks: HandlerTasks, telemetry: TelemetryInterceptor
) -> list[grpc.aio.ServerInterceptor]:
    """The whole chain of one server, outermost first (see the module docstring for why this order)."""
    return [handler_tasks, telemetry, *server_interceptors(config)]
