"""``flowproto send/receive --backend asyncio``: the commands on the asyncio layer, each
side on either backend, as ``python -m flowproto`` subprocesses on 127.0.0.1."""

from __future__ import annotations

import json
import os
import random
import signal
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from cli_helpers import TIMEOUT, flowproto, receiver, run_flowproto, script


@pytest.mark.parametrize(
    ("sender", "receiving"),
    [("asyncio", "asyncio"), ("asyncio", "trio"), ("trio", "asyncio")],
)
def test_send_and_receive_across_backends(sender: str, receiving: str, tmp_path: Path) -> None:
    with receiver(
        "--backend", receiving, "--once", "--json", "--window-messages", "16", "--no-autotune",
        cwd=tmp_path,
    ) as (r, port):  # fmt: skip
        sent = run_flowproto(
            "send", "--connect", f"127.0.0.1:{port}", "--count", "5000", "--size", "200",
            "--streams", "3", "--json", "--backend", sender,
            cwd=tmp_path,
        )  # fmt: skip
        assert sent.returncode == 0, sent.stderr
        status, out, err = r.finish()
    assert status == 0, err
    summary = json.loads(sent.stdout)
    assert summary["messages"] == summary["delivered"] == 5000
    assert summary["bytes"] == 5000 * 200
    assert summary["failed_streams"] == []
    got = json.loads(out)
    assert (got["messages"], got["bytes"], got["streams"]) == (5000, 5000 * 200, 3)
    assert got["buffered_peak_messages"] <= 16  # the window (spec §8.4)


@pytest.mark.parametrize(
    ("sender", "receiving"),
    [("asyncio", "asyncio"), ("asyncio", "trio"), ("trio", "asyncio")],
)
def test_a_partial_output_is_continued_across_backends(
    sender: str, receiving: str, tmp_path: Path
) -> None:
    """spec §15.10 (cold resume): a receiver started on --output FILE whose FILE.partial
    holds the input's first bytes (left by a receiver that stopped) starts the stream
    after them, and ``send --input`` seeks there: the file ends whole, and only the rest
    crossed the connection. Any layer on either side."""
    data = random.Random(47).randbytes(1_000_000)
    held = 100_001  # not a multiple of --chunk-size
    (tmp_path / "in.bin").write_bytes(data)
    (tmp_path / "out.bin.partial").write_bytes(data[:held])
    with receiver(
        "--backend", receiving, "--once", "--json", "-q", "--raw", "--output", "out.bin",
        cwd=tmp_path,
    ) as (r, port):  # fmt: skip
        sent = run_flowproto(
            "send", "--connect", f"127.0.0.1:{port}", "--raw", "--input", "in.bin", "--json",
            "-q", "--backend", sender,
            cwd=tmp_path,
        )  # fmt: skip
        assert sent.returncode == 0, sent.stderr
        status, out, err = r.finish()
    assert status == 0, err
    assert f"resuming stream 1 after its {held} bytes held" in err
    assert f"resuming after the {held} bytes the receiver's output holds" in sent.stderr
    assert (tmp_path / "out.bin").read_bytes() == data
    assert not (tmp_path / "out.bin.partial").exists()
    summary = json.loads(sent.stdout)
    assert summary["resumed_at_bytes"] == held
    assert summary["bytes"] == len(data) - held
    got = json.loads(out)
    assert got["bytes"] == len(data) - held
    assert got["output_files"]["complete"] == 1


