"""Sessions over real sockets (spec §15), the same on both I/O layers: a client and server
of one backend through a proxy that cuts the TCP connection over and over. Nothing is
lost, nothing arrives twice, the streams go on, and what the sender keeps stays within
the window (spec §15.5). The proxy (``flowproto.bench.cutproxy``, a Trio program) runs in
a thread of its own, so that it serves an asyncio test as well as a Trio one.

``test_resume_trio.py`` holds the Trio layer's first versions of these tests; the
cross-layer resumptions (an asyncio client against a Trio server and the reverse, each
in its own process) are in ``test_interop.py``.
"""

from __future__ import annotations

import asyncio
import random
import secrets
import socket
import ssl
import struct
import threading
import time
from typing import Any

import pytest
import trio
import trustme
from backends import BACKENDS

from flowproto import (
    PREFACE,
    Connection,
    ErrorCode,
    FrameDecoder,
    GoAwayFrame,
    HelloFrame,
    Reconnect,
    ResumeRequested,
    Role,
    Settings,
)
from flowproto._session_store import MAX_FAILED_RESUMES
from flowproto.bench.cutproxy import CutProxy


@pytest.fixture(params=sorted(BACKENDS))
def backend(request: pytest.FixtureRequest) -> Any:
    return BACKENDS[request.param]


#: Small windows: retention is bounded by them, and a cut loses at most about that much.
WINDOW = Settings(
    stream_bytes=256 * 1024,
    stream_messages=256,
    connection_bytes=1 << 20,
    max_message_bytes=64 * 1024,
)
FAST = Reconnect(deadline=10.0, initial_delay=0.01, max_delay=0.2)


