"""Security settings of a server: token files, TLS files, and where Admin may listen.

* ``--tls-cert/--tls-key`` (PEM files): the server listens with TLS only
  (:func:`server_credentials`).
* ``--auth-token-file``: the bearer token every RPC but health must carry (:func:`load_token`;
  enforced by :class:`~service.interceptors.auth.BearerTokenInterceptor`). Clients (``sleuth search
  --target``, ``sleuth bench``, ``sleuth registry ... --target``) read their token with the same
  function.
* :func:`check_admin_exposure`: the AdminService is refused on a non-loopback address without a
  token.

A bearer token sent over plain TCP can be read by anyone on the path: use it with TLS, or on a
loopback or otherwise trusted network only (the server logs a warning otherwise).
"""

from __future__ import annotations

import ipaddress
import logging
import stat
from pathlib import Path

import grpc

from service.config import ServerConfig

logger = logging.getLogger(__name__)

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


class AdminExposedError(SecurityConfigError):
    """The Admin service would listen on a non-loopback address without an auth token."""


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine only (``localhost``, 127.0.0.0/8, ``::1``)."""
    name = host.strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def check_admin_exposure(config: ServerConfig) -> None:
    """Refuse Admin on a non-loopback address unless a token protects it."""
    if config.admin and config.auth_token_file is None and not is_loopback(config.host):
        raise AdminExposedError(
            f"the Admin service would listen on {config.host} without authentication: "
            "give --auth-token-file, bind a loopback address, or pass --no-admin"
        )
