"""AdminService: errors mapped to status codes, token protection, and refusal to expose it unprotected."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest

from artifacts.registry import Registry
from retrieval.index import SearchIndex
from retrieval.pipeline import Searcher
from service.config import ServerConfig
from service.generated.sleuth.v1 import admin_pb2, admin_pb2_grpc, search_pb2, search_pb2_grpc
from service.security import AdminExposedError, is_loopback
from service.serving.builder import create_server
from service.serving.loading import Services
from tests.service.conftest import event_loop_thread, running_server
from tests.service.lifecycle_helpers import SlowEncoder, publish_tagged

TOKEN = "a-test-token-of-some-length"


@pytest.fixture
def registry_pair(tmp_path: Path):
    encoder = SlowEncoder(delay=0)
    registry = Registry.open(tmp_path / "registry")
    a = publish_tagged(registry, tmp_path, "A", encoder)
    b = publish_tagged(registry, tmp_path, "B", encoder)
    registry.activate(a.version)
    services = Services(searcher=Searcher(SearchIndex.load(a.path), encoder))
    return registry, a, b, services


def call(address: str, method: str, request, metadata=()):
    with grpc.insecure_channel(address) as channel:
        return getattr(admin_pb2_grpc.AdminServiceStub(channel), method)(request, timeout=30, metadata=metadata)


def config_for(registry: Registry, **kwargs) -> ServerConfig:
    return ServerConfig(host="127.0.0.1", port=0, threads=2, registry=registry.root, registry_poll_seconds=0, **kwargs)


def test_admin_errors_name_the_problem(registry_pair) -> None:
    registry, a, b, services = registry_pair
    with open(b.path / "docs.jsonl", "a", encoding="utf-8") as handle:
        handle.write("{}\n")  # B no longer matches its checksums
    with running_server(services, config_for(registry)) as address:
        cases = [
            ("Activate", admin_pb2.ActivateRequest(version="search-index@ffffff"), grpc.StatusCode.NOT_FOUND),
            ("Activate", admin_pb2.ActivateRequest(version=""), grpc.StatusCode.FAILED_PRECONDITION),
            ("Activate", admin_pb2.ActivateRequest(version=b.version), grpc.StatusCode.FAILED_PRECONDITION),
            ("Rollback", admin_pb2.RollbackRequest(), grpc.StatusCode.FAILED_PRECONDITION),
            ("Rollback", admin_pb2.RollbackRequest(kind="kb"), grpc.StatusCode.FAILED_PRECONDITION),
        ]
        for method, request, code in cases:
            with pytest.raises(grpc.RpcError) as info:
                call(address, method, request)
            assert info.value.code() == code, (method, request, info.value.details())
        assert "checksum mismatch" in _details(address, admin_pb2.ActivateRequest(version=b.version))
        status = call(address, "Status", admin_pb2.StatusRequest())
    # Nothing changed: A still served and active.
    assert [s.version for s in status.served] == [a.version]
    assert registry.pointer("search-index").version == a.version


def _details(address: str, request) -> str:
    with pytest.raises(grpc.RpcError) as info:
        call(address, "Activate", request)
    return info.value.details()


def test_a_server_without_registry_has_nothing_to_switch_to(tiny_index, fake_encoder) -> None:
    with running_server(Services(searcher=Searcher(tiny_index, fake_encoder))) as address:
        with pytest.raises(grpc.RpcError) as info:
            call(address, "Activate", admin_pb2.ActivateRequest(version="abcd"))
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "--registry" in info.value.details()
        assert call(address, "Status", admin_pb2.StatusRequest()).served[0].version == tiny_index.version


def test_admin_needs_the_token_when_one_is_configured(registry_pair, tmp_path: Path) -> None:
    registry, a, b, services = registry_pair
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    token_file.chmod(0o600)
    with running_server(services, config_for(registry, auth_token_file=token_file)) as address:
        for metadata in ((), (("authorization", "Bearer wrong-token-wrong-token"),)):
            with pytest.raises(grpc.RpcError) as info:
                call(address, "Activate", admin_pb2.ActivateRequest(version=b.version), metadata)
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert registry.pointer("search-index").version == a.version
        good = (("authorization", f"Bearer {TOKEN}"),)
        assert call(address, "Activate", admin_pb2.ActivateRequest(version=b.version), good).version == b.version


def test_the_admin_servicer_checks_the_token_itself(registry_pair) -> None:
    from service.servicers.admin import AdminServicer
    from service.serving.lifecycle import Lifecycle
    from service.serving.state import ServingState

    registry, a, _, services = registry_pair
    servicer = AdminServicer(Lifecycle(ServingState("search-index", services.searcher, a.version), registry), TOKEN)

    class Context:
        def __init__(self, metadata):
            self.metadata = metadata
            self.aborted = None

        def invocation_metadata(self):
            return self.metadata

        async def abort(self, code, details):
            self.aborted = code
            raise grpc.RpcError(details)

    context = Context(())
    with pytest.raises(grpc.RpcError):
        asyncio.run(servicer.Status(admin_pb2.StatusRequest(), context))
    assert context.aborted == grpc.StatusCode.UNAUTHENTICATED
    ok = asyncio.run(servicer.Status(admin_pb2.StatusRequest(), Context((("authorization", f"Bearer {TOKEN}"),))))
    assert ok.served[0].version == a.version


def test_admin_is_refused_on_a_public_address_without_a_token(registry_pair, tmp_path: Path) -> None:
    _, _, _, services = registry_pair
    assert is_loopback("localhost") and is_loopback("127.0.0.1") and is_loopback("[::1]")
    assert not is_loopback("0.0.0.0") and not is_loopback("::") and not is_loopback("example.org")
    loop = event_loop_thread()

    def create(config: ServerConfig):
        running = asyncio.run_coroutine_threadsafe(create_server(config, services), loop).result(30)
        asyncio.run_coroutine_threadsafe(running.stop(0), loop).result(30)

    with pytest.raises(AdminExposedError, match="--auth-token-file"):
        create(ServerConfig(host="0.0.0.0", port=0, threads=1))
    create(ServerConfig(host="0.0.0.0", port=0, threads=1, admin=False))
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    token_file.chmod(0o600)
    create(ServerConfig(host="0.0.0.0", port=0, threads=1, auth_token_file=token_file))


def test_no_admin_means_no_admin_service(tiny_index, fake_encoder) -> None:
    config = ServerConfig(host="127.0.0.1", port=0, threads=1, admin=False)
    with running_server(Services(searcher=Searcher(tiny_index, fake_encoder)), config) as address:
        with pytest.raises(grpc.RpcError) as info:
            call(address, "Status", admin_pb2.StatusRequest())
        assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
        with grpc.insecure_channel(address) as channel:
            stub = search_pb2_grpc.SearchServiceStub(channel)
            assert stub.Search(search_pb2.SearchRequest(query="cat"), timeout=10).hits
