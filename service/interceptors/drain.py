"""The interceptor that lets a stopping server wait for its call handlers to return."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import grpc

from service.interceptors.base import Continuation

logger = logging.getLogger(__name__)


class HandlerTasks(grpc.aio.ServerInterceptor):
    """Remembers the asyncio task running each call, so that a stop can wait for the handlers.

    ``grpc.aio.Server.stop`` returns once gRPC Core has closed every call and connection, which can
    be a few event-loop turns before the Python tasks running those calls are done (one may still
    be waking up from sending its final status, or unwinding a cancellation). If the loop is torn
    down in that window (``asyncio.run`` cancels the tasks left over), gRPC reports the cancelled
    task with an "Exception not handled ... CancelledError" traceback for a call that had in fact
    completed. Outermost interceptor: it runs, in the call's own task, before anything else.
    """

    def __init__(self) -> None:
        self.tasks: set[asyncio.Task[Any]] = set()

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        task = asyncio.current_task()
        if task is not None:
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        return await continuation(handler_call_details)

    async def wait(self, timeout: float) -> None:
        """Wait until every handler has returned; cancel (and log) those still running after ``timeout``."""
        running = {task for task in self.tasks if not task.done()}
        if not running:
            return
        logger.debug("waiting for %d call handler(s) to return", len(running))
        _, running = await asyncio.wait(running, timeout=timeout)
        if running:  # gRPC has closed their calls: these handlers ignore cancellation or are stuck
            logger.warning(
                "%d call handler(s) still running %.1f s after the server stopped; cancelling them",
                len(running),
                timeout,
            )
            for task in running:
                task.cancel()  # gRPC's handler wrapper takes a cancellation quietly
            await asyncio.wait(running, timeout=1.0)
