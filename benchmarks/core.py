"""Push messages between two sans-IO core peers in one process, with credit checked.

No sockets, no Trio: this measures what the protocol core costs per message, so that
the core is known not to be the bottleneck of the socket benchmarks. The sender sends
batches with ``send_messages`` while credit lasts; the receiver consumes every message
it is given and releases it, which returns credit (spec §8.5). Every message is
verified: each starts with a sequence number that runs on across batches (0, 1, 2, ...
to the last message), and the receiver checks that the numbers arrive exactly in that
order, none missing or repeated, and that each message has its length and its filler
bytes. The timed loop includes building and checking the messages.

Usage::

    python -m benchmarks.core --messages 1000000 --size 64
"""

from __future__ import annotations

import argparse
import json
import struct
import time
from itertools import repeat
from typing import Final

from flowproto import Connection, CreditGranted, MessagesReceived, Role, Settings

#: A message starts with its sequence number.
SEQ: Final = struct.Struct(">Q")


class Verifier:
    """Checks that messages arrive numbered 0, 1, 2, ... and intact."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.filler = bytes(size - SEQ.size)
        self.next = 0  # the number due next
        self.first_problem: str | None = None

    def take(self, messages: list[bytes]) -> None:
        nxt = self.next
        unpack = SEQ.unpack_from
        seqs = [unpack(m)[0] for m in messages]
        if (
            seqs == list(range(nxt, nxt + len(seqs)))
            and set(map(len, messages)) <= {self.size}
            and all(map(bytes.endswith, messages, repeat(self.filler)))
        ):
            self.next = nxt + len(seqs)
            return
        for seq, m in zip(seqs, messages, strict=True):  # find the first bad one, to say
            if seq != self.next:
                problem = f"message {seq} arrived where {self.next} was due"
            elif len(m) != self.size or not m.endswith(self.filler):
                problem = f"message {seq} is damaged ({len(m)} bytes)"
            else:
                self.next += 1
                continue
            raise SystemExit(f"lost or damaged messages: {problem}")


def run(messages: int, size: int, batch: int, settings: Settings) -> dict[str, float]:
    """Move ``messages`` messages of ``size`` bytes from an initiator to an acceptor."""
    sender = Connection(Role.INITIATOR)
    receiver = Connection(Role.ACCEPTOR, settings)
    receiver.receive_data(sender.data_to_send(), 0.0)
    sender.receive_data(receiver.data_to_send(), 0.0)
    stream = sender.open_stream()
    pack = SEQ.pack
    filler = bytes(size - SEQ.size)
    verifier = Verifier(size)
    pending: list[bytes] = []  # built, not yet taken by send_messages (credit ran short)
    built = sent = received_bytes = 0
    frames_rounds = 0
    start = time.perf_counter()
    cpu_start = time.process_time()
    while verifier.next < messages:
        # Sender: top the batch up with the next numbers; one call, as much as credit allows.
        if len(pending) < batch and built < messages:
            more = min(batch - len(pending), messages - built)
            pending += [pack(seq) + filler for seq in range(built, built + more)]
            built += more
        if pending:
            n = sender.send_messages(stream, pending)
            del pending[:n]
            sent += n
        wire = sender.data_to_send()
        if wire:
            for event in receiver.receive_data(wire, 0.0):
                if isinstance(event, MessagesReceived):
                    verifier.take(event.messages)
                    received_bytes += event.nbytes
                    receiver.release(event.stream_id, event.nbytes, len(event.messages), 0.0)
        back = receiver.data_to_send()
        if back:
            for event in sender.receive_data(back, 0.0):
                # Only credit comes back: the receiver sends no messages.
                assert isinstance(event, CreditGranted), event
        frames_rounds += 1
    elapsed = time.perf_counter() - start
    cpu = time.process_time() - cpu_start
    if verifier.next != messages or received_bytes != messages * size or sent != messages:
        raise SystemExit(
            f"lost or damaged messages: sent {sent}, received 0..{verifier.next - 1}, "
            f"{received_bytes} bytes"
        )
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