@pytest.mark.parametrize(
    ("options", "skipped"),
    [((), 0), (("--resume-timeout", "0"), 3)],
    ids=["sessions", "resume-timeout-0"],
)
def test_conformance_passes_strictly_against_an_asyncio_receiver(
    tmp_path: Path, options: tuple[str, ...], skipped: int
) -> None:
    """CI's run against `flowproto receive --backend asyncio`, minus the timers. It offers
    sessions (spec §15) unless --resume-timeout is 0: then the three cases that need one
    are skipped, saying so."""
    import re

    from test_cli import receiver as receive_process

    with receive_process("--quiet", "--backend", "asyncio", *options, cwd=tmp_path) as r:
        proc = run_flowproto(
            "conformance", f"127.0.0.1:{r.port}", "--strict", "--no-timers", cwd=tmp_path
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert re.search(rf"\n(\d+) passed, 0 failed, {skipped} skipped", proc.stdout)
        assert proc.stdout.count("the peer's HELLO offers no sessions") == skipped


def test_conformance_passes_strictly_against_asyncio_senders(tmp_path: Path) -> None:
    """CI's sender run: one `flowproto send --backend asyncio --streams 3` per case."""
    from test_conformance import SENDER_CASES, check_senders

    _, stdout, _ = check_senders(
        tmp_path, "--count", "100", "--streams", "3", "-q", "--backend", "asyncio"
    )
    assert f"{len(SENDER_CASES)} passed, 0 failed" in stdout


# --- every option of #15 under --backend asyncio ---------------------------------------------


def transfer(
    tmp_path: Path, receiving: list[str], sending: list[str], stdin: bytes | None = None
) -> tuple[str, str]:
    """``receive --once RECEIVING`` and ``send SENDING`` to it, both exiting 0: the
    sender's and the receiver's stdout."""
    with receiver("--once", "-q", *receiving, cwd=tmp_path) as (r, port):
        sent = run_flowproto(
            "send", "--connect", f"127.0.0.1:{port}", "-q", *sending, cwd=tmp_path, stdin=stdin
        )
        status, out, err = r.finish()
    assert sent.returncode == 0, sent.stderr
    assert status == 0, err
    return sent.stdout, out


def test_receive_rate_holds_on_asyncio(tmp_path: Path) -> None:
    """--rate R: message n passes no earlier than n / R after the first (flowproto.Pacer),
    so over the receiver's own measured span, messages <= R * seconds + 1. No wall-clock
    bound: the span is what the receiver measured, whatever the machine's load."""
    _, out = transfer(
        tmp_path,
        ["--backend", "asyncio", "--rate", "400", "--json"],
        ["--count", "600", "--size", "100"],
    )
    got = json.loads(out)
    assert got["messages"] == 600
    assert got["messages"] <= 400 * got["seconds"] + 1 + 1e-3  # the rate held


@pytest.mark.parametrize("receiving", ["trio", "asyncio"])
def test_send_rate_and_duration_hold_on_asyncio(tmp_path: Path, receiving: str) -> None:
    """send --rate R --duration D: at most R * D + 1 messages (the pacer's bound), all of
    them delivered."""
    sent, out = transfer(
        tmp_path,
        ["--backend", receiving, "--json"],
        ["--rate", "300", "--duration", "1", "--size", "100", "--json", "--backend", "asyncio"],
    )
    summary = json.loads(sent)
    assert 0 < summary["messages"] <= 300 * 1 + 1
    assert summary["delivered"] == summary["messages"] == json.loads(out)["messages"]


@pytest.mark.parametrize("receiving", ["trio", "asyncio"])
def test_asyncio_sends_a_file_and_its_lines_byte_identical(tmp_path: Path, receiving: str) -> None:
    source = tmp_path / "in.bin"
    source.write_bytes(os.urandom(700_001))
    out = tmp_path / "out.bin"
    sent, _ = transfer(
        tmp_path,
        ["--backend", receiving, "--raw", "--output", str(out)],
        ["--input", str(source), "--raw", "--chunk-size", "1000", "--json", "--backend", "asyncio"],
    )
    assert out.read_bytes() == source.read_bytes()
    assert json.loads(sent)["delivered"] == 701
    text = "".join(f"line {i}\n" for i in range(500))
    lines_out = tmp_path / "lines.txt"
    transfer(
        tmp_path,
        ["--backend", receiving, "--output", str(lines_out)],
        ["--input", "-", "--lines", "--backend", "asyncio"],
        stdin=text.encode(),
    )
    # msgpack mode: each line is a string message, which the receiver writes as a line
    assert lines_out.read_text(encoding="utf-8") == text


def test_latency_and_memory_budget_in_the_asyncio_summary(tmp_path: Path) -> None:
    """--latency's percentiles and the memory budget's peak (never past it, spec §8.9) in
    the asyncio receiver's summary; --json-lines on asyncio: test_cli_observability."""
    budget = 4 << 20
    _, out = transfer(
        tmp_path,
        ["--backend", "asyncio", "--latency", "--memory-budget", str(budget), "--json"],
        ["--size", "100", "--count", "2000", "--streams", "2", "--backend", "trio"],
    )
    got = json.loads(out)
    assert got["messages"] == 2000
    latency = got["latency_ms"]
    assert set(latency) == {"p50", "p99", "max"}
    assert 0 <= latency["p50"] <= latency["p99"] <= latency["max"]
    assert got["memory_budget"]["bytes"] == budget
    assert 0 < got["memory_budget"]["peak_committed_bytes"] <= budget
    assert got["memory_budget"]["refused_connections"] == 0


def _families(url: str) -> dict[str, str]:
    """The metric families of one scrape and their types."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
        assert response.status == 200
        text = response.read().decode()
    return {f.name: f.type for f in text_string_to_metric_families(text)}


def _receiver_families(tmp_path: Path, backend: str) -> dict[str, str]:
    """A receiver's families once a sender's stream was consumed and ended."""
    with receiver("--backend", backend, "--metrics-port", "0", "-q", cwd=tmp_path) as (r, port):
        url = r.wait_for(r"^metrics on (http://\S+)$").group(1)
        sent = run_flowproto(
            "send", "--connect", f"127.0.0.1:{port}", "--count", "100", "-q", cwd=tmp_path
        )
        assert sent.returncode == 0, sent.stderr
        families = _families(url)
        r.proc.send_signal(signal.SIGTERM)
        status, _, err = r.finish()
    assert status == 143, err
    return families


def _sender_families(tmp_path: Path, backend: str) -> dict[str, str]:
    """A sender's families while it sends to a slow receiver."""
    with receiver("--rate", "200", "--once", "-q", cwd=tmp_path) as (r, port):
        with flowproto(
            "send", "--connect", f"127.0.0.1:{port}", "--count", "400", "--metrics-port", "0",
            "-q", "--backend", backend,
            cwd=tmp_path,
        ) as s:  # fmt: skip
            url = s.wait_for(r"^metrics on (http://\S+)$").group(1)
            families = _families(url)
            status, _, err = s.finish()
        assert status == 0, err
        r.finish()
    return families


def test_metrics_port_serves_the_same_families_on_both_backends(tmp_path: Path) -> None:
    """--metrics-port under asyncio: the same metric families, of the same types, as Trio's,
    on both commands; and only /metrics is served."""
    pytest.importorskip("prometheus_client")
    trio_receiving = _receiver_families(tmp_path, "trio")
    asyncio_receiving = _receiver_families(tmp_path, "asyncio")
    assert asyncio_receiving == trio_receiving
    assert asyncio_receiving["flowproto_window_messages"] == "gauge"
    assert asyncio_receiving["flowproto_messages"] == "counter"
    assert _sender_families(tmp_path, "asyncio") == _sender_families(tmp_path, "trio")


def test_the_asyncio_metrics_responder_answers_only_metrics(tmp_path: Path) -> None:
    pytest.importorskip("prometheus_client")
    with receiver("--backend", "asyncio", "--metrics-port", "0", "-q", cwd=tmp_path) as (r, _):
        url = r.wait_for(r"^metrics on (http://\S+)$").group(1)
        assert "flowproto_info" in _families(url)
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(url.rsplit("/", 1)[0] + "/", timeout=TIMEOUT)
        info.value.close()
        assert info.value.code == 404
        request = urllib.request.Request(url, data=b"x", method="POST")
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(request, timeout=TIMEOUT)
        info.value.close()
        assert info.value.code == 405
        r.proc.send_signal(signal.SIGINT)
        status, _, err = r.finish()
    assert status == 130, err
    assert "flowproto: interrupted (SIGINT)" in err


@pytest.mark.parametrize("backend", ["trio", "asyncio"])
def test_sigint_the_moment_a_receiver_listens_stops_it_with_its_summary(
    backend: str, tmp_path: Path
) -> None:
    """Ctrl-C under asyncio used to exit 130 with no summary; and on either loop, a signal
    right after "listening on" came before the signals were caught. Both print the summary
    now: the signals are caught before the line that says to connect."""
    with receiver("--backend", backend, "--json", "-q", cwd=tmp_path) as (r, _):
        r.proc.send_signal(signal.SIGINT)  # at once: "listening on" was just read
        status, out, err = r.finish()
    assert status == 130, err
    summary = json.loads(out)
    assert summary["interrupted"] is True and summary["signal"] == "SIGINT"
    assert summary.get("backend", "trio") == backend
    assert "Traceback" not in err


def test_a_connection_the_memory_budget_refuses_ends_receive_once_as_on_trio(
    tmp_path: Path,
) -> None:
    """spec §8.9: a budget too small for one connection's floor refuses it with
    GOAWAY(OVERLOADED); --once ends with that connection, as an error, on both backends."""
    for backend in ("trio", "asyncio"):
        with receiver(
            "--backend", backend, "--once", "--memory-budget", "1MiB", "--json", "-q",
            cwd=tmp_path,
        ) as (r, port):  # fmt: skip
            sent = run_flowproto(
                "send", "--connect", f"127.0.0.1:{port}", "--count", "10", "-q",
                "--retry-for", "0", cwd=tmp_path,
            )  # fmt: skip
            status, out, err = r.finish()
        assert sent.returncode == 1, sent.stderr
        assert status == 1, err
        got = json.loads(out)
        assert got["connections"] == 1 and got["messages"] == 0
        assert got["memory_budget"]["refused_connections"] == 1
        assert "memory budget" in got["problems"][0]


@pytest.mark.parametrize(
    ("sender", "receiving"),
    [("asyncio", "asyncio"), ("asyncio", "trio"), ("trio", "asyncio")],
)
def test_a_transfer_cut_every_100_kb_resumes_across_backends(
    sender: str, receiving: str, tmp_path: Path
) -> None:
    """spec §15 end to end, either command on either layer: 5 MB over two streams
    through a proxy that cuts the TCP connection every 100 KB (both ways counted); every
    loss is resumed, the receiver consumes each message once, and both summaries agree
    on the number of resumptions."""
    from test_cli_resume import cut_proxy

    with receiver(
        "--backend", receiving, "--once", "--json", "-q", cwd=tmp_path
    ) as (r, port):  # fmt: skip
        proxy, proxy_port = cut_proxy(port, 100_000, tmp_path)
        try:
            sent = run_flowproto(
                "send", "--connect", f"127.0.0.1:{proxy_port}", "--count", "5000",
                "--size", "1000", "--streams", "2", "--json", "-q", "--backend", sender,
                cwd=tmp_path,
            )  # fmt: skip
            status, out, err = r.finish()
        finally:
            proxy.close()
    assert sent.returncode == 0, sent.stderr
    summary = json.loads(sent.stdout)
    assert summary["reconnects"] >= 20, summary
    assert summary["messages"] == summary["delivered"] == 5000
    assert summary["failed_streams"] == []
    assert status == 0, err
    got = json.loads(out)
    assert (got["messages"], got["bytes"], got["streams"]) == (5000, 5000 * 1000, 2)
    assert got["resumed"] == summary["reconnects"]
    assert got["connections"] == 1


def test_asyncio_send_no_reconnect_fails_at_the_first_cut_and_says_what_was_confirmed(
    tmp_path: Path,
) -> None:
    """``send --backend asyncio --no-reconnect``: no session is asked for, so a lost
    connection fails the transfer (exit 1), naming what the receiver confirmed."""
    from test_cli_resume import cut_proxy

    with receiver("--backend", "asyncio", "-q", cwd=tmp_path) as (_, port):
        proxy, proxy_port = cut_proxy(port, 500_000, tmp_path)
        try:
            sent = run_flowproto(
                "send", "--connect", f"127.0.0.1:{proxy_port}", "--count", "4000",
                "--size", "1000", "-q", "--no-reconnect", "--backend", "asyncio",
                cwd=tmp_path,
            )  # fmt: skip
        finally:
            proxy.close()
    assert sent.returncode == 1
    assert "flowproto: error:" in sent.stderr
    assert "confirmed" in sent.stderr
    assert "resumed" not in sent.stderr


@pytest.mark.parametrize("backend", ["trio", "asyncio"])
@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_retry_for_waits_out_an_overloaded_receiver_and_a_stop_ends_the_wait(
    tmp_path: Path, backend: str, stop: signal.Signals
) -> None:
    """spec §10.1: GOAWAY(OVERLOADED) means nothing was processed, so ``send`` retries
    within ``--retry-for`` (a line per retry); asyncio used to fail at once. A stop signal
    during the backoff ends it at once, with the summary and 128 + its number (Trio used
    to leave SIGTERM there to Python: no summary)."""
    with receiver("--max-connections", "1", "-q", cwd=tmp_path) as (_, port):
        address = f"127.0.0.1:{port}"
        send = ("send", "--backend", backend, "--connect", address, "--count", "10")
        with flowproto(
            "send", "--connect", address, "--rate", "2", "--count", "1000", cwd=tmp_path
        ) as holder:
            holder.wait_for(r"delivered [1-9]\d*$")  # it holds the one connection
            give_up = run_flowproto(*send, "-q", "--retry-for", "0", cwd=tmp_path)
            assert give_up.returncode == 1, give_up.stderr
            line = give_up.stderr.strip().splitlines()[-1]
            assert f"{address} refused the connection" in line and "OVERLOADED" in line, line

            with flowproto(*send, "--json", "--retry-for", "60", cwd=tmp_path) as stopped:
                stopped.wait_for(rf"^flowproto: {address} is overloaded \(.*retry 1 in ")
                stopped.proc.send_signal(stop)
                status, out, err = stopped.finish(timeout=10)  # not after the backoff
            assert status == 128 + stop, err
            summary = json.loads(out)
            assert summary["interrupted"] is True and summary["signal"] == stop.name, summary
            assert summary["messages"] == 0, summary

            with flowproto(*send, "--retry-for", "60", cwd=tmp_path) as waiting:
                waiting.wait_for(rf"^flowproto: {address} is overloaded \(.*retry 1 in ")
                holder.proc.send_signal(signal.SIGINT)  # the slot frees
                assert holder.finish()[0] == 130
                status, _, err = waiting.finish()
    assert status == 0, err
    assert "the receiver confirmed 10 consumed" in err, err


#: A listener that accepts one connection, says so, and never answers it.
MUTE_LISTENER = """
import socket, sys, time
server = socket.create_server(("127.0.0.1", 0))
print(f"port {server.getsockname()[1]}", file=sys.stderr, flush=True)
conn, _ = server.accept()
print("accepted", file=sys.stderr, flush=True)
time.sleep(60)
"""


@pytest.mark.parametrize("backend", ["trio", "asyncio"])
@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_stop_signal_while_connecting_ends_send_at_once_with_its_summary(
    tmp_path: Path, backend: str, stop: signal.Signals
) -> None:
    """A stop while the handshake waits (a receiver that never answers) used to wait out
    the handshake timeout (10 s): then Trio died by the signal, with no summary, and
    asyncio ignored it and failed with "no flowproto handshake"."""
    with script(MUTE_LISTENER, cwd=tmp_path) as (mute, port), flowproto(
        "send", "--backend", backend, "--connect", f"127.0.0.1:{port}", "--count", "10",
        "--json", cwd=tmp_path,
    ) as sender:  # fmt: skip
        mute.wait_for(r"^accepted$")  # the sender waits for the peer's HELLO now
        sender.proc.send_signal(stop)
        status, out, err = sender.finish(timeout=5)  # well before the 10 s timeout
    assert status == 128 + stop, err
    summary = json.loads(out)
    assert summary["interrupted"] is True and summary["signal"] == stop.name, summary
    assert summary["messages"] == 0, summary
