"""The one place where core errors become gRPC status codes.

Clients get a short message naming the field or the problem, never a traceback: unexpected
errors are logged in full on the server and answered with INTERNAL and a request id.
"""

from __future__ import annotations

import logging
import uuid

import grpc

from artifacts import ArtifactError, VersionNotFoundError
from retrieval.errors import InvalidRequestError, ShardsUnavailableError
from service.cluster.errors import LinkerUnavailableError
from service.serving.limits import DeadlineExpiredError, OverloadedError

logger = logging.getLogger(__name__)


def status_for(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status code and client-facing message for an exception raised while serving."""
    if isinstance(exc, InvalidRequestError):
        return grpc.StatusCode.INVALID_ARGUMENT, str(exc)
    if isinstance(exc, VersionNotFoundError):  # Admin: no such registry version
        return grpc.StatusCode.NOT_FOUND, str(exc)
    if isinstance(exc, ArtifactError):
        return grpc.StatusCode.FAILED_PRECONDITION, str(exc)
    if isinstance(exc, OverloadedError):
        return grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc)
    if isinstance(exc, DeadlineExpiredError):
        return grpc.StatusCode.DEADLINE_EXCEEDED, str(exc)
    if isinstance(exc, ShardsUnavailableError | LinkerUnavailableError):
        return grpc.StatusCode.UNAVAILABLE, str(exc)
    incident = uuid.uuid4().hex[:12]
    logger.error("internal error (incident %s)", incident, exc_info=exc)
    return grpc.StatusCode.INTERNAL, f"internal error (incident {incident}); see the server log"


async def abort_with(context: grpc.aio.ServicerContext, exc: BaseException) -> None:
    code, message = status_for(exc)
    await context.abort(code, message)
