"""Who may connect, and how many: the values of the TLS, Unix socket and cap options.

``receive`` and ``send`` parse them into one :class:`ReceiverAccess` or :class:`SenderAccess`
each (the option decorators are in ``_options``). TLS contexts are built here, when the
options are parsed, so a missing or mismatched certificate file is a usage error before
anything starts. Nothing here imports trio, so ``--help`` stays quick.
"""

from __future__ import annotations

import re
import ssl
from dataclasses import dataclass
from typing import Final

#: Descriptors the receiver keeps back from --max-connections: stdio, the listeners, the
#: metrics server, Python's own files.
RESERVED_DESCRIPTORS: Final = 64
#: What --max-connections assumes when the descriptor limit is unlimited or unknown.
UNLIMITED_DESCRIPTORS: Final = 65536
#: Seconds a receiver lets a connection without any stream live (--idle-timeout).
DEFAULT_IDLE_TIMEOUT: Final = 30.0
#: Seconds for the TLS and flowproto handshakes (--handshake-timeout): the library's
#: ``flowproto.trio.DEFAULT_HANDSHAKE_TIMEOUT``, not imported, which would load trio.
DEFAULT_HANDSHAKE_TIMEOUT: Final = 10.0
#: Seconds a sender keeps retrying a receiver that says it is overloaded (--retry-for).
DEFAULT_RETRY_FOR: Final = 60.0


@dataclass(frozen=True)
class UnixAddress:
    """``unix:PATH`` in --listen or --connect."""

    path: str

    def __str__(self) -> str:
        return f"unix:{self.path}"


@dataclass(frozen=True)
class ReceiverAccess:
    """Who may connect to the receiver, and how many at once.

    Attributes:
        ssl_context: TLS for every connection (--tls-cert, --tls-key), requiring client
            certificates if ``mutual`` (--tls-client-ca); ``None``: plain TCP.
        mutual: client certificates are required and verified.
        max_connections: connections served at once; one more is refused with
            GOAWAY(OVERLOADED), which a sender retries. ``None``: no cap.
        idle_timeout: seconds a connection may have no stream before it is closed with
            GOAWAY(TIMEOUT) (spec §11); ``None``: never.
        handshake_timeout: seconds for the TLS and flowproto handshakes (spec §3.4, §11).
    """

    ssl_context: ssl.SSLContext | None = None
    mutual: bool = False
    max_connections: int | None = None
    idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT
    handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT


@dataclass(frozen=True)
class SenderAccess:
    """How the sender connects: TLS, the name it verifies, how long it retries.

    Attributes:
        ssl_context: TLS (--tls, --tls-ca; a client certificate with --tls-cert and
            --tls-key); ``None``: plain TCP.
        server_hostname: the name the receiver's certificate must carry; ``None``: the
            host of --connect.
        retry_for: seconds to keep retrying while the receiver answers GOAWAY(OVERLOADED);
            0: do not retry.
    """

    ssl_context: ssl.SSLContext | None = None
    server_hostname: str | None = None
    retry_for: float = DEFAULT_RETRY_FOR


def default_max_connections() -> int:
    """``(soft RLIMIT_NOFILE - 64) // 2``, at least 1: each connection takes a descriptor
    and may take another for the files it writes, and 64 are kept back for the rest."""
    try:
        import resource
    except ImportError:  # not on POSIX
        return (UNLIMITED_DESCRIPTORS - RESERVED_DESCRIPTORS) // 2
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft > UNLIMITED_DESCRIPTORS:
        soft = UNLIMITED_DESCRIPTORS
    return max(1, (soft - RESERVED_DESCRIPTORS) // 2)


class AccessError(ValueError):
    """A TLS file that cannot be used (the option parsers make it a usage error)."""


def server_tls(cert: str, key: str | None, client_ca: str | None) -> ssl.SSLContext:
    """The receiver's TLS context: its certificate chain and key, and with ``client_ca``
    a demand for client certificates signed by it (mutual TLS)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    _load_chain(context, cert, key, "--tls-cert", "--tls-key")
    if client_ca is not None:
        context.verify_mode = ssl.CERT_REQUIRED
        _load_ca(context, client_ca, "--tls-client-ca")
    return context


def client_tls(ca: str | None, cert: str | None, key: str | None) -> ssl.SSLContext:
    """The sender's TLS context: it trusts ``ca`` (or the system's CAs), checks the host
    name, and presents ``cert`` if given (for a receiver with --tls-client-ca)."""
    if ca is None:
        context = ssl.create_default_context()
    else:
        # Only the given CA: the system's CAs do not vouch for a private receiver, and
        # should not vouch for an impostor either.
        try:
            context = ssl.create_default_context(cafile=ca)
        except (OSError, ssl.SSLError) as exc:
            raise AccessError(_ca_problem("--tls-ca", ca, exc)) from None
    if cert is not None:
        _load_chain(context, cert, key, "--tls-cert", "--tls-key")
    return context


def _load_chain(
    context: ssl.SSLContext, cert: str, key: str | None, cert_opt: str, key_opt: str
) -> None:
    try:
        context.load_cert_chain(cert, key)
    except ssl.SSLError as exc:  # before OSError: it is one
        files = f"{cert_opt} {cert}" + (f" with {key_opt} {key}" if key else "")
        raise AccessError(
            f"{files} is not a PEM certificate and key"
            + ("" if key else f" (is the key in another file? {key_opt})")
            + f": {_ssl_text(exc)}"
        ) from None
    except OSError as exc:
        raise AccessError(f"{cert_opt} {cert}: {exc.strerror or exc}") from None


def _load_ca(context: ssl.SSLContext, cafile: str, option: str) -> None:
    try:
        context.load_verify_locations(cafile=cafile)
    except (OSError, ssl.SSLError) as exc:
        raise AccessError(_ca_problem(option, cafile, exc)) from None


def _ca_problem(option: str, cafile: str, exc: OSError) -> str:
    if isinstance(exc, ssl.SSLError):
        return f"{option} {cafile} holds no PEM certificate: {_ssl_text(exc)}"
    return f"{option} {cafile}: {exc.strerror or exc}"


def _ssl_text(exc: ssl.SSLError) -> str:
    """OpenSSL's words, without the ``(_ssl.c:3926)`` of the C source."""
    return re.sub(r"\s*\(_ssl\.c:\d+\)$", "", str(exc.strerror or exc))
