"""A small Python client for a running Sleuth server.

Example:
    >>> with SleuthClient("localhost:50051") as client:  # doctest: +SKIP
    ...     for hit in client.search("how do plants make sugar", top_k=3).hits:
    ...         print(hit.rank, hit.doc_id, hit.title)

Against a server started with ``--tls-cert/--tls-key`` and ``--auth-token-file``:

    >>> client = SleuthClient("search.example:50051", tls_ca=Path("ca.pem"), token="s3cret")  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from types import TracebackType

import grpc

from service.config import MAX_MESSAGE_BYTES
from service.generated.sleuth.v1 import search_pb2, search_pb2_grpc


class SleuthClient:
    """Blocking client over one channel. ``timeout`` is each call's deadline in seconds.

    ``tls_ca`` (a PEM file of the CA that signed the server's certificate) makes the channel TLS;
    ``tls_server_name`` overrides the name expected in the certificate (default: the target's host).
    ``token`` is sent as ``authorization: Bearer <token>`` on every call.
    """

    def __init__(
        self,
        target: str,
        *,
        timeout: float = 30.0,
        metadata: list[tuple[str, str]] | None = None,
        tls_ca: Path | None = None,
        tls_server_name: str | None = None,
        token: str | None = None,
    ) -> None:
        options = [
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ]
        if tls_ca is not None:
            if tls_server_name:
                options.append(("grpc.ssl_target_name_override", tls_server_name))
            credentials = grpc.ssl_channel_credentials(root_certificates=Path(tls_ca).read_bytes())
            self._channel = grpc.secure_channel(target, credentials, options=options)
        else:
            self._channel = grpc.insecure_channel(target, options=options)
        self._search = search_pb2_grpc.SearchServiceStub(self._channel)
        self.timeout = timeout
        self.metadata = list(metadata or [])
        if token:
            self.metadata.append(("authorization", f"Bearer {token}"))

    def search(
        self,
        query: str,
        *,
        top_k: int = 10,
        mode: str = "hybrid",
        fusion: search_pb2.FusionSettings | None = None,
        rerank: bool = False,
        rerank_depth: int = 0,
        session_id: str = "",
    ) -> search_pb2.SearchResponse:
        request = search_pb2.SearchRequest(
            query=query,
            top_k=top_k,
            mode=mode,
            fusion=fusion,
            rerank=rerank,
            rerank_depth=rerank_depth,
            session_id=session_id,
        )
        return self._search.Search(request, timeout=self.timeout, metadata=self.metadata)

    def batch_search(self, requests: list[search_pb2.SearchRequest]) -> search_pb2.BatchSearchResponse:
        return self._search.BatchSearch(
            search_pb2.BatchSearchRequest(requests=requests), timeout=self.timeout, metadata=self.metadata
        )

    @property
    def channel(self) -> grpc.Channel:
        return self._channel

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> SleuthClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