class ProxyThread:
    """A :class:`CutProxy` in a thread with its own ``trio.run``: ``port`` is where it
    listens; :meth:`cut_now` and ``proxy.accepting`` work from any thread."""

    def __init__(self, target_port: int, cut_every: int, **kwargs: Any) -> None:
        self.proxy = CutProxy(("127.0.0.1", target_port), cut_every, **kwargs)
        self.port = 0
        self._ready = threading.Event()
        self._token: trio.lowlevel.TrioToken | None = None
        self._scope: trio.CancelScope | None = None
        self._thread = threading.Thread(target=trio.run, args=(self._main,), daemon=True)

    async def _main(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        async with trio.open_nursery() as nursery:
            self._scope = nursery.cancel_scope
            self.port = await nursery.start(self.proxy.serve)
            self._ready.set()

    def __enter__(self) -> ProxyThread:
        self._thread.start()
        assert self._ready.wait(10), "the cut proxy did not start"
        return self

    def __exit__(self, *exc_info: object) -> None:
        assert self._token is not None and self._scope is not None
        self._token.run_sync_soon(self._scope.cancel)
        self._thread.join(10)

    def cut_now(self) -> None:
        """Cut every connection (soon: in the proxy's thread)."""
        assert self._token is not None
        self._token.run_sync_soon(self.proxy.cut_now)


def numbered(i: int, size: int) -> bytes:
    return (b"%08d:" % i + bytes([i % 251]) * size)[: max(size, 9)]


async def echo(stream: Any) -> None:
    async for message in stream:
        await stream.send(message)


def serving(b: Any, handler: Any, **kwargs: Any) -> Any:
    return b.server(handler, codec="raw", settings=WINDOW, autotune=False, **kwargs)


async def in_thread(b: Any, fn: Any, *args: Any) -> Any:
    """``fn(*args)`` in a worker thread: blocking socket code beside the event loop."""
    if b.name == "trio":
        return await trio.to_thread.run_sync(fn, *args)
    return await asyncio.to_thread(fn, *args)


@pytest.mark.parametrize("half_open", [False, True], ids=["both-sides-cut", "server-half-open"])
def test_an_echo_through_a_proxy_cutting_every_100_kib_loses_and_repeats_nothing(
    backend: Any, half_open: bool
) -> None:
    """spec §15.8 on real sockets: about 3 MB each way through a proxy that cuts every
    100 KiB, alternately with FIN and RST (and, half-open, leaving the server's side
    open: the server notices only when the client comes back, spec §15.6 step 2): every
    message comes back exactly once, in order."""
    rng = random.Random(1)
    sizes = [rng.choice([1, 100, 1000, 20_000, rng.randint(0, 60_000)]) for _ in range(300)]
    sent = [numbered(i, size) for i, size in enumerate(sizes)]
    echoed: list[bytes] = []
    result: dict[str, Any] = {}

    async def scenario(b: Any) -> None:
        async with serving(b, echo, resume_timeout=10.0) as port:
            with ProxyThread(port, 100 * 1024, half_open=half_open) as proxy:
                async with b.connect(
                    proxy.port, reconnect=FAST, codec="raw", settings=WINDOW, autotune=False
                ) as conn:
                    assert conn.resumable
                    stream = await conn.open_stream()

                    async def read_back() -> None:
                        async for message in stream:
                            echoed.append(message)

                    async with b.tasks() as tasks:
                        tasks.start_soon(read_back)
                        for message in sent:
                            await stream.send(message)
                        await stream.aclose()
                    result["stats"] = conn.statistics()
                result["cuts"] = proxy.proxy.cuts

    backend.run(scenario, timeout=60)
    assert echoed == sent
    stats = result["stats"]
    assert result["cuts"] >= 20
    assert stats.reconnects >= 20 and stats.resumed_sessions == stats.reconnects
    assert stats.messages_retransmitted > 0
    # spec §15.5: one stream, so what is kept is at most its window
    assert 0 < stats.retained_bytes_peak <= WINDOW.stream_bytes


def test_a_tls_session_resumes_on_new_tls_connections(backend: Any) -> None:
    """spec §15.6 over TLS: each cut breaks a TLS record; the client makes a new TLS
    connection (its own handshake) and resumes, and the echo is exact."""
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    sent = [numbered(i, 5000) for i in range(200)]
    echoed: list[bytes] = []
    result: dict[str, Any] = {}

    async def scenario(b: Any) -> None:
        async with serving(b, echo, resume_timeout=10.0, ssl=server_ctx) as port:
            with ProxyThread(port, 100 * 1024) as proxy:
                async with b.connect(
                    proxy.port,
                    ssl=client_ctx,
                    server_hostname="localhost",
                    reconnect=FAST,
                    codec="raw",
                    settings=WINDOW,
                    autotune=False,
                ) as conn:
                    stream = await conn.open_stream()

                    async def read_back() -> None:
                        async for message in stream:
                            echoed.append(message)

                    async with b.tasks() as tasks:
                        tasks.start_soon(read_back)
                        await stream.send_many(sent)
                        await stream.aclose()
                    result["stats"] = conn.statistics()
                result["cuts"] = proxy.proxy.cuts

    backend.run(scenario, timeout=60)
    assert echoed == sent
    assert result["cuts"] >= 10
    assert result["stats"].reconnects >= 10


def test_a_stale_or_guessed_token_gets_session_unknown_and_disturbs_nothing(
    backend: Any,
) -> None:
    """spec §15.6, §15.9: a resumption with a token the server does not keep is refused
    with GOAWAY(SESSION_UNKNOWN); past MAX_FAILED_RESUMES from one address the answer is
    ENHANCE_YOUR_CALM, without a lookup; a session of another client goes on."""
    got: list[bytes] = []
    codes: list[int] = []

    async def scenario(b: Any) -> None:
        ended = b.Event()

        async def collect(stream: Any) -> None:
            async for message in stream:
                got.append(message)
            ended.set()

        async with (
            serving(b, collect, resume_timeout=10.0) as port,
            b.connect(port, reconnect=FAST, codec="raw", settings=WINDOW) as conn,
        ):
            stream = await conn.open_stream()
            await stream.send(b"before")
            for _ in range(MAX_FAILED_RESUMES + 1):
                codes.append(await in_thread(b, guess, port))
            await stream.send(b"after")
            await stream.aclose()
            await ended.wait()
            assert conn.statistics().reconnects == 0

    backend.run(scenario, timeout=20)
    assert codes == [ErrorCode.SESSION_UNKNOWN] * MAX_FAILED_RESUMES + [ErrorCode.ENHANCE_YOUR_CALM]
    assert got == [b"before", b"after"]


def guess(port: int) -> int:
    """Resume a session with a random token (a blocking socket); the code of the GOAWAY
    that answers."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as thief:
        hello = HelloFrame(Settings(), resume_token=secrets.token_bytes(16))
        thief.sendall(PREFACE + hello.encode())
        wire = b""
        while data := thief.recv(65536):
            wire += data
    frames = FrameDecoder(session=True).feed(wire[len(PREFACE) :])
    (goaway,) = [f for f in frames if isinstance(f, GoAwayFrame)]
    return goaway.code


def test_past_the_reconnect_deadline_send_fails_with_what_was_delivered(backend: Any) -> None:
    """spec §15.4, §15.6: when no new transport comes within the deadline, the stream
    fails with the count its peer reported consumed."""

    async def scenario(b: Any) -> None:
        async with serving(b, echo, resume_timeout=10.0) as port:
            with ProxyThread(port, 1 << 40) as proxy:
                async with b.connect(
                    proxy.port,
                    reconnect=Reconnect(deadline=0.5, initial_delay=0.05, max_delay=0.1),
                    codec="raw",
                ) as conn:
                    stream = await conn.open_stream()
                    await stream.send(b"one")
                    assert await stream.receive() == b"one"
                    proxy.proxy.accepting = False  # the peer is unreachable from now on
                    proxy.cut_now()
                    with pytest.raises(b.ConnectionLostError) as info:
                        for _ in range(1000):
                            await stream.send(b"x" * 1000)
                    assert "not resumed within 0.5 s" in str(info.value)
                    # only what the server reported consumed: no report yet, or "one"
                    assert info.value.delivered in (None, 0, 1)

    backend.run(scenario, timeout=20)


def test_a_server_forgets_a_session_after_its_resume_timeout(backend: Any) -> None:
    """spec §15.4: the acceptor keeps a session without transport for resume_timeout,
    then its streams fail."""
    failures: list[BaseException] = []

    async def scenario(b: Any) -> None:
        arrived = b.Event()
        failed = b.Event()

        async def hold(stream: Any) -> None:
            try:
                await stream.receive()
                arrived.set()
                await stream.receive()
            except b.ConnectionLostError as exc:
                failures.append(exc)
                failed.set()
                raise

        async with serving(b, hold, resume_timeout=0.3) as port:
            with ProxyThread(port, 1 << 40) as proxy, pytest.raises(b.ConnectionLostError):
                async with b.connect(
                    proxy.port,
                    reconnect=Reconnect(deadline=2.0, initial_delay=0.05),
                    codec="raw",
                ) as conn:
                    stream = await conn.open_stream()
                    await stream.send(b"one")
                    await arrived.wait()
                    proxy.proxy.accepting = False
                    proxy.cut_now()
                    await failed.wait()  # the server gave up first
                    await conn.ping()  # and the client at its own deadline

    backend.run(scenario, timeout=20)
    assert "did not resume the session within 0.3 s" in str(failures[0])


def test_streams_opened_during_a_cut_and_their_ends_survive_it(backend: Any) -> None:
    """spec §15.8 steps 3.4 and 4: a stream opened while there is no transport (its
    open_stream() waits for the resumption) is opened by the exchange, and END_STREAM
    lost in the cut is sent again; each stream's messages arrive once, and each handler
    sees its stream end."""
    seen: dict[int, list[bytes]] = {}

    async def scenario(b: Any) -> None:
        async def count(stream: Any) -> None:
            messages = [m async for m in stream]
            seen[stream.stream_id] = messages
            await stream.send(b"%d" % len(messages))

        async with serving(b, count, resume_timeout=10.0) as port:
            with ProxyThread(port, 1 << 40) as proxy:
                async with b.connect(proxy.port, reconnect=FAST, codec="raw") as conn:
                    first = await conn.open_stream()
                    await first.send(b"a")
                    assert await conn.ping() >= 0  # "a" is there
                    proxy.cut_now()
                    while conn.statistics().state != "resuming":  # the loss is noticed
                        assert conn.statistics().reconnects == 0  # not missed, then
                        await b.checkpoint()
                    second = await conn.open_stream()  # waits for the resumption
                    await second.send_many([b"b", b"c"])
                    await first.aclose()
                    await second.aclose()
                    assert await first.receive() == b"1"
                    assert await second.receive() == b"2"
                    assert conn.statistics().reconnects >= 1

    backend.run(scenario, timeout=20)
    assert sorted(seen.values()) == [[b"a"], [b"b", b"c"]]


def test_a_stream_opened_with_await_start_starts_where_the_receiver_says(
    backend: Any,
) -> None:
    """spec §15.10 (cold resume) through the layer: the receiver's ``start_at`` reaches
    the sender's ``started()``, and the sender sends what follows."""
    got: list[bytes] = []

    async def scenario(b: Any) -> None:
        async def resume_at_two(stream: Any) -> None:
            assert stream.awaits_start
            stream.start_at(2, 20)  # it holds messages 1 and 2 (20 bytes) already
            got.extend([m async for m in stream])

        async with (
            serving(b, resume_at_two, resume_timeout=10.0) as port,
            b.connect(port, reconnect=FAST, codec="raw") as conn,
        ):
            stream = await conn.open_stream(await_start=True)
            assert await stream.started() == (2, 20)
            await stream.send_many([b"three", b"four"])
            await stream.aclose()
            with pytest.raises(b.EndOfStream):
                await stream.receive()
            plain = await conn.open_stream()
            assert await plain.started() == (0, 0)  # at once for any other stream

    backend.run(scenario, timeout=20)
    assert got == [b"three", b"four"]


def test_closing_a_connection_between_transports_ends_it_at_once(backend: Any) -> None:
    """spec §15.4: with no transport there is nobody to say GOAWAY to: closing the
    connection while it reconnects stops reconnecting and fails its streams now, not at
    the reconnect deadline."""

    async def scenario(b: Any) -> None:
        async with serving(b, echo, resume_timeout=10.0) as port:
            with ProxyThread(port, 1 << 40) as proxy:
                async with b.connect(
                    proxy.port,
                    reconnect=Reconnect(deadline=60.0, initial_delay=0.01, max_delay=0.05),
                    codec="raw",
                ) as conn:
                    stream = await conn.open_stream()
                    await stream.send(b"one")
                    assert await stream.receive() == b"one"
                    proxy.proxy.accepting = False
                    proxy.cut_now()
                    while conn.statistics().state != "resuming":  # the loss is noticed
                        await b.checkpoint()
                    await conn.aclose()
                    assert conn.closed
                    with pytest.raises(b.ConnectionLostError):
                        await stream.receive()

    backend.run(scenario, timeout=20)


def test_a_unix_socket_session_resumes_each_time_its_transport_is_aborted(
    tmp_path: Any,
) -> None:
    """spec §15.4, §15.6 on a Unix socket (asyncio, whose connection exposes its
    transport): each abort of the client's transport (a loss without GOAWAY) is resumed
    on a new connection to the same path, once."""
    path = str(tmp_path / "flow.sock")

    async def scenario(b: Any) -> None:
        async with (
            b.unix_server(echo, path, resume_timeout=10.0, codec="raw"),
            b.unix_connect(path, reconnect=FAST, codec="raw") as conn,
        ):
            stream = await conn.open_stream()
            for i in range(5):
                await stream.send(b"%d" % i)
                assert await stream.receive() == b"%d" % i
                conn.transport.abort()
            await stream.send(b"last")
            assert await stream.receive() == b"last"
            stats = conn.statistics()
            assert (stats.reconnects, stats.resumed_sessions) == (5, 5)

    BACKENDS["asyncio"].run(scenario, timeout=20)


def test_a_keepalive_timeout_loses_the_transport_and_the_session_resumes() -> None:
    """spec §11, §15.4: a transport over which no PONG comes is lost, not the session
    (asyncio, whose connection exposes its transport: the client stops reading, so its
    keepalive PING goes unanswered); the client resumes on a new connection, and the
    echo that was stuck in the old one arrives once."""

    async def scenario(b: Any) -> None:
        async with (
            serving(b, echo, resume_timeout=10.0) as port,
            b.connect(
                port,
                reconnect=FAST,
                codec="raw",
                settings=Settings(keepalive_ms=100),
                ping_timeout=0.2,
            ) as conn,
        ):
            stream = await conn.open_stream()
            await stream.send(b"one")
            assert await stream.receive() == b"one"
            conn.transport.pause_reading()  # from here on, nothing reaches this side
            await stream.send(b"two")
            assert await stream.receive() == b"two"  # on the new connection
            stats = conn.statistics()
            assert (stats.reconnects, stats.resumed_sessions) == (1, 1)

    BACKENDS["asyncio"].run(scenario, timeout=20)


def test_a_receiver_that_never_says_where_starts_the_stream_from_the_beginning(
    backend: Any,
) -> None:
    """spec §15.10: the reference answers when the application first waits for a
    message on a stream opened with ``await_start``, from the beginning."""
    got: list[bytes] = []

    async def scenario(b: Any) -> None:
        async def plain(stream: Any) -> None:
            got.extend([m async for m in stream])  # no start_at(): its first wait starts it

        async with (
            serving(b, plain, resume_timeout=10.0) as port,
            b.connect(port, reconnect=FAST, codec="raw") as conn,
        ):
            stream = await conn.open_stream(await_start=True)
            assert await stream.started() == (0, 0)
            await stream.send(b"first")
            await stream.aclose()
            with pytest.raises(b.EndOfStream):
                await stream.receive()

    backend.run(scenario, timeout=20)
    assert got == [b"first"]


class ResumingAcceptor:
    """A session acceptor on a blocking socket in a thread (a bare sans-IO Connection):
    it grants a session, resets the first connection, takes the client's resumption on
    the second and answers it (SESSION, exchange) only once ``go`` is set."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.go = threading.Event()
        self.error: BaseException | None = None
        self.wire = b""  # what the client sent on the second connection
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ResumingAcceptor:
        self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.go.set()
        self.thread.join(10)
        self.listener.close()
        assert self.error is None, self.error

    def _run(self) -> None:
        try:
            self._serve()
        except BaseException as exc:  # reported by __exit__
            self.error = exc

    def _serve(self) -> None:
        self.listener.settimeout(10)
        core = Connection(Role.ACCEPTOR, session=True)
        first, _ = self.listener.accept()
        with first:
            first.settimeout(10)
            first.sendall(core.data_to_send())
            while core.session_token is None or core.has_data_to_send:
                core.receive_data(first.recv(65536), time.monotonic())
                first.sendall(core.data_to_send())
            # spec §15.4: lost without GOAWAY (a TCP reset)
            first.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        assert core.transport_lost()
        fresh = Connection(Role.ACCEPTOR, session=True)
        second, _ = self.listener.accept()
        with second:
            second.settimeout(10)
            second.sendall(fresh.data_to_send())
            while True:
                data = second.recv(65536)
                self.wire += data
                events = fresh.receive_data(data, time.monotonic())
                if any(isinstance(e, ResumeRequested) for e in events):
                    break
            self.go.wait(10)
            core.adopt(fresh, time.monotonic())  # SESSION, the exchange, a PING
            second.sendall(core.data_to_send())
            while data := second.recv(65536):  # until the client ends its side
                self.wire += data

    def frames(self) -> list[Any]:
        """The frames the client sent on its second connection."""
        return list(FrameDecoder(session=True).feed(self.wire[len(PREFACE) :]))


def test_closing_while_the_exchange_is_unanswered_says_this_side_closed_it() -> None:
    """spec §15.6: a GOAWAY sent before the peer's connection RESUME ends the session;
    the peer's SESSION and exchange that cross it are no protocol error of the peer's
    (asyncio: the connection that closed says so, not "peer broke the protocol")."""

    async def scenario(b: Any) -> None:
        with ResumingAcceptor() as peer:
            async with b.connect(peer.port, reconnect=FAST, codec="raw") as conn:
                while conn.statistics().reconnects == 0:  # the new transport's HELLO is out
                    await b.checkpoint()
                conn.close_soon()  # GOAWAY before the acceptor's SESSION and exchange
                peer.go.set()
                await conn.wait_closed()
                assert "closed by this side" in str(conn.close_reason)
        goaways = [f for f in peer.frames() if isinstance(f, GoAwayFrame)]
        assert [g.code for g in goaways] == [ErrorCode.NO_ERROR]  # it reached the peer

    BACKENDS["asyncio"].run(scenario, timeout=20)


def test_an_asyncio_connect_attempt_that_hangs_is_given_up_for_the_next() -> None:
    """Reconnect.attempt_timeout on asyncio, as test_resume_trio checks it on Trio: the
    first reconnect attempt never completes (a SYN lost in TCP's backoff); it is given up
    at attempt_timeout for a fresh one, within the deadline."""
    attempts: list[str] = []

    async def scenario(b: Any) -> None:
        loop = asyncio.get_running_loop()
        create_connection = loop.create_connection

        async def connect(*args: Any, **kwargs: Any) -> Any:
            if len(attempts) == 1:  # the first reconnect attempt: it never completes
                attempts.append("hung")
                await asyncio.Event().wait()
            attempts.append("connected")
            return await create_connection(*args, **kwargs)

        loop.create_connection = connect  # type: ignore[method-assign]
        policy = Reconnect(deadline=10.0, initial_delay=0.05, attempt_timeout=0.3)
        async with serving(b, echo, resume_timeout=10.0) as port:
            with ProxyThread(port, 1 << 40) as proxy:
                async with b.connect(proxy.port, reconnect=policy, codec="raw") as conn:
                    stream = await conn.open_stream()
                    await stream.send(b"one")
                    assert await stream.receive() == b"one"
                    proxy.cut_now()
                    await stream.send(b"two")
                    assert await stream.receive() == b"two"
                    assert attempts == ["connected", "hung", "connected"]
                    assert conn.statistics().reconnects == 1

    BACKENDS["asyncio"].run(scenario, timeout=20)
