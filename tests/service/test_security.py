"""TLS (--tls-cert/--tls-key) and bearer-token authentication (--auth-token-file)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from retrieval.pipeline import Searcher
from service.config import ServerConfig
from service.generated.sleuth.v1 import search_pb2, search_pb2_grpc
from service.interceptors.auth import BearerTokenInterceptor
from service.security import SecurityConfigError, load_token
from service.serving.builder import add_port
from service.serving.loading import Services
from tests.service.conftest import event_loop_thread, running_server

TOKEN = "test-token-0123456789abcdef"


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> tuple[Path, Path]:
    """A self-signed certificate for localhost/127.0.0.1, made with the ``cryptography`` package."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    san = x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(san, critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    root = tmp_path_factory.mktemp("tls")
    cert, key_path = root / "cert.pem", root / "key.pem"
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
        )
    )
    return cert, key_path


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n", encoding="utf-8")
    path.chmod(0o600)
    return path


@pytest.fixture
def services(tiny_index, fake_encoder) -> Services:
    return Services(searcher=Searcher(tiny_index, fake_encoder))


def tls_channel(address: str, cert: Path) -> grpc.Channel:
    credentials = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
    return grpc.secure_channel(address, credentials, options=[("grpc.ssl_target_name_override", "localhost")])


def test_tls_server_answers_tls_clients_and_refuses_plaintext(services, certificate) -> None:
    cert, key = certificate
    config = ServerConfig(host="127.0.0.1", port=0, threads=2, tls_cert=cert, tls_key=key)
    with running_server(services, config) as address:
        with tls_channel(address, cert) as channel:
            response = search_pb2_grpc.SearchServiceStub(channel).Search(
                search_pb2.SearchRequest(query="loyal dog"), timeout=30
            )
            assert response.hits[0].doc_id == "dogs"
        with grpc.insecure_channel(address) as plain, pytest.raises(grpc.RpcError) as info:
            search_pb2_grpc.SearchServiceStub(plain).Search(search_pb2.SearchRequest(query="cat"), timeout=10)
        assert info.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


def test_tls_and_auth_together(services, certificate, token_file) -> None:
    cert, key = certificate
    config = ServerConfig(host="127.0.0.1", port=0, threads=2, tls_cert=cert, tls_key=key, auth_token_file=token_file)
    with running_server(services, config) as address, tls_channel(address, cert) as channel:
        stub = search_pb2_grpc.SearchServiceStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.Search(search_pb2.SearchRequest(query="cat"), timeout=10)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        ok = stub.Search(
            search_pb2.SearchRequest(query="cat"), timeout=30, metadata=[("authorization", f"Bearer {TOKEN}")]
        )
        assert ok.hits[0].doc_id == "cats"


@pytest.mark.parametrize(
    "metadata",
    [
        [],
        [("authorization", "Bearer wrong-token-0123456789")],
        [("authorization", f"Bearer {TOKEN}x")],
        [("authorization", TOKEN)],
        [("authorization", f"Basic {TOKEN}")],
        [("x-api-key", TOKEN)],
    ],
)
def test_without_the_right_token_every_rpc_but_health_is_unauthenticated(services, token_file, metadata) -> None:
    config = ServerConfig(host="127.0.0.1", port=0, threads=2, auth_token_file=token_file)
    with running_server(services, config) as address, grpc.insecure_channel(address) as channel:
        stub = search_pb2_grpc.SearchServiceStub(channel)
        calls = [
            lambda: stub.Search(search_pb2.SearchRequest(query="cat"), timeout=10, metadata=metadata),
            lambda: stub.BatchSearch(
                search_pb2.BatchSearchRequest(requests=[search_pb2.SearchRequest(query="cat")]),
                timeout=10,
                metadata=metadata,
            ),
            # Not even parsed: an unauthenticated malformed payload is UNAUTHENTICATED, not INVALID_ARGUMENT.
            lambda: channel.unary_unary("/sleuth.v1.SearchService/Search")(
                b"\x0a\x02\xff\xfe", timeout=10, metadata=metadata
            ),
            lambda: list(
                reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
                    iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10, metadata=metadata
                )
            ),
        ]
        for call in calls:
            with pytest.raises(grpc.RpcError) as info:
                call()
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert TOKEN not in (info.value.details() or "")
        health = health_pb2_grpc.HealthStub(channel)
        status = health.Check(health_pb2.HealthCheckRequest(), timeout=10, metadata=metadata).status
        assert status == health_pb2.HealthCheckResponse.SERVING


