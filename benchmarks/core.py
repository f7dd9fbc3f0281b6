"""Push messages between two sans-IO core peers in one process, with credit checked.

No sockets, no Trio: this measures what the protocol core costs per message, so that
the core is known not to be the bottleneck of the socket benchmarks. The sender sends
batches with ``send_messages`` while credit lasts; the receiver consumes every message
it is given and releases it, which returns credit (spec §8.5). Every message is checked
to arrive in order and intact (by count, total bytes and a running checksum).

Usage::

    python -m benchmarks.core --messages 1000000 --size 64
"""

from __future__ import annotations

import argparse
import json
import time
import zlib

from flowproto import Connection, CreditGranted, MessagesReceived, Role, Settings


def run(messages: int, size: int, batch: int, settings: Settings) -> dict[str, float]:
    """Move ``messages`` messages of ``size`` bytes from an initiator to an acceptor."""
    sender = Connection(Role.INITIATOR)
    receiver = Connection(Role.ACCEPTOR, settings)
    receiver.receive_data(sender.data_to_send())
    sender.receive_data(receiver.data_to_send())
    stream = sender.open_stream()
    payloads = [i.to_bytes(8, "big") + bytes(size - 8) for i in range(batch)]
    expected_crc = 0
    received_crc = 0
    sent = received = received_bytes = 0
    frames_rounds = 0
    start = time.perf_counter()
    cpu_start = time.process_time()
    while received < messages:
        # Sender: one batch call, as much as credit allows.
        want = min(batch, messages - sent)
        if want:
            n = sender.send_messages(stream, payloads[:want] if want < batch else payloads)
            for p in payloads[:n]:
                expected_crc = zlib.crc32(p[:8], expected_crc)
            sent += n
        wire = sender.data_to_send()
        if wire:
            for event in receiver.receive_data(wire):
                if isinstance(event, MessagesReceived):
                    for m in event.messages:
                        received_crc = zlib.crc32(m[:8], received_crc)
                    received += len(event.messages)
                    received_bytes += event.nbytes
                    receiver.release(event.stream_id, event.nbytes, len(event.messages))
        back = receiver.data_to_send()
        if back:
            for event in sender.receive_data(back):
                # Only credit comes back: the receiver sends no messages.
                assert isinstance(event, CreditGranted), event
        frames_rounds += 1
    elapsed = time.perf_counter() - start
    cpu = time.process_time() - cpu_start
    if received != messages or received_crc != expected_crc or received_bytes != messages * size:
        raise SystemExit(f"lost or damaged messages: sent {sent}, received {received}")
    return {
        "messages": messages,
        "size": size,
        "batch": batch,
        "seconds": round(elapsed, 3),
        "cpu_seconds": round(cpu, 3),
        "messages_per_second": round(messages / elapsed),
        # On a shared machine wall time includes other tenants; CPU time does not.
        "messages_per_cpu_second": round(messages / cpu),
        "megabytes_per_second": round(messages * size / elapsed / 1e6, 1),
        "rounds": frames_rounds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--size", type=int, default=64, help="message size in bytes (>= 8)")
    parser.add_argument("--batch", type=int, default=1024, help="messages per send_messages call")
    parser.add_argument("--window-messages", type=int, default=4096)
    parser.add_argument("--window-bytes", type=int, default=4 * 1024 * 1024)
    args = parser.parse_args()
    if args.size < 8:
        parser.error("--size must be at least 8 (each message carries its sequence number)")
    settings = Settings(stream_messages=args.window_messages, stream_bytes=args.window_bytes)
    print(json.dumps(run(args.messages, args.size, args.batch, settings)))


if __name__ == "__main__":
    main()
