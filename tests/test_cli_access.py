"""Who may connect to ``flowproto receive``, and how many (issue 12), as subprocess tests.

TLS and mutual TLS (certificates from ``trustme``), Unix sockets, the connection cap and the
idle timeout at a low descriptor limit, and the sender's retries when the receiver says
GOAWAY(OVERLOADED). The receiver listens on port 0 (or a socket in ``tmp_path``) and the
tests learn its address from its ``listening on`` line; every wait is bounded.
"""

from __future__ import annotations

import os
import queue
import signal
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio
import trustme
from click.testing import CliRunner

from flowproto.cli import main
from flowproto.trio import open_connection

TIMEOUT = 60
FLOWPROTO = [sys.executable, "-m", "flowproto"]
ENV = {**os.environ, "PYTHONIOENCODING": "utf-8"}


class Process:
    """A ``flowproto`` (or helper) subprocess whose stderr is read line by line."""

    def __init__(self, args: list[str], *, stdin: int | None = None) -> None:
        self.proc = subprocess.Popen(
            args,
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            encoding="utf-8",
            env=ENV,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.stderr: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.put(line)
        self.lines.put("")  # end of stderr

    def wait_for_line(self, prefix: str) -> str:
        """The first stderr line (from here on) that starts with ``prefix``."""
        while True:
            line = self.lines.get(timeout=TIMEOUT)
            self.stderr.append(line)
            if not line:
                raise AssertionError(f"exited before {prefix!r}: {''.join(self.stderr)}")
            if line.startswith(prefix):
                return line.rstrip("\n")

    def wait_for_text(self, text: str) -> str:
        """The first stderr line (from here on) that contains ``text``."""
        while True:
            line = self.lines.get(timeout=TIMEOUT)
            self.stderr.append(line)
            if not line:
                raise AssertionError(f"exited before {text!r}: {''.join(self.stderr)}")
            if text in line:
                return line.rstrip("\n")

    def finish(self, timeout: float = TIMEOUT) -> tuple[int, str, str]:
        """Wait for the exit: (status, stdout, all of stderr)."""
        assert self.proc.stdout is not None
        stdout = self.proc.stdout.read()
        status = self.proc.wait(timeout=timeout)
        self._reader.join(timeout=TIMEOUT)
        while not self.lines.empty():
            self.stderr.append(self.lines.get())
        return status, stdout, "".join(self.stderr)

    def interrupt(self) -> tuple[int, str, str]:
        """Ctrl-C, then :meth:`finish`."""
        self.proc.send_signal(signal.SIGINT)
        return self.finish()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=TIMEOUT)
        self._reader.join(timeout=TIMEOUT)
        for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()


@contextmanager
def receiver(
    *args: str, nofile: int | None = None, umask: int | None = None
) -> Iterator[tuple[Process, str]]:
    """``flowproto receive ARGS`` (with a descriptor limit of ``nofile``, a umask of
    ``umask``); yields the process and the address of its ``listening on`` line."""
    command = [*FLOWPROTO, "receive", *args]
    if nofile is not None:  # set in the child before exec: no preexec_fn in a threaded pytest
        command = [sys.executable, "-c", _WITH_NOFILE, str(nofile), *command]
    old = os.umask(umask) if umask is not None else None  # the child inherits it
    try:
        proc = Process(command)
    finally:
        if old is not None:
            os.umask(old)
    try:
        address = proc.wait_for_line("listening on ").removeprefix("listening on ")
        yield proc, address
    finally:
        proc.close()


_WITH_NOFILE = """
import os, resource, sys
_, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (int(sys.argv[1]), hard))
os.execv(sys.argv[2], sys.argv[2:])
"""


