"""AdminService: Activate, Rollback and Status over :class:`~service.serving.lifecycle.Lifecycle`.

Thin, like the other servicers: check the caller, convert, call the lifecycle, convert back.
Whenever the server has a token (``--auth-token-file``), an Admin call must carry
``authorization: Bearer <token>``. The server-wide :class:`~service.security.BearerTokenInterceptor`
already refuses calls without it; the servicer checks again so that Admin stays protected even if
the interceptor chain changes.
"""

from __future__ import annotations

import logging

import grpc

from artifacts import ArtifactError
from service.generated.sleuth.v1 import admin_pb2, admin_pb2_grpc
from service.interceptors.auth import BearerTokenInterceptor
from service.servicers.status import abort_with
from service.serving.lifecycle import SEARCH_INDEX, Lifecycle, SwapResult

logger = logging.getLogger(__name__)

ADMIN_SERVICE = admin_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name


def swap_to_proto(result: SwapResult) -> admin_pb2.SwapResponse:
    return admin_pb2.SwapResponse(
        kind=result.kind, version=result.version, previous_version=result.previous_version, load_ms=result.load_ms
    )


class AdminServicer(admin_pb2_grpc.AdminServiceServicer):
    """Serves one :class:`Lifecycle`; ``token`` (if any) is required on every call."""

    def __init__(self, lifecycle: Lifecycle, token: str | None = None) -> None:
        self.lifecycle = lifecycle
        self._auth = BearerTokenInterceptor(token) if token else None

    async def _check(self, context: grpc.aio.ServicerContext) -> None:
        if self._auth is not None and not self._auth.authorized(context.invocation_metadata()):
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "Admin needs 'authorization: Bearer <token>'")

    async def Activate(
        self, request: admin_pb2.ActivateRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.SwapResponse:
        await self._check(context)
        try:
            if not request.version.strip():
                raise ArtifactError("version: must name a registry version (kind@content-id or an id prefix)")
            result = await self.lifecycle.activate(request.version.strip())
        except Exception as exc:
            await abort_with(context, exc)
            raise
        logger.info("Admin.Activate: %s -> %s", result.previous_version, result.version)
        return swap_to_proto(result)

    async def Rollback(
        self, request: admin_pb2.RollbackRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.SwapResponse:
        await self._check(context)
        try:
            result = await self.lifecycle.rollback(request.kind or SEARCH_INDEX)
        except Exception as exc:
            await abort_with(context, exc)
            raise
        logger.info("Admin.Rollback: %s -> %s", result.previous_version, result.version)
        return swap_to_proto(result)

    async def Status(
        self, request: admin_pb2.StatusRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.StatusResponse:
        await self._check(context)
        status = self.lifecycle.status()
        return admin_pb2.StatusResponse(
            served=[
                admin_pb2.ServedVersion(
                    kind=s.kind, version=s.version, since=s.since, inflight=s.inflight, draining=s.draining
                )
                for s in status.served
            ],
            registry=status.registry or "",
            registry_active=status.registry_active,
            uptime_seconds=status.uptime_seconds,
            swaps=status.swaps,
        )
