"""A small Python client for a running Sleuth server.

Example:
    >>> with SleuthClient("localhost:50051") as client:  # doctest: +SKIP
    ...     for hit in client.search("how do plants make sugar", top_k=3).hits:
    ...         print(hit.rank, hit.doc_id, hit.title)
    ...     for mention in client.link("Michael Jordan won six NBA titles with the Bulls.").mentions:
    ...         print(mention.surface, "NIL" if mention.nil else mention.entity_id)

Against a server started with ``--tls-cert/--tls-key`` and ``--auth-token-file``:

    >>> client = SleuthClient("search.example:50051", tls_ca=Path("ca.pem"), token="s3cret")  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import grpc

from retrieval.errors import InvalidRequestError
from retrieval.pipeline import MAX_TOP_K
from service.config import MAX_MESSAGE_BYTES
from service.generated.sleuth.v1 import linking_pb2, linking_pb2_grpc, search_pb2, search_pb2_grpc


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
        self._linking = linking_pb2_grpc.LinkingServiceStub(self._channel)
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
        """Search the served index for ``query``: the ``top_k`` best hits (1 to 1000).

        ``top_k`` is checked here as a local search checks it: the protocol reads 0 as "unset" and
        answers 10 hits, which would silently differ from what was asked.
        """
        if not 1 <= top_k <= MAX_TOP_K:
            raise InvalidRequestError("top_k", f"must be within [1, {MAX_TOP_K}], got {top_k}")
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
        """Several searches in one call; the server batches their encodings."""
        return self._search.BatchSearch(
            search_pb2.BatchSearchRequest(requests=requests), timeout=self.timeout, metadata=self.metadata
        )

    def link(
        self,
        text: str,
        *,
        mentions: Sequence[tuple[int, int]] = (),
        top_candidates: int | None = None,
        nil_threshold: float | None = None,
        coreference: bool | None = None,
        include_nil: bool | None = None,
    ) -> linking_pb2.LinkResponse:
        """Link the entity mentions of ``text`` on the server.

        ``mentions`` are (start, end) spans in code points to disambiguate; none means the server
        detects them. The options left at None take the server's defaults (see ``linking.proto``:
        5 candidates per mention, the model's NIL threshold, coreference on, NIL mentions included).
        """
        options = linking_pb2.LinkOptions()
        if top_candidates is not None:
            options.top_candidates = top_candidates
        if nil_threshold is not None:
            options.nil_threshold = nil_threshold
        if coreference is not None:
            options.coreference = coreference
        if include_nil is not None:
            options.include_nil = include_nil
        request = linking_pb2.LinkRequest(
            text=text,
            mentions=[linking_pb2.MentionSpan(start=start, end=end) for start, end in mentions],
            options=options,
        )
        return self._linking.Link(request, timeout=self.timeout, metadata=self.metadata)

    @property
    def channel(self) -> grpc.Channel:
        """The underlying channel (for stubs of the other services: Admin, Feedback, Health)."""
        return self._channel

    def close(self) -> None:
        """Close the channel."""
        self._channel.close()

    def __enter__(self) -> SleuthClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