def send(address: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*FLOWPROTO, "send", "--connect", address, *args],
        capture_output=True,
        encoding="utf-8",
        env=ENV,
        check=False,
        timeout=TIMEOUT,
    )


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The sender failed with exactly one ``flowproto: error:`` line and no traceback."""
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("flowproto: error: "), result.stderr
    return lines[0]


@dataclass(frozen=True)
class Pki:
    """Certificate files: the CA, the receiver's (key apart), a sender's (key in the same
    file), another CA and a sender certificate of that other CA."""

    ca: Path
    server_cert: Path
    server_key: Path
    client: Path
    other_ca: Path
    other_client: Path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    ca, other = trustme.CA(), trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    files = Pki(
        d / "ca.pem",
        d / "server.pem",
        d / "server.key",
        d / "client.pem",
        d / "other-ca.pem",
        d / "other-client.pem",
    )
    ca.cert_pem.write_to_path(str(files.ca))
    for i, blob in enumerate(server.cert_chain_pems):
        blob.write_to_path(str(files.server_cert), append=i > 0)
    server.private_key_pem.write_to_path(str(files.server_key))
    ca.issue_cert("sender-1.example").private_key_and_cert_chain_pem.write_to_path(
        str(files.client)
    )
    other.cert_pem.write_to_path(str(files.other_ca))
    other.issue_cert("sender-1.example").private_key_and_cert_chain_pem.write_to_path(
        str(files.other_client)
    )
    return files


def tls_receiver_args(pki: Pki, *, mutual: bool) -> list[str]:
    args = ["--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key)]
    return [*args, "--tls-client-ca", str(pki.ca)] if mutual else args


# --- 1. TLS ------------------------------------------------------------------------------------


def test_a_file_sent_over_tls_arrives_byte_identical(pki: Pki, tmp_path: Path) -> None:
    data = os.urandom(300_000)
    (tmp_path / "in.bin").write_bytes(data)
    out = tmp_path / "out.bin"
    args = [*tls_receiver_args(pki, mutual=False), "--raw", "--once", "-q", "--output", str(out)]
    with receiver("--listen", "127.0.0.1:0", *args) as (recv, address):
        sent = send(address, "--tls-ca", str(pki.ca), "--input", str(tmp_path / "in.bin"), "-q")
        status, _, stderr = recv.finish()
    assert sent.returncode == 0, sent.stderr
    assert status == 0, stderr
    assert out.read_bytes() == data


def test_mutual_tls_lets_no_byte_of_an_unverified_sender_into_the_output(
    pki: Pki, tmp_path: Path
) -> None:
    """Issue 12, "who may connect": a sender without a certificate the receiver trusts,
    or without TLS at all, is refused in the handshake, gets one clear line and exit 1,
    and nothing of it reaches --output; a sender with a good certificate then gets in."""
    (tmp_path / "evil.txt").write_bytes(b"INJECTED\n" * 1000)
    (tmp_path / "real.txt").write_bytes(b"the real transfer\n" * 1000)
    out = tmp_path / "out.txt"
    args = [*tls_receiver_args(pki, mutual=True), "--raw", "-q", "--output", str(out)]
    evil = ["--input", str(tmp_path / "evil.txt"), "-q", "--retry-for", "0"]
    with receiver("--listen", "127.0.0.1:0", *args) as (recv, address):
        no_cert = one_error_line(send(address, "--tls-ca", str(pki.ca), *evil))
        wrong_ca = one_error_line(
            send(address, "--tls-ca", str(pki.ca), "--tls-cert", str(pki.other_client), *evil)
        )
        plain = one_error_line(send(address, *evil))
        good = send(
            address,
            "--tls-ca",
            str(pki.ca),
            "--tls-cert",
            str(pki.client),
            "--input",
            str(tmp_path / "real.txt"),
            "-q",
        )
        assert good.returncode == 0, good.stderr
        status, _, stderr = recv.interrupt()
    assert status == 130, stderr
    assert "Traceback" not in stderr
    assert out.read_bytes() == (tmp_path / "real.txt").read_bytes()  # no INJECTED anywhere
    for line in (no_cert, wrong_ca):
        assert f"cannot connect to {address}: " in line, line
        assert "does it require a client certificate signed by a CA it trusts?" in line, line
    assert plain == (
        f"flowproto: error: cannot connect to {address}: the receiver closed the connection "
        "in the handshake, before its HELLO: does it require TLS? (--tls-ca)"
    )


def test_a_sender_that_does_not_trust_the_receiver_stops_with_one_line(pki: Pki) -> None:
    args = [*tls_receiver_args(pki, mutual=False), "--raw", "-q"]
    with receiver("--listen", "127.0.0.1:0", *args) as (_, address):
        line = one_error_line(send(address, "--tls-ca", str(pki.other_ca), "--count", "5"))
        host_mismatch = one_error_line(
            send(
                address,
                "--tls-ca",
                str(pki.ca),
                "--tls-server-name",
                "elsewhere.example",
                "--count",
                "5",
            )
        )
    assert "TLS: certificate verify failed: unable to get local issuer certificate" in line
    assert "certificate verify failed: Hostname mismatch" in host_mismatch


def test_a_tls_sender_to_a_plain_receiver_stops_with_one_line(pki: Pki) -> None:
    with receiver("--listen", "127.0.0.1:0", "--raw", "-q") as (_, address):
        line = one_error_line(send(address, "--tls-ca", str(pki.ca), "--count", "5"))
    assert "WRONG_VERSION_NUMBER" in line and "does not speak TLS" in line, line


def test_the_cli_handshake_timeout_default_is_the_librarys() -> None:
    from flowproto.cli._access import DEFAULT_HANDSHAKE_TIMEOUT
    from flowproto.trio import DEFAULT_HANDSHAKE_TIMEOUT as LIBRARY_DEFAULT

    assert DEFAULT_HANDSHAKE_TIMEOUT == LIBRARY_DEFAULT


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["receive", "--listen", ":0", "--tls-key", "{ca}"], "--tls-key needs --tls-cert"),
        (["receive", "--listen", ":0", "--tls-client-ca", "{ca}"], "needs --tls-cert"),
        (["receive", "--listen", ":0", "--tls-cert", "{ca}"], "is not a PEM certificate and key"),
        (["receive", "--listen", ":0", "--tls-cert", "{missing}"], "does not exist"),
        (["send", "--connect", "h:1", "--count", "1", "--tls-key", "{ca}"], "needs --tls-cert"),
        (["send", "--connect", "h:1", "--count", "1", "--tls-ca", "{key}"], "no PEM certificate"),
        (["send", "--connect", "unix:/x.sock", "--count", "1", "--tls"], "--tls-server-name"),
        (["receive", "--listen", "unix:"], "unix:PATH needs a path"),
    ],
)
def test_tls_and_unix_options_are_checked_before_anything_starts(
    pki: Pki, args: list[str], complaint: str
) -> None:
    files = {"ca": str(pki.ca), "key": str(pki.server_key), "missing": "/nonexistent.pem"}
    result = CliRunner().invoke(main, [a.format(**files) for a in args])
    assert result.exit_code == 2, result.output
    assert complaint in result.output


# --- 2. Unix sockets ---------------------------------------------------------------------------


def test_a_file_sent_over_a_unix_socket_arrives_and_the_socket_is_private_and_removed(
    tmp_path: Path,
) -> None:
    """--listen unix:PATH: the file is 0600 even under umask 000, and gone at exit."""
    data = os.urandom(200_000)
    (tmp_path / "in.bin").write_bytes(data)
    out, path = tmp_path / "out.bin", tmp_path / "fp.sock"
    args = ["--listen", f"unix:{path}", "--raw", "-q", "--output", str(out)]
    with receiver(*args, umask=0) as (recv, address):
        assert address == f"unix:{path}"
        st = os.lstat(path)
        assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
        sent = send(address, "--input", str(tmp_path / "in.bin"), "-q")
        assert sent.returncode == 0, sent.stderr
        status, _, stderr = recv.interrupt()
    assert status == 130, stderr
    assert out.read_bytes() == data
    assert not path.exists()


def test_the_receiver_replaces_a_stale_socket_but_no_file_and_no_live_socket(
    tmp_path: Path,
) -> None:
    regular = tmp_path / "notes.txt"
    regular.write_text("keep me")
    result = subprocess.run(
        [*FLOWPROTO, "receive", "--listen", f"unix:{regular}"],
        capture_output=True,
        encoding="utf-8",
        env=ENV,
        timeout=TIMEOUT,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr == (
        f"flowproto: error: cannot listen on unix:{regular}: {regular} exists and is not a "
        "socket; not replacing it\n"
    )
    assert regular.read_text() == "keep me"

    path = tmp_path / "fp.sock"
    with receiver("--listen", f"unix:{path}", "-q") as (first, address):
        second = subprocess.run(
            [*FLOWPROTO, "receive", "--listen", address],
            capture_output=True,
            encoding="utf-8",
            env=ENV,
            timeout=TIMEOUT,
            check=False,
        )
        assert second.returncode == 1
        assert "another server is listening on" in second.stderr
        assert path.exists()  # the first receiver's socket is untouched
        first.proc.kill()  # kill -9: no cleanup, the socket file stays behind, stale
        first.proc.wait(timeout=TIMEOUT)
    assert path.exists()
    with receiver("--listen", f"unix:{path}", "--raw", "--once", "-q") as (third, address):
        sent = send(address, "--count", "10")
        assert sent.returncode == 0, sent.stderr
        assert third.finish()[0] == 0


# --- 3. caps: connections, idle connections, descriptors ----------------------------------------

#: ``python -c`` this, PORT COUNT REPORT_AT: COUNT connections that complete the flowproto
#: handshake and then open no stream, ever (what an attacker holds, or a stuck client). It
#: prints "held N" once N are held, and "done held H refused R" once every one is held or
#: refused (GOAWAY OVERLOADED); it then keeps what it holds until it is killed.
_IDLE_CLIENTS = """
import sys, trio
from flowproto.trio import open_connection

