"""The pyzmq peers: PUSH/PULL with high-water marks (``--hwm``), one message per call."""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .peers_common import (
    PHASE_SLACK,
    RunClock,
    StreamResult,
    batch_messages,
    mono,
    receiver_report,
)
from .workload import (
    SAMPLE_INTERVAL,
    MessageMaker,
    Sampler,
    Schedule,
    cpu_seconds,
    decoder,
    encoder,
    peak_rss_kib,
    schedule_from_json,
)

# --- zmq -------------------------------------------------------------------------------------


def zmq_receiver(args: argparse.Namespace) -> dict[str, Any]:
    import zmq

    ctx = zmq.Context()
    sock = ctx.socket(zmq.PULL)
    sock.setsockopt(zmq.RCVHWM, args.hwm)
    sock.setsockopt(zmq.RCVTIMEO, 200)
    sock.setsockopt(zmq.LINGER, 0)
    host = args.host
    if args.port:
        sock.bind(f"tcp://{host}:{args.port}")
        port = args.port
    else:
        port = sock.bind_to_random_port(f"tcp://{host}")
    print(f"listening {host}:{port}", file=sys.stderr, flush=True)
    result = StreamResult(0, args.size, args.codec)
    clock = RunClock()
    sampler = Sampler(mono())
    hard_stop = mono() + args.timeout
    with sampling(sampler):
        finished, cpu0 = paced_phase(sock, args, result, clock, hard_stop)
        finished = finished or drain(sock, args, result, hard_stop)
        cpu = cpu_seconds() - (cpu0 if cpu0 is not None else cpu_seconds())
    sampler.sample(mono(), None, None)
    sock.close()
    ctx.term()
    error = None if finished else "timed out before the sender's end marker"
    return receiver_report("zmq", [result], clock, sampler, cpu, {"hwm": args.hwm, "error": error})


@contextmanager
def sampling(sampler: Sampler) -> Iterator[None]:
    """Memory samples every SAMPLE_INTERVAL from a thread, while the block runs."""
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(SAMPLE_INTERVAL):
            sampler.sample(mono(), None, None)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def paced_phase(
    sock: Any, args: argparse.Namespace, result: StreamResult, clock: RunClock, hard_stop: float
) -> tuple[bool, float | None]:
    """Consume by the schedule until the phase ends; (end marker seen, CPU at the start)."""
    import zmq

    checker = result.checker
    schedule = schedule_from_json(args.schedule)
    decode = decoder(args.codec)
    raw = args.codec == "raw"
    end = args.duration + PHASE_SLACK
    cpu0: float | None = None
    recv = sock.recv
    while mono() < hard_stop:
        if clock.t0 is not None:
            elapsed = mono() - clock.t0
            if elapsed >= end:
                break
            allowed = schedule.allowed(elapsed, result.consumed)
            if allowed == 0:
                wake = min(schedule.next_time(elapsed, result.consumed), end)
                time.sleep(max(0.0, wake - elapsed))
                continue
        try:
            message = recv()
        except zmq.Again:
            continue
        now = mono()
        if not message:
            return True, cpu0
        if clock.t0 is None:
            cpu0 = cpu_seconds()
            clock.start(now)
            result.first = now
        checker.take((message if raw else decode(message),), now)
        result.consumed += 1
        result.last = now
    return False, cpu0


def drain(sock: Any, args: argparse.Namespace, result: StreamResult, hard_stop: float) -> bool:
    """Take what is left after the phase, unpaced; True once the end marker came."""
    import zmq

    decode = decoder(args.codec)
    raw = args.codec == "raw"
    while mono() < hard_stop:
        try:
            message = sock.recv()
        except zmq.Again:
            continue
        if not message:
            return True
        result.checker.take_drained((message if raw else decode(message),))
        result.drained += 1
    return False


def zmq_sender(args: argparse.Namespace) -> dict[str, Any]:
    import zmq

    ctx = zmq.Context()
    sock = ctx.socket(zmq.PUSH)
    sock.setsockopt(zmq.SNDHWM, args.hwm)
    sock.setsockopt(zmq.LINGER, int(args.timeout * 1000))
    sock.connect(f"tcp://{args.host}:{args.port}")
    maker = MessageMaker(args.size, args.codec)
    encode = encoder(args.codec)
    schedule = Schedule([]) if args.rate is None else schedule_from_json([[0, args.rate]])
    per_batch = batch_messages(args.size)
    send = sock.send
    noblock = zmq.NOBLOCK
    again = zmq.Again
    copy = args.size < 65536
    cpu0 = cpu_seconds()
    start = mono()
    stop_at = start + args.duration
    blocked = 0.0
    seq = 0
    while seq < args.count:
        now = mono()
        if now >= stop_at:
            break
        n = min(per_batch, args.count - seq)
        if args.rate is not None:
            allowed = schedule.allowed(now - start, seq)
            if allowed == 0:
                time.sleep(max(0.0, schedule.next_time(now - start, seq) - (now - start)))
                continue
            n = min(n, allowed or n)
        for m in maker.batch(seq, n):
            data = encode(m)
            try:
                send(data, noblock, copy=copy)
            except again:
                t = mono()
                send(data, copy=copy)  # blocks at the high-water mark
                blocked += mono() - t
        seq += n
    elapsed = mono() - start
    cpu = cpu_seconds() - cpu0
    send(b"")  # the end marker
    sock.close()  # lingers until queued messages are out (bounded by --timeout)
    ctx.term()
    return {
        "role": "sender",
        "peer": "zmq",
        "sent": seq,
        "sent_per_stream": [seq],
        "elapsed_s": round(elapsed, 4),
        "cpu_s": round(cpu, 4),
        "blocked_s": round(blocked, 4),
        "peak_rss_kib": peak_rss_kib(),
    }