def test_the_right_token_is_accepted(services, token_file) -> None:
    config = ServerConfig(host="127.0.0.1", port=0, threads=2, auth_token_file=token_file)
    with running_server(services, config) as address, grpc.insecure_channel(address) as channel:
        stub = search_pb2_grpc.SearchServiceStub(channel)
        for scheme in ("Bearer", "bearer"):
            metadata = [("authorization", f"{scheme} {TOKEN}")]
            assert stub.Search(search_pb2.SearchRequest(query="cat"), timeout=30, metadata=metadata).hits
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        responses = reflection.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
            timeout=10,
            metadata=[("authorization", f"Bearer {TOKEN}")],
        )
        assert any(r.list_services_response.service for r in responses)


def test_interceptor_compares_tokens_exactly() -> None:
    interceptor = BearerTokenInterceptor(TOKEN)
    assert interceptor.authorized([("authorization", f"Bearer {TOKEN}")])
    assert interceptor.authorized([("other", "x"), ("authorization", f"Bearer {TOKEN}".encode())])
    assert not interceptor.authorized([("authorization", f"Bearer {TOKEN[:-1]}")])
    assert not interceptor.authorized([("authorization", "Bearer ")])
    assert not interceptor.authorized(None)


def test_unusable_security_files_stop_the_server_with_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SecurityConfigError, match="cannot read"):
        load_token(tmp_path / "missing")
    short = tmp_path / "short"
    short.write_text("abc\n")
    with pytest.raises(SecurityConfigError, match="shorter than"):
        load_token(short)
    spaced = tmp_path / "spaced"
    spaced.write_text("two words that are long enough\n")
    with pytest.raises(SecurityConfigError, match="one line"):
        load_token(spaced)
    lonely = ServerConfig(host="127.0.0.1", port=0, tls_cert=tmp_path / "cert.pem")

    async def bind() -> int:  # on the tests' shared event loop, which grpc.aio is bound to
        return add_port(grpc.aio.server(), lonely)

    with pytest.raises(SecurityConfigError, match="go together"):
        asyncio.run_coroutine_threadsafe(bind(), event_loop_thread()).result(30)


def test_python_client_and_search_command_speak_tls_with_a_token(services, certificate, token_file, capsys) -> None:
    from service.cli import main
    from service.client import SleuthClient

    cert, key = certificate
    config = ServerConfig(host="127.0.0.1", port=0, threads=2, tls_cert=cert, tls_key=key, auth_token_file=token_file)
    with running_server(services, config) as address:
        with SleuthClient(address, tls_ca=cert, tls_server_name="localhost", token=TOKEN) as client:
            assert client.search("cat", top_k=1).hits[0].doc_id == "cats"
        with SleuthClient(address, tls_ca=cert, tls_server_name="localhost") as client:
            with pytest.raises(grpc.RpcError) as info:
                client.search("cat")
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED

        common = ["search", "--target", address, "--tls-ca", str(cert), "--tls-server-name", "localhost", "--json"]
        assert main([*common, "--token-file", str(token_file), "cat"]) == 0
        assert '"cats"' in capsys.readouterr().out
        assert main([*common, "cat"]) == 2
        err = capsys.readouterr().err
        assert "UNAUTHENTICATED" in err and "Traceback" not in err
        assert main([*common, "--token-file", str(token_file.parent / "missing"), "cat"]) == 2
        assert "--token-file" in capsys.readouterr().err


def test_link_client_and_command_speak_tls_with_a_token(linking_services, certificate, token_file, capsys) -> None:
    from service.cli import main
    from service.client import SleuthClient

    cert, key = certificate
    config = ServerConfig(host="127.0.0.1", port=0, threads=2, tls_cert=cert, tls_key=key, auth_token_file=token_file)
    text = "Yesterday Michael Jordan visited Paris."
    with running_server(linking_services, config) as address:
        with SleuthClient(address, tls_ca=cert, tls_server_name="localhost", token=TOKEN) as client:
            assert "Michael Jordan" in {m.surface for m in client.link(text).mentions}
        common = ["link", "--target", address, "--tls-ca", str(cert), "--tls-server-name", "localhost", "--json"]
        assert main([*common, "--token-file", str(token_file), text]) == 0
        assert "Michael Jordan" in {row["surface"] for row in json.loads(capsys.readouterr().out)}
        assert main([*common, text]) == 2
        err = capsys.readouterr().err
        assert "UNAUTHENTICATED" in err and err.count("\n") == 1