async def main(port: int, count: int, report_at: int) -> None:
    tally = {"held": 0, "refused": 0}

    def settled(what: str) -> None:
        tally[what] += 1
        if what == "held" and tally["held"] == report_at:
            print(f"held {report_at}", file=sys.stderr, flush=True)
        if tally["held"] + tally["refused"] == count:
            done = f"done held {tally['held']} refused {tally['refused']}"
            print(done, file=sys.stderr, flush=True)

    async def one() -> None:
        try:
            async with open_connection("127.0.0.1", port, handshake_timeout=60):
                settled("held")
                await trio.sleep_forever()
        except Exception:
            settled("refused")

    async with trio.open_nursery() as nursery:
        for _ in range(count):
            nursery.start_soon(one)

trio.run(main, *map(int, sys.argv[1:]))
"""


def idle_clients(address: str, count: int, report_at: int) -> Process:
    port = address.rsplit(":", 1)[1]
    return Process([sys.executable, "-c", _IDLE_CLIENTS, port, str(count), str(report_at)])


def test_idle_clients_at_a_low_descriptor_limit_do_not_keep_a_real_sender_out(
    tmp_path: Path,
) -> None:
    """Issue 12, defect 4: at ``ulimit -n 128``, 150 clients that handshake and then idle.
    The default --max-connections, (128 - 64) // 2 = 32, holds the receiver's descriptors
    below the limit: 32 are served, the other 118 are refused with GOAWAY(OVERLOADED), and
    the idle timeout frees the 32, so the real sender (retrying) delivers everything.
    The receiver prints no traceback and a bounded number of lines."""
    out = tmp_path / "out.bin"
    args = ["--listen", "127.0.0.1:0", "--raw", "-q", "--output", str(out), "--idle-timeout", "3"]
    with receiver(*args, nofile=128) as (recv, address):
        holders = idle_clients(address, count=150, report_at=32)
        try:
            assert holders.wait_for_line("done ") == "done held 32 refused 118"
            sent = send(address, "--count", "2000", "--size", "100", "--raw", "-q")
        finally:
            holders.close()
        status, _, stderr = recv.interrupt()
    assert sent.returncode == 0, sent.stderr
    assert "the receiver confirmed 2000 consumed" in sent.stderr
    assert status == 130, stderr
    assert "Traceback" not in stderr
    assert len(stderr.splitlines()) <= 10, stderr
    assert out.stat().st_size == 2000 * 100


def test_out_of_descriptors_the_receiver_backs_off_with_one_line_and_no_traceback(
    tmp_path: Path,
) -> None:
    """Issue 12, defect 4 as reported (207 EMFILE tracebacks in 10 s): a cap set above
    the descriptor limit lets accept() run out of descriptors. It backs off and says so
    once per 10 s, and once the idle timeout frees descriptors the real sender, waiting
    in the listen backlog, is accepted and delivers everything."""
    args = ["--listen", "127.0.0.1:0", "--raw", "-q", "--idle-timeout", "3"]
    with receiver(*args, "--max-connections", "1000", nofile=128) as (recv, address):
        holders = idle_clients(address, count=150, report_at=100)
        try:
            holders.wait_for_line("held 100")
            sent = send(address, "--count", "2000", "--size", "100", "--raw", "-q")
        finally:
            holders.close()
        status, _, stderr = recv.interrupt()
    assert sent.returncode == 0, sent.stderr
    assert status == 130, stderr
    assert "Traceback" not in stderr
    emfile = [line for line in stderr.splitlines() if "accept failed: EMFILE" in line]
    assert 1 <= len(emfile) <= 2, stderr  # one line per 10 s, however many failures
    assert len(stderr.splitlines()) <= 10, stderr


# --- 4. the sender retries a receiver that is overloaded ----------------------------------------


def test_fifty_senders_at_once_under_a_4_mib_budget_all_complete_unrefused() -> None:
    """Issue 12, defect 5 as reported (47 of 50 refused): the receiver's 4 MiB holds the 50
    floors (64 KiB for 32 KiB messages), so none is refused; those that find the room lent
    out wait for it (spec §8.9 B2) and every message arrives. The 50 senders are library
    clients in this process, all connecting at once, each sending 100 messages."""

    async def one(host: str, port: int) -> int:
        async with open_connection(host, port, codec="raw", handshake_timeout=TIMEOUT) as conn:
            stream = await conn.open_stream()
            for _ in range(10):
                await stream.send_many([b"m" * 1000] * 10)
            await stream.aclose()
            async for _ in stream:
                pass
            return stream.statistics().delivered or 0

    async def fifty(address: str) -> list[int]:
        host, port = address.rsplit(":", 1)
        delivered: list[int] = []

        async def run() -> None:
            delivered.append(await one(host, int(port)))

        with trio.fail_after(TIMEOUT):
            async with trio.open_nursery() as nursery:
                for _ in range(50):
                    nursery.start_soon(run)
        return delivered

    args = ["--listen", "127.0.0.1:0", "--raw", "-q", "--memory-budget", "4194304"]
    with receiver(*args, "--max-message", "32768") as (recv, address):
        delivered = trio.run(fifty, address)
        status, _, stderr = recv.interrupt()
    assert delivered == [100] * 50
    assert status == 130, stderr
    assert "received 5000 messages" in stderr, stderr
    assert "refused" not in stderr and "Traceback" not in stderr, stderr


def test_twenty_senders_under_a_4_mib_budget_and_a_cap_of_3_connections_all_complete() -> None:
    """Issue 12, defect 5: refused senders retry (spec §10.1: OVERLOADED means nothing was
    processed) with backoff, one line per retry, and all complete in bounded time.

    Two senders that wait on stdin fill the 4 MiB budget (2 MiB each: the floor window of
    1 MiB messages), the third connection slot is refused by the budget, the rest by the
    cap, so every one of the twenty is refused at least once before the two let go."""
    args = ["--listen", "127.0.0.1:0", "--raw", "--memory-budget", "4194304"]
    with receiver(*args, "--max-connections", "3") as (recv, address):
        hold = [*FLOWPROTO, "send", "--connect", address, "--input", "-", "--lines", "--raw", "-q"]
        holders = [Process(hold, stdin=subprocess.PIPE) for _ in range(2)]
        senders: list[Process] = []
        try:
            recv.wait_for_text("| streams 2")  # both hold a connection and a stream
            give_up = send(address, "--count", "10", "--raw", "-q", "--retry-for", "0")
            line = one_error_line(give_up)
            assert f"{address} refused the connection" in line and "OVERLOADED" in line, line

            command = [*FLOWPROTO, "send", "--connect", address, "--count", "100"]
            for _ in range(20):
                senders.append(Process([*command, "--size", "1000", "--raw", "-q"]))
            for sender in senders:
                sender.wait_for_line(f"flowproto: {address} is overloaded (")
            for holder in holders:
                assert holder.proc.stdin is not None
                holder.proc.stdin.close()  # end of input: the holder finishes
            for holder in holders:
                assert holder.finish()[0] == 0
            results = [sender.finish(timeout=120) for sender in senders]
        finally:
            for proc in holders + senders:
                proc.close()
        status, _, stderr = recv.interrupt()
    for sender_status, _, sender_stderr in results:
        assert sender_status == 0, sender_stderr
        assert "the receiver confirmed 100 consumed" in sender_stderr
        retries = [r for r in sender_stderr.splitlines() if " is overloaded (" in r]
        assert retries and all(
            r.startswith(
                f"flowproto: {address} is overloaded (peer closed the connection: "
                "GOAWAY OVERLOADED ("
            )
            and f"retry {i} in " in r
            for i, r in enumerate(retries, 1)
        ), sender_stderr
    reasons = "".join(r[2] for r in results)
    assert "memory budget exhausted" in reasons  # the slot the cap left, refused by the budget
    assert status == 130, stderr
    assert "received 2000 messages" in stderr
    assert "Traceback" not in stderr
