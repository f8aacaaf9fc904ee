"""What every interceptor of this package shares: the type of grpc.aio's ``continuation``.

Kept apart from :mod:`service.interceptors.chain` (which imports every interceptor) so that the
interceptors can name the type without importing the chain back.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import grpc

Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]]
"""The next step of the chain: the handler for a call (``None`` when no service has the method)."""
