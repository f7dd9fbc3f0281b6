"""Hand-picked mutation testing of the protocol core (issue #9 §3; docs/mutation.md).

Run from the repository root::

    python tests/mutate.py                 # every mutant against the fast sans-IO tests
    python tests/mutate.py --full          # ... then the survivors against the whole suite
    python tests/mutate.py --only c07 x43  # some mutants, by id
    python tests/mutate.py --check         # only locate every snippet (no tests run)

Each mutant replaces one exact source snippet with another. The snippet is searched in
every ``flowproto/_*.py`` and ``flowproto/*/_*.py`` file and must occur exactly once in
all of them together, so code moved verbatim between modules is still found; the file
name in the list is a label only. A snippet found nowhere is *stale* (reported, never
counted as killed): re-target it by copying the code's current text into the list. One
found more than once is *ambiguous*: lengthen it with a neighbouring line.

Each mutant runs in its own temporary copy of the repository (``flowproto/``, ``tests/``,
``spec/``, ``benchmarks/`` and the config files), never in the working tree, with that
copy first on ``sys.path`` and as the working directory; every run asserts that
``flowproto`` was imported from the copy, not from an installed or editable checkout.
Mutants run two at a time by default. A mutant whose tests exceed the timeout counts
as killed, and is reported as killed by timeout.

Not part of CI: it takes a few minutes per run on two cores.
"""

# ruff: noqa: E501
from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: The fast, sans-IO test files run against every mutant, in stages: each stage runs
#: (with ``pytest -x``) only if the one before passed, so a mutant the boundary tests
#: kill costs one small run. ``--all-tests`` runs the whole suite instead.
STAGES = [
    ["tests/test_boundaries.py"],
    [
        "tests/test_connection.py",
        "tests/test_frames.py",
        "tests/test_vectors_conversations.py",
        "tests/test_state.py",
        "tests/test_credit.py",
        "tests/test_autotune.py",
        "tests/test_robustness.py",
    ],
    ["tests/test_interleavings.py"],
]
FAST_TESTS = [path for stage in STAGES for path in stage]

#: What a mutant's copy of the repository holds.
COPY = [
    "flowproto",
    "tests",
    "spec",
    "docs",
    "benchmarks",
    "pyproject.toml",
    "setup.cfg",
    "README.md",
]


@dataclasses.dataclass(frozen=True)
class Mutant:
    """One mutation: ``original`` (exact source text) becomes ``mutated``.

    ``label`` names the module the snippet was picked from (a hint only: the snippet is
    searched everywhere). ``equivalent``, if set, says why no test can tell the mutant
    from the original; such mutants are run but not counted in the score.
    """

    id: str
    label: str
    original: str
    mutated: str
    equivalent: str | None = None


M = Mutant
C, X, F, L = "_credit.py", "_connection.py", "_frames.py", "_limits.py"
B = "_body.py"
A, S, T = "_autotune.py", "_settings.py", "_timers.py"
IN, OUT, ST = "_inbound.py", "_outbound.py", "_streams.py"
CT, RV, SD = "_control.py", "_receiving.py", "_sending.py"
RL = "_releasing.py"

# fmt: off
MUTANTS: list[Mutant] = [
    # --- _credit.py: SendCredit ------------------------------------------------------------
    M("c01", C, "return self.limit_bytes - self.sent_bytes",
      "return self.limit_bytes - self.sent_bytes + 1"),
    M("c02", C, "if limit_bytes is not None and limit_bytes > self.limit_bytes:",
      "if limit_bytes is not None and limit_bytes >= self.limit_bytes:"),
    M("c03", C, "and limit_messages > self.limit_messages",
      "and limit_messages >= self.limit_messages"),
    M("c04", C, "            self.limit_messages = limit_messages\n            raised = True",
      "            raised = True"),
    M("c05", C, "if self.sent_bytes + nbytes > self.limit_bytes:",
      "if self.sent_bytes + nbytes >= self.limit_bytes:"),
    M("c06", C, "self.sent_messages + nmessages > self.limit_messages:",
      "self.sent_messages + nmessages >= self.limit_messages:"),
    # --- _credit.py: the replenish threshold and ReceiveWindow (spec §8.4-§8.6) -------------
    M("c07", C, "min(window // 2, window - min_progress + 1)",
      "min(window // 2, window - min_progress + 2)"),
    M("c08", C, "min(window // 2, window - min_progress + 1)",
      "min(window // 2, window - min_progress)"),
    M("c09", C, "min(window // 2, window - min_progress + 1)",
      "min(window // 2 + 1, window - min_progress + 1)"),
    M("c10", C, "return max(1, min(window // 2,", "return max(0, min(window // 2,"),
    M("c11", C, "(window_bytes, min_progress_bytes)\n        self.threshold_messages = replenish_threshold(window_messages, 1)",
      "(window_bytes, min_progress_bytes)\n        self.threshold_messages = replenish_threshold(window_messages, 2)",
      equivalent="for any window Wm >= 1, Wm // 2 <= Wm - 1, so min(Wm // 2, Wm - 2 + 1) and "
      "min(Wm // 2, Wm - 1 + 1) are both Wm // 2 (then max(1, ...))"),
    M("c12", C, "        self.threshold_bytes = replenish_threshold(window_bytes, self.min_progress_bytes)\n",
      ""),
    M("c13", C, "if self.received_bytes + nbytes > self.advertised_bytes:",
      "if self.received_bytes + nbytes >= self.advertised_bytes:"),
    M("c14", C, "if self.received_messages + nmessages > self.advertised_messages:",
      "if self.received_messages + nmessages >= self.advertised_messages:"),
    M("c15", C, "            )\n        self.received_bytes += nbytes\n        self.received_messages += nmessages",
      "            )\n        self.received_messages += nmessages"),
    M("c16", C, "if nbytes > held_bytes or nmessages > held_messages:",
      "if nbytes >= held_bytes or nmessages > held_messages:"),
    M("c17", C, "if nbytes > held_bytes or nmessages > held_messages:",
      "if nbytes > held_bytes:"),
    M("c18", C, "self.budget.committed -= nbytes  # spec §8.9 B1",
      "self.budget.committed -= nbytes - 1  # spec §8.9 B1"),
    M("c19", C, "self.consume(nbytes, self.received_messages - self.consumed_messages)",
      "self.consume(nbytes, 0)"),
    M("c20", C, "        if held_bytes > self.peak_bytes:", "        if held_bytes < self.peak_bytes:"),
    M("c21", C, "max(self.peak_bytes, self.received_bytes - self.consumed_bytes)",
      "max(self.peak_bytes, 0)"),
    M("c22", C, "target_bytes - self.advertised_bytes >= least_bytes",
      "target_bytes - self.advertised_bytes > least_bytes"),
    M("c23", C, "or target_messages - self.advertised_messages >= least_messages",
      "or target_messages - self.advertised_messages > least_messages"),
    M("c24", C, "or target_messages - self.advertised_messages >= least_messages",
      "and target_messages - self.advertised_messages >= least_messages"),
    M("c25", C, "self.advertised_bytes = max(self.advertised_bytes, target_bytes)",
      "self.advertised_bytes = target_bytes"),
    M("c26", C, "self.advertised_messages = max(self.advertised_messages, target_messages)",
      "self.advertised_messages = target_messages"),
    M("c27", C, "need = self.consumed_bytes + self.min_progress_bytes - self.advertised_bytes",
      "need = self.consumed_bytes + self.min_progress_bytes - self.advertised_bytes - 1"),
    M("c28", C, "if grant < self.threshold_bytes and need <= 0:",
      "if grant < self.threshold_bytes and need < 0:"),
    M("c29", C, "if grant < self.threshold_bytes and need <= 0:",
      "if grant <= self.threshold_bytes and need <= 0:"),
    M("c30", C, "self.budget.committed += grant", "self.budget.committed += grant - 1"),
    M("c31", C, "if self.budget is not None and target_bytes > self.advertised_bytes:",
      "if self.budget is not None and target_bytes >= self.advertised_bytes:",
      equivalent="at equality only the message unit is due, so need <= 0 (the limit is at "
      "least consumed + window >= consumed + M) and clip() grants 0: the same limits result"),
    # --- _autotune.py (was in _credit.py): auto-tuning (spec §8.9) ---------------------------
    M("c32", A, "return max(2 * max_message_bytes, max_message_bytes + FLOOR_STEP_BYTES)",
      "return max(2 * max_message_bytes, max_message_bytes + FLOOR_STEP_BYTES - 1)"),
    M("c33", A, "FLOOR_STEP_BYTES: Final = 2048", "FLOOR_STEP_BYTES: Final = 2047"),
    M("c34", A, "FLOOR_MESSAGES: Final = 2", "FLOOR_MESSAGES: Final = 1"),
    M("c35", A, "latency_target: float = 0.1", "latency_target: float = 0.2"),
    M("c36", A, "max_window_bytes: int = 64 * 1024 * 1024", "max_window_bytes: int = 32 * 1024 * 1024"),
    M("c37", A, "max_window_messages: int = 1 << 20", "max_window_messages: int = 1 << 19"),
    M("c38", A, "min_epoch: float = 0.05", "min_epoch: float = 0.1"),
    M("c39", A, "rtt_probe_interval: float = 1.0", "rtt_probe_interval: float = 2.0"),
    M("c40", A, "    if n <= low:\n", "    if n < low:\n"),
    M("c41", A, "    if n >= high:\n", "    if n > high:\n"),
    M("c42", A, "    high = max(high, low)\n", ""),
    M("c43", A, "n = int(value + 0.5)", "n = int(value)"),
    M("c44", A, "if held_messages < self.queue_messages:", "if held_messages <= self.queue_messages:"),
    M("c45", A, "if now < self.epoch_end:", "if now <= self.epoch_end:"),
    M("c46", A, "self.epoch_end = now + max(self.config.min_epoch, rtt)",
      "self.epoch_end = now + self.config.min_epoch"),
    M("c47", A, "horizon = max(rtt + latency, 2 * rtt)", "horizon = rtt + latency"),
    M("c48", A, "self.queue_bytes >= CREDIT_LIMITED_SHARE * usable",
      "self.queue_bytes > CREDIT_LIMITED_SHARE * usable"),
    M("c49", A, "keeps_up = self.queue_messages == 0", "keeps_up = True"),
    M("c50", A, "new = target if target >= window else", "new = target if target > window else",
      equivalent="at target == window the other branch gives window - 0 * shrink == window"),
    M("c51", A, "abs(target - window) < window * MIN_CHANGE_SHARE",
      "abs(target - window) <= window * MIN_CHANGE_SHARE"),
    M("c52", A, "elif low and low_m:", "elif low or low_m:"),
    # --- _autotune.py (was in _credit.py): the memory budget (spec §8.9 B1-B5) ---------------
    M("c53", A, "if self.capacity - self.committed - others >= floor:",
      "if self.capacity - self.committed - others > floor:"),
    M("c54", A, "return max(floor, min(want, room // ADMISSION_SHARE))",
      "return min(want, room // ADMISSION_SHARE)"),
    M("c55", A, "ADMISSION_SHARE: Final = 16", "ADMISSION_SHARE: Final = 8"),
    M("c56", A, "give = min(want, extra // left)", "give = min(want, extra)"),
    M("c57", A, "            left -= 1\n", ""),
    M("c58", A, "            if extra <= 0:\n                break", "            if extra < 0:\n                break",
      equivalent="with extra == 0 every remaining give is min(want, 0) == 0: the same shares"),
    M("c59", A, "key=lambda item: item[0]", "key=lambda item: -item[0]"),
    M("c60", A, "return max(need, min(grant, self.capacity - self.committed - self.waiting), 0)",
      "return max(need, grant, 0)"),
    M("c61", A, "self.committed += member.advertised_bytes - member.consumed_bytes",
      "self.committed += member.advertised_bytes"),
    M("c62", A, "self.committed -= member.advertised_bytes - member.consumed_bytes",
      "self.committed -= member.advertised_bytes"),
    M("c63", A, "if type(capacity_bytes) is not int or capacity_bytes < 1:",
      "if type(capacity_bytes) is not int or capacity_bytes < 0:"),
    M("c64", A, "        if self.committed > self.peak:", "        if self.committed < self.peak:"),
    M("c65", A, "else min(self.minimum, rtt)", "else max(self.minimum, rtt)"),

    # --- _limits.py (spec §10.7, §12) ------------------------------------------------------
    M("l01", L, "MAX_QUEUED_REPLIES: Final = 1000", "MAX_QUEUED_REPLIES: Final = 999"),
    M("l02", L, "GLITCH_BURST: Final = 1000", "GLITCH_BURST: Final = 1001"),
    M("l03", L, "GLITCH_REFILL_PER_SECOND: Final = 100.0", "GLITCH_REFILL_PER_SECOND: Final = 10.0"),
    M("l04", L, "GLITCH_REFILL_BYTES: Final = 1024", "GLITCH_REFILL_BYTES: Final = 2048"),
    M("l05", L, "MIN_CREDIT_STEP: Final = 1024", "MIN_CREDIT_STEP: Final = 1023"),
    M("l06", L, "MIN_FRAGMENT_BYTES: Final = 1024", "MIN_FRAGMENT_BYTES: Final = 1025"),
    M("l07", L, 'least = 0 if f.name == "glitch_refill_per_second" else 1', "least = 0"),
    M("l08", L, "if type(value) not in (int, float) or value < least:",
      "if type(value) not in (int, float) or value <= least:"),
    M("l09", L, "if type(value) not in (int, float) or value < least:", "if value < least:"),

    # --- _frames.py and _body.py: named limits (spec §12) ----------------------------------
    M("f01", F, "MAX_CONTROL_BODY: Final = 4096", "MAX_CONTROL_BODY: Final = 4095"),
    M("f02", S, "MAX_COUNTER: Final = (1 << 62) - 1", "MAX_COUNTER: Final = 1 << 62"),
    M("f03", B, "MAX_MAP_ENTRIES: Final = 64", "MAX_MAP_ENTRIES: Final = 65"),
    M("f04", B, "MAX_BODY_DEPTH: Final = 8", "MAX_BODY_DEPTH: Final = 9"),
    M("f05", F, "MAX_REASON_BYTES: Final = 256", "MAX_REASON_BYTES: Final = 255"),
    M("f06", F, "MAX_PING_ID: Final = (1 << 64) - 1", "MAX_PING_ID: Final = (1 << 63) - 1"),
    M("f07", F, "MAX_ERROR_CODE: Final = (1 << 32) - 1", "MAX_ERROR_CODE: Final = (1 << 31) - 1"),
    M("f08", F, "MAX_FEEDBACK_RATE: Final = (1 << 32) - 1", "MAX_FEEDBACK_RATE: Final = (1 << 31) - 1"),
    # --- _body.py: body rules (spec §4.3.2) ------------------------------------------------
    M("f09", B, "if depth > MAX_BODY_DEPTH or len(obj) > MAX_MAP_ENTRIES:\n            raise RemoteProtocolError(\n                f\"{frame_name} body nests deeper than {MAX_BODY_DEPTH} or holds a map",
      "if depth >= MAX_BODY_DEPTH or len(obj) > MAX_MAP_ENTRIES:\n            raise RemoteProtocolError(\n                f\"{frame_name} body nests deeper than {MAX_BODY_DEPTH} or holds a map"),
    M("f10", B, "if depth > MAX_BODY_DEPTH or len(obj) > MAX_MAP_ENTRIES:\n            raise RemoteProtocolError(\n                f\"{frame_name} body nests deeper than {MAX_BODY_DEPTH} or holds a map",
      "if depth > MAX_BODY_DEPTH or len(obj) >= MAX_MAP_ENTRIES:\n            raise RemoteProtocolError(\n                f\"{frame_name} body nests deeper than {MAX_BODY_DEPTH} or holds a map"),
    M("f11", B, "if depth > MAX_BODY_DEPTH or len(obj) > MAX_MAP_ENTRIES:\n            raise RemoteProtocolError(\n                f\"{frame_name} body nests deeper than {MAX_BODY_DEPTH} or holds a map",
      "if len(obj) > MAX_MAP_ENTRIES:\n            raise RemoteProtocolError(\n                f\"{frame_name} body nests deeper than {MAX_BODY_DEPTH} or holds a map"),
    M("f12", B, "if depth > MAX_BODY_DEPTH or len(obj) > MAX_MAP_ENTRIES:\n            raise RemoteProtocolError(\n                f\"{frame_name} body nests deeper than {MAX_BODY_DEPTH} or holds an array",
      "if depth >= MAX_BODY_DEPTH or len(obj) > MAX_MAP_ENTRIES:\n            raise RemoteProtocolError(\n                f\"{frame_name} body nests deeper than {MAX_BODY_DEPTH} or holds an array"),
    M("f13", B, "if depth > MAX_BODY_DEPTH or len(obj) > MAX_MAP_ENTRIES:\n            raise RemoteProtocolError(\n                f\"{frame_name} body nests deeper than {MAX_BODY_DEPTH} or holds an array",
      "if depth > MAX_BODY_DEPTH or len(obj) >= MAX_MAP_ENTRIES:\n            raise RemoteProtocolError(\n                f\"{frame_name} body nests deeper than {MAX_BODY_DEPTH} or holds an array"),
    M("f14", B, "    if len(obj) > MAX_MAP_ENTRIES:\n        code =", "    if len(obj) >= MAX_MAP_ENTRIES:\n        code ="),
    M("f15", B, "(B3).\n        code = ErrorCode.ENHANCE_YOUR_CALM if frame_name == \"HELLO\" else ErrorCode.PROTOCOL_ERROR",
      "(B3).\n        code = ErrorCode.PROTOCOL_ERROR"),
    M("f16", B, "_check_structure(obj, 1, frame_name)", "_check_structure(obj, 2, frame_name)"),
    M("f17", B, "result[key] = _check_structure(value, depth + 1, frame_name)",
      "result[key] = _check_structure(value, depth, frame_name)"),
    M("f18", B, "return [_check_structure(item, depth + 1, frame_name) for item in obj]",
      "return [_check_structure(item, depth, frame_name) for item in obj]"),
    M("f19", B, "            if type(key) is not str:\n", "            if False:\n"),
    M("f20", B, "            if key in result:\n", "            if False:\n"),
    M("f21", F, "if type(value) is not int or value < 0:", "if type(value) is not int or value < -1:"),
    M("f22", F, "    if value > maximum:\n", "    if value >= maximum:\n"),
    M("f23", F, '"{frame_name} key {key!r} = {value} is above {maximum} (spec §4.3.3)", code',
      '"{frame_name} key {key!r} = {value} is above {maximum} (spec §4.3.3)"'),
    M("f24", F, "if len(data) <= MAX_REASON_BYTES:", "if len(data) < MAX_REASON_BYTES:",
      equivalent="a reason of exactly MAX_REASON_BYTES bytes cut to MAX_REASON_BYTES bytes "
      "decodes to itself"),
    M("f25", F, 'return data[:MAX_REASON_BYTES].decode("utf-8", "ignore")',
      'return data[: MAX_REASON_BYTES + 1].decode("utf-8", "ignore")'),
    # --- _settings.py (was in _frames.py): settings (spec §3.2, §9 R3) -----------------------
    M("f26", S, "stream_bytes: int = 4 * 1024 * 1024", "stream_bytes: int = 8 * 1024 * 1024"),
    M("f27", S, "stream_messages: int = 4096", "stream_messages: int = 4095"),
    M("f28", S, "connection_bytes: int = 16 * 1024 * 1024", "connection_bytes: int = 15 * 1024 * 1024"),
    M("f29", S, "    max_frame_bytes: int = 65536\n", "    max_frame_bytes: int = 65535\n"),
    M("f30", S, "max_message_bytes: int = 1024 * 1024", "max_message_bytes: int = 1024 * 1024 - 1"),
    M("f31", S, "max_streams: int = 100", "max_streams: int = 101"),
    M("f32", S, "keepalive_ms: int = 30_000", "keepalive_ms: int = 30_001"),
    M("f33", S, '"max_frame_bytes": (16384, 16 * 1024 * 1024)', '"max_frame_bytes": (16383, 16 * 1024 * 1024)'),
    M("f34", S, '"max_frame_bytes": (16384, 16 * 1024 * 1024)', '"max_frame_bytes": (16384, 16 * 1024 * 1024 + 1)'),
    M("f35", S, '"stream_messages": (1, (1 << 31) - 1)', '"stream_messages": (0, (1 << 31) - 1)'),
    M("f36", S, '"keepalive_ms": (0, 86_400_000)', '"keepalive_ms": (0, 86_400_001)'),
    M("f37", S, '"max_streams": (0, (1 << 31) - 1)', '"max_streams": (0, 1 << 31)'),
    M("f38", S, "elif not low <= value <= high:", "elif not low < value <= high:"),
    M("f39", S, "if getattr(self, name) < self.max_message_bytes:", "if getattr(self, name) <= self.max_message_bytes:"),
    M("f40", S, 'for name in ("stream_bytes", "connection_bytes"):', 'for name in ("stream_bytes",):'),
    M("f41", S, "            if type(value) is not int:\n                found.append",
      "            if False:\n                found.append"),
    # --- _frames.py: frames and the header check (spec §4.2, §4.5, §5) --------------------
    M("f42", F, "type(v) is int and 0 <= v <= 0xFFFF for v in versions",
      "type(v) is int and 0 <= v <= 0x10000 for v in versions"),
    M("f43", F, "type(v) is int and 0 <= v <= 0xFFFF for v in versions",
      "type(v) is int and -1 <= v <= 0xFFFF for v in versions"),
    M("f44", F, '_get_int(m, "last_stream", "GOAWAY", MAX_STREAM_ID, required=True)',
      '_get_int(m, "last_stream", "GOAWAY", MAX_COUNTER, required=True)'),
    M("f45", F, '_get_int(m, "rate", "CREDIT", MAX_FEEDBACK_RATE, required=False)',
      '_get_int(m, "rate", "CREDIT", MAX_COUNTER, required=False)'),
    M("f46", F, "        if length > MAX_CONTROL_BODY:\n", "        if length >= MAX_CONTROL_BODY:\n"),
    M("f47", F, "    elif length > max_frame_bytes:\n", "    elif length >= max_frame_bytes:\n"),
    M("f48", F, "if ftype in CONNECTION_ONLY and stream_id != 0:", "if False:"),
    M("f49", F, "if ftype in STREAM_ONLY and stream_id == 0:", "if False:"),
    M("f50", F, "            if end > len(buf):\n", "            if end >= len(buf):\n"),
    M("f51", F, "        while len(buf) - pos >= HEADER_SIZE:\n", "        while len(buf) - pos > HEADER_SIZE:\n"),
    M("f52", F, 'body["reason"] = _truncate_reason(self.reason)\n        if self.consumed',
      'body["reason"] = self.reason\n        if self.consumed'),

    # The x mutants were of _connection.py before its split (#10); each is now labelled with
    # the room its code is in. The split merged three pairs of sites into one each, so x30
    # (= x29: StreamTable.goaway_last_stream), x63 (= x62: StreamTable.at_peer_limit) and
    # x67 (= x66: StreamTable.beyond_our_goaway) are gone.
    # --- opening streams, sending (spec §6.4, §7, §8.3) -------------------------------------
    M("x01", ST, "return self.open_count[self.parity] < max_streams and",
      "return self.open_count[self.parity] <= max_streams and"),
    M("x02", ST, "        self.open_count[st.id & 1] += 1\n",
      ""),
    M("x03", SD, "        if 8 <= count <= messages_left:\n", "        if 8 <= count <= messages_left + 1:\n"),
    M("x04", SD, "if nbytes <= bytes_left and max(lengths) <= min(max_message, max_frame):",
      "if nbytes <= bytes_left + 1 and max(lengths) <= min(max_message, max_frame):"),
    M("x05", SD, "if nbytes <= bytes_left and max(lengths) <= min(max_message, max_frame):",
      "if nbytes <= bytes_left and max(lengths) <= max_message:"),
    M("x06", C, "min(stream.limit_bytes - stream.sent_bytes, conn.limit_bytes - conn.sent_bytes),",
      "stream.limit_bytes - stream.sent_bytes,"),
    M("x07", SD, "if n > max_message or n > bytes_left - nbytes or sent >= messages_left:",
      "if n > max_message or n > bytes_left - nbytes + 1 or sent >= messages_left:"),
    M("x08", SD, "if n > max_message or n > bytes_left - nbytes or sent >= messages_left:",
      "if n > max_message or n >= bytes_left - nbytes or sent >= messages_left:"),
    M("x09", SD, "if n > max_message or n > bytes_left - nbytes or sent >= messages_left:",
      "if n > max_message or n > bytes_left - nbytes:"),
    M("x10", SD, "if n > max_message or n > bytes_left - nbytes or sent >= messages_left:",
      "if n > bytes_left - nbytes or sent >= messages_left:"),
    M("x11", C, "    stream.spend(nbytes, nmessages)\n    conn.sent_bytes += nbytes\n",
      "    stream.spend(nbytes, nmessages)\n"),
    M("x12", C, "    conn.sent_bytes = conn_sent\n",
      ""),
    M("x13", SD, "                if sent:\n                    return sent\n", ""),
    M("x14", SD, "            self._has_credit(st, n)  # notes BLOCKED\n            return sent\n",
      "            return sent\n"),
    M("x15", SD, "if send.sent_bytes + n > send.limit_bytes or not messages_left:",
      "if send.sent_bytes + n >= send.limit_bytes or not messages_left:"),
    M("x16", SD, "if send.sent_bytes + n > send.limit_bytes or not messages_left:",
      "if send.sent_bytes + n > send.limit_bytes or messages_left < 0:"),
    M("x17", SD, "        if conn.sent_bytes + n > conn.limit_bytes:\n", "        if conn.sent_bytes + n >= conn.limit_bytes:\n"),
    M("x18", SD, "        if n > peer.max_message_bytes:\n", "        if n >= peer.max_message_bytes:\n"),
    M("x19", SD, "            if n <= max_frame:\n                out +=",
      "            if n < max_frame:\n                out +=",
      equivalent="a message of exactly max_frame bytes, fragmented, is one frame with END_MESSAGE: the same bytes"),
    M("x20", OUT, "last = start + max_frame >= n", "last = start + max_frame > n"),
    # --- releasing, credit, forgetting (spec §8.5, §8.6, §10.5) ----------------------------
    M("x21", RL, "        self._conn_recv.consume(nbytes, 0)\n        tuner = st.tuner",
      "        tuner = st.tuner"),
    M("x22", RL, "            and rw.held_messages == 0\n            and rw.consumed_messages > st.reported_consumed",
      "            and rw.held_messages == 0\n            and rw.consumed_messages >= st.reported_consumed"),
    M("x23", RL, "            and rw.held_messages == 0\n", ""),
    M("x24", RL, "        if self.state is CONNECTION_CLOSED:\n            return\n        update = self._conn_recv.update()",
      "        update = self._conn_recv.update()"),
    M("x25", X, "and st.recv.held_messages == 0 and st.partial is None:", "and st.partial is None:"),
    M("x26", ST, "        self.open_count[st.id & 1] -= 1\n",
      "        pass\n"),
    M("x27", X, "self._conn_recv.consume(st.recv.consume_all(), 0)", "st.recv.consume_all()"),
    # --- connection verbs, the reply bound, timers (spec §10.4, §10.7, §10.7.1, §11) -------
    M("x28", X, "if len(self._pings) >= MAX_OUTSTANDING_PINGS:", "if len(self._pings) > MAX_OUTSTANDING_PINGS:"),
    M("x29", ST, "            last = min(last, self.goaway_sent_last)\n",
      "            pass\n",
      equivalent="no peer stream above our first GOAWAY's last_stream is ever accepted (_open_peer_stream refuses it first), so the highest accepted id never passes it"),
    M("x31", X, "        graceful = error_code is ErrorCode.NO_ERROR\n",
      "        graceful = True\n"),
    M("x32", L, "self.tokens = min(self.tokens + refill, self.limits.glitch_burst)",
      "self.tokens = self.tokens + refill",
      equivalent="the tokens are read only by spend(), which caps them at the burst (min(tokens, glitch_burst)) before spending one"),
    M("x33", L, "        elif now > self.time:",
      "        elif now >= self.time:",
      equivalent="at now == the last time the refill is 0 tokens"),
    M("x34", T, "            if now >= self._ping_deadline(frame):",
      "            if now > self._ping_deadline(frame):"),
    M("x35", T, "elif keepalive and now >= self._last_rx + keepalive:", "elif keepalive and now > self._last_rx + keepalive:"),
    M("x36", OUT, "elif now >= entry.sent_at + interval:",
      "elif now > entry.sent_at + interval:"),
    M("x37", OUT, "        return self.replies > self.max_replies\n",
      "        return self.replies >= self.max_replies\n"),
    M("x38", OUT, "        if self.replies > self.max_replies:\n            raise",
      "        if self.replies >= self.max_replies:\n            raise"),
    M("x39", T, "if self._probe_due() and now >= self._next_probe:", "if self._probe_due() and now > self._next_probe:"),
    M("x40", OUT, "at = 2 if self.preface_queued else 0",
      "at = 0"),
    # --- the receive hot path and runs of whole messages (spec §8.4) -----------------------
    M("x41", IN, "if length > room_bytes or not room_messages or length > self.max_message:",
      "if length > room_bytes + 1 or not room_messages or length > self.max_message:"),
    M("x42", IN, "if length > room_bytes or not room_messages or length > self.max_message:",
      "if length > room_bytes or room_messages < 0 or length > self.max_message:"),
    M("x43", IN, "if length > room_bytes or not room_messages or length > self.max_message:",
      "if length > room_bytes or not room_messages:"),
    M("x44", IN, "                conn.receive(length, 0, \"the connection\")  # short there only: raises\n",
      "                pass  # short there only: raises\n",
      equivalent="it is reached only with the stream in room and the connection short: "
      "without it the frame goes back to walk(), which hands its header at once to "
      "_check_data_header, whose _conn_check raises the same FLOW_CONTROL_ERROR with the "
      "same message before anything else is changed"),
    M("x45", IN, "while n - pos >= HEADER_SIZE and count < room_messages:",
      "while n - pos >= HEADER_SIZE and count <= room_messages:"),
    M("x46", IN, "max_whole = min(self.max_frame, self.max_message)",
      "max_whole = self.max_frame"),
    M("x47", IN, "or nbytes + length > room_bytes", "or nbytes + length > room_bytes + 1"),
    M("x48", IN, "or nbytes + length > room_bytes", "or nbytes + length >= room_bytes",
      equivalent="a message that exactly fills the room leaves the run and is taken by the "
      "next call of _whole_messages from walk(), whose checks accept it into the same batch"),
    M("x49", C, "            stream.advertised_bytes - stream.received_bytes,\n            conn.advertised_bytes - conn.received_bytes,\n",
      "            stream.advertised_bytes - stream.received_bytes,\n            stream.advertised_bytes - stream.received_bytes,\n"),
    M("x50", IN, "                or end > n\n",
      ""),
    M("x51", IN, "                next_sid != sid\n                or ftype",
      "                False\n                or ftype"),
    M("x52", IN, "                or flags != _END_MESSAGE\n",
      ""),
    M("x53", C, "        stream.advertised_messages - stream.received_messages,\n    )",
      "        stream.advertised_messages - stream.received_messages + 1,\n    )"),
    M("x54", IN, "            if len(data) < start:\n", "            if len(data) <= start:\n"),
    M("x55", IN, "if len(buf) < self.need and self.preface_done:",
      "if len(buf) <= self.need and self.preface_done:"),
    M("x56", IN, "        if have < PREFACE_SIZE:\n", "        if have <= PREFACE_SIZE:\n"),
    # --- header-time checks, fragments, new streams (spec §6, §7.3, §8.4) ------------------
    M("x57", RV, "            if length > ls.stream_bytes:\n", "            if length >= ls.stream_bytes:\n"),
    M("x58", RV, "            if length > ls.max_message_bytes:\n                opened",
      "            if length >= ls.max_message_bytes:\n                opened"),
    M("x59", RV, "            or rw.received_messages + begins > rw.advertised_messages\n        ):\n            rw.receive(",
      "            or rw.received_messages + begins > rw.advertised_messages\n        ) and False:\n            rw.receive("),
    M("x60", RV, "if so_far + length > self.local_settings.max_message_bytes:",
      "if so_far + length >= self.local_settings.max_message_bytes:"),
    M("x61", RV, "so_far = st.partial_len if st.partial is not None else 0", "so_far = 0"),
    M("x62", ST, "return self.open_count[stream_id & 1] >= max_streams",
      "return self.open_count[stream_id & 1] > max_streams"),
    M("x64", ST, "            return stream_id >= self.next_local_id\n",
      "            return stream_id > self.next_local_id\n"),
    M("x65", ST, "        return stream_id > self.highest_peer_id\n",
      "        return stream_id >= self.highest_peer_id\n"),
    M("x66", ST, "            and stream_id > self.goaway_sent_last\n",
      "            and stream_id >= self.goaway_sent_last\n",
      equivalent="it is asked only of idle peer ids, which are above the highest peer id, which is at least our last_stream: stream_id == last_stream never reaches it"),
    M("x68", RV, "and length < self.limits.min_fragment_bytes", "and length <= self.limits.min_fragment_bytes"),
    M("x69", RV, "if st.partial_len + length > self.local_settings.max_message_bytes:",
      "if st.partial_len + length >= self.local_settings.max_message_bytes:"),
    M("x70", RV, "            st.partial_len += length\n", ""),
    # --- the glitch budget (spec §10.7.1) --------------------------------------------------
    M("x71", L, "        if tokens < 0:\n", "        if tokens <= 0:\n"),
    M("x72", L, "tokens = min(tokens, limits.glitch_burst) - 1", "tokens = tokens - 1"),
    M("x73", L, "            tokens += (consumed - self.consumed) / limits.glitch_refill_bytes\n",
      ""),
    M("x74", RV, 'self._glitch(f"{code.name} on stream {st.id}")', "pass"),
    M("x75", CT, "if raised < self._credit_step(peer.connection_bytes)",
      "if raised <= self._credit_step(peer.connection_bytes)"),
    M("x76", CT, "            and raised_bytes < self._credit_step(peer.stream_bytes)\n",
      "            and raised_bytes <= self._credit_step(peer.stream_bytes)\n"),
    M("x77", CT, "return min(self.limits.min_credit_step, step)", "return self.limits.min_credit_step"),
    M("x78", CT, "            and st.peer_consumed == old_consumed\n", ""),
    M("x79", CT, "            not was_idle  # opening a stream is progress (spec §6.2)", "            True"),
    M("x80", CT, "if st.state is StreamState.CLOSED or not self._table.is_ours(sid):",
      "if st.state is StreamState.CLOSED:"),
    M("x81", CT, "frame.bytes_limit > limits[0]", "frame.bytes_limit >= limits[0]"),
    M("x82", CT, "frame.messages_limit > limits[1])", "frame.messages_limit >= limits[1])"),
    M("x83", CT, "        if self._goaways_received > 1:\n",
      "        if self._goaways_received >= 1:\n"),
    # --- CREDIT, RESET, GOAWAY, EOF (spec §5.3, §10.4, §10.6) ------------------------------
    M("x84", ST, "        if consumed > self.send.sent_messages:\n",
      "        if consumed >= self.send.sent_messages:\n"),
    M("x85", ST, "if self.peer_consumed is None or consumed > self.peer_consumed:",
      "if self.peer_consumed is None or consumed != self.peer_consumed:"),
    M("x86", CT, "if self._table.is_idle(sid) and not self._table.beyond_our_goaway(sid):",
      "if self._table.is_idle(sid):"),
    M("x87", CT, "                rx.events.append(\n                    StreamReset(st.id, frame.code, frame.reason, True, st.peer_consumed)\n                )\n",
      "                pass\n"),
    M("x88", CT, "self._table.is_ours(st.id) and st.id > last and st.state",
      "self._table.is_ours(st.id) and st.id >= last and st.state"),
    M("x89", ST, "            last_stream = min(last_stream, self.goaway_received_last)\n",
      "            pass\n"),
    M("x90", CT, "            self._move(ConnectionInput.GRACEFUL_GOAWAY)\n            return\n",
      "            self._move(ConnectionInput.GRACEFUL_GOAWAY)\n"),
    M("x91", CT, "clean = self._table.goaway_seen and not truncated and not self._table.any_open()",
      "clean = self._table.goaway_seen and not truncated"),
    # --- connection window tuning and the budget (spec §8.9 rule 8) ------------------------
    M("x92", T, "window = max(floor, min(want, cap))", "window = min(want, cap)"),
    M("x93", T, "            if share < window:\n", "            if share <= window:\n"),
    M("x94", RL, "if now >= self._conn_next_tune and", "if now > self._conn_next_tune and"),
    # --- nothing is sent after a connection error (spec §10.2) -----------------------------
    M("x95", RL, "        if self.state is CONNECTION_CLOSED:\n            pass  # spec §10.2: nothing is sent after a connection error\n        elif",
      "        if False:\n            pass  # spec §10.2: nothing is sent after a connection error\n        elif"),
    M("x96", CT, "            self._move(ConnectionInput.ERROR)  # spec §10.2: it sends nothing further\n",
      "            pass  # spec §10.2: it sends nothing further\n"),

    # --- new since the split of _connection.py (#10) and spec 1.1 ---------------------------
    M("c66", C, "(the hot path, spec §8.4).\"\"\"\n        self.received_bytes += nbytes\n",
      "(the hot path, spec §8.4).\"\"\"\n"),
    M("c67", C, "        sent > stream.limit_bytes\n",
      "        sent >= stream.limit_bytes\n"),
    M("c68", C, "        or conn_sent > conn.limit_bytes\n",
      "        or conn_sent >= conn.limit_bytes\n"),
    M("c69", C, "or stream.sent_messages >= stream.limit_messages  # type: ignore[operator]",
      "or stream.sent_messages > stream.limit_messages  # type: ignore[operator]"),
    M("c70", C, "self.funded_bytes + raised_bytes > self.sent_bytes",
      "self.funded_bytes + raised_bytes >= self.sent_bytes"),
    M("c71", C, "or self.funded_count + 1 > self.sent_messages",
      "or self.funded_count + 1 >= self.sent_messages"),
    M("f53", B, "if declared is not None and declared > MAX_MAP_ENTRIES:",
      "if declared is not None and declared >= MAX_MAP_ENTRIES:"),
    M("l10", L, "MIN_FRAME_RATE: Final = 16384",
      "MIN_FRAME_RATE: Final = 16385"),
    M("l11", L, "(and the preface).\nFRAME_TIMEOUT: Final = 10.0",
      "(and the preface).\nFRAME_TIMEOUT: Final = 11.0"),
    M("x97", T, "if frame is not None and now >= frame:",
      "if frame is not None and now > frame:"),
    M("x98", T, "return started + self.frame_timeout + length / MIN_FRAME_RATE",
      "return started + self.frame_timeout"),
    M("x99", T, "return deadline if frame is None else max(deadline, frame)",
      "return deadline"),
    M("x100", T, "elif self._frame_started is None or inbound.activity:",
      "elif self._frame_started is None:"),
    M("x101", IN, "if self.preface_done and len(self.buf) >= HEADER_SIZE:\n            return self.need",
      "if self.preface_done and len(self.buf) > HEADER_SIZE:\n            return self.need"),
    M("x102", IN, "            if n - pos >= HEADER_SIZE:\n                self.need",
      "            if n - pos > HEADER_SIZE:\n                self.need"),
    M("x103", CT, "    PongFrame: ControlReceiving._on_pong,\n",
      "    PongFrame: ControlReceiving._on_unknown,\n"),
    M("x104", CT, "    BlockedFrame: ControlReceiving._on_blocked,\n",
      "    BlockedFrame: ControlReceiving._on_unknown,\n"),
    M("x105", CT, "        self._glitch(f\"unknown frame type {frame.type}\")  # ignored",
      "        pass  # ignored"),
    M("x106", CT, "        if self._output.urgent:\n",
      "        if True:\n"),
    M("x107", ST, "            and stream_id & 1 != self.parity\n",
      ""),
    M("x108", ST, "        self.goaway_sent_last = last\n",
      ""),
    M("x109", ST, "return self.goaway_received_last is not None or self.goaway_sent_last is not None",
      "return self.goaway_received_last is not None"),
    M("x110", ST, "StreamState.CLOSED if stream_id < self.next_local_id else",
      "StreamState.CLOSED if stream_id <= self.next_local_id else"),
    M("x111", ST, "        if accepted > self.send.sent_messages:\n",
      "        if accepted >= self.send.sent_messages:\n"),
    M("x112", SD, "            and rw.held_messages\n            and rw.consumed_messages > st.reported_consumed",
      "            and rw.held_messages\n            and rw.consumed_messages >= st.reported_consumed"),
    M("x113", RV, "        if conn.received_bytes + length > conn.advertised_bytes:\n            conn.receive(length, 0, \"the connection\")  # raises",
      "        if conn.received_bytes + length >= conn.advertised_bytes:\n            conn.receive(length, 0, \"the connection\")  # raises"),
    M("x114", RV, "        ) or self._table.at_peer_limit(sid, self.local_settings.max_streams)\n",
      "        )\n"),
    M("x115", IN, "max_whole = min(self.max_frame, self.max_message)",
      "max_whole = self.max_message"),
    M("x116", IN, "        if length > self.max_frame or not sid:\n",
      "        if not sid:\n"),
    M("x117", SD, "if n > max_message or n > bytes_left - nbytes or sent >= messages_left:",
      "if n > max_message or n > bytes_left - nbytes or sent > messages_left:"),
]
# fmt: on


def source_files(root: Path) -> list[Path]:
    """The core modules a snippet is searched in."""
    pkg = root / "flowproto"
    return sorted([*pkg.glob("_*.py"), *pkg.glob("*/_*.py")])


@dataclasses.dataclass
class Located:
    path: Path | None  # relative to the root; None if stale or ambiguous
    problem: str | None = None


def locate(mutant: Mutant, root: Path) -> Located:
    """Where ``mutant.original`` occurs: exactly once over all core modules, or a problem."""
    hits: list[tuple[Path, int]] = []
    for path in source_files(root):
        count = path.read_text(encoding="utf-8").count(mutant.original)
        if count:
            hits.append((path.relative_to(root), count))
    total = sum(count for _, count in hits)
    if total == 0:
        return Located(
            None, f"stale: snippet not found in any flowproto/_*.py (was in {mutant.label})"
        )
    if total > 1:
        where = ", ".join(f"{p} x{c}" for p, c in hits)
        return Located(None, f"ambiguous: snippet found {total} times ({where})")
    return Located(hits[0][0])


@dataclasses.dataclass
class Result:
    mutant: Mutant
    status: str  # killed, timeout, survived, stale, ambiguous, error
    where: str
    seconds: float
    detail: str = ""


_RUNNER = """\
import sys
root = sys.argv[1]
sys.path.insert(0, root)
import flowproto
if not flowproto.__file__.startswith(root):
    sys.stderr.write(f"MUTATE: flowproto imported from {flowproto.__file__}, not {root}\\n")
    sys.exit(99)
import pytest
sys.exit(pytest.main(sys.argv[2:]))
"""


def make_copy(dest: Path, source: Path = ROOT) -> None:
    """Copy what the tests need from ``source`` (the working tree, or its snapshot)."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".hypothesis", ".pytest_cache")
    for name in COPY:
        src = source / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=ignore)
        elif src.exists():
            shutil.copy2(src, dest / name)


_RUNNING: set[subprocess.Popen[str]] = set()
_STOPPING = threading.Event()


def _interrupted(signum: int, frame: object) -> None:
    """SIGTERM or SIGINT: start no more test runs, stop those this process started."""
    _STOPPING.set()
    for proc in list(_RUNNING):
        proc.kill()
    raise KeyboardInterrupt


def run_tests(copy: Path, tests: list[str], timeout: float) -> tuple[int | None, str]:
    """pytest -x in ``copy``; returns (exit code, or None on timeout; the first failure)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(copy)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.pop("FLOWPROTO_NO_SKIPS", None)
    args = [
        sys.executable,
        "-c",
        _RUNNER,
        str(copy),
        "-x",
        "-q",
        "-p",
        "no:cacheprovider",
        "--hypothesis-seed=0",  # the same examples for every mutant: results repeat
        "-o",
        "addopts=--strict-markers",
        *tests,
    ]
    proc = subprocess.Popen(
        args, cwd=copy, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    _RUNNING.add(proc)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return None, ""
    finally:
        _RUNNING.discard(proc)
    if proc.returncode == 99:
        raise RuntimeError(out.strip())
    lines = out.strip().splitlines()
    failed = [ln for ln in lines if ln.startswith(("FAILED", "ERROR"))]
    return proc.returncode, (failed[0] if failed else (lines[-1] if lines else ""))


def run_stages(copy: Path, stages: list[list[str]], timeout: float) -> tuple[int | None, str]:
    """Each stage in turn until one fails; the boundary tests alone first, so that a
    mutant they kill costs one small collection, not the whole fast suite's."""
    deadline = time.monotonic() + timeout
    code: int | None = 0
    tail = ""
    for tests in stages:
        code, tail = run_tests(copy, tests, max(1.0, deadline - time.monotonic()))
        if code != 0:
            break
    return code, tail


def run_mutant(
    mutant: Mutant, stages: list[list[str]], timeout: float, snapshot: Path, run: bool = True
) -> Result:
    """Mutate a fresh copy of ``snapshot`` and run the test stages in it (if ``run``)."""
    if _STOPPING.is_set():
        return Result(mutant, "error", mutant.label, 0.0, "not run: interrupted")
    located = locate(mutant, snapshot)
    if located.path is None:
        assert located.problem is not None
        status = located.problem.split(":", 1)[0]
        return Result(mutant, status, mutant.label, 0.0, located.problem)
    if not run:
        return Result(mutant, "not run", located.path.name, 0.0, "marked equivalent")
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=f"mutant-{mutant.id}-") as tmp:
        copy = Path(tmp)
        make_copy(copy, snapshot)
        target = copy / located.path
        text = target.read_text(encoding="utf-8")
        target.write_text(text.replace(mutant.original, mutant.mutated, 1), encoding="utf-8")
        code, tail = run_stages(copy, stages, timeout)
    seconds = time.monotonic() - start
    where = str(located.path.name)
    if code is None:
        return Result(mutant, "timeout", where, seconds, f"no result within {timeout:.0f} s")
    if code == 0:
        return Result(mutant, "survived", where, seconds, tail)
    if code in (1, 2):  # tests failed, or collection failed (the mutant broke an import)
        return Result(mutant, "killed", where, seconds, tail)
    return Result(mutant, "error", where, seconds, f"pytest exit code {code}: {tail}")


def score_table(results: list[Result]) -> str:
    """Per module: killed (incl. timeouts), survived, equivalent, stale; and the score."""
    rows = []
    modules = sorted({r.mutant.label for r in results})
    totals = [0, 0, 0, 0]
    for module in [*modules, "total"]:
        rs = results if module == "total" else [r for r in results if r.mutant.label == module]
        equivalent = sum(1 for r in rs if r.mutant.equivalent and r.status not in ("stale",))
        counted = [r for r in rs if not r.mutant.equivalent]
        killed = sum(1 for r in counted if r.status in ("killed", "timeout"))
        survived = sum(1 for r in counted if r.status in ("survived", "error"))
        stale = sum(1 for r in rs if r.status in ("stale", "ambiguous"))
        if module != "total":
            for i, v in enumerate((killed, survived, equivalent, stale)):
                totals[i] += v
        score = f"{100 * killed / (killed + survived):.1f}%" if killed + survived else "-"
        rows.append(f"{module:<16}{killed:>8}{survived:>10}{equivalent:>12}{stale:>7}  {score:>7}")
    head = (
        f"{'module':<16}{'killed':>8}{'survived':>10}{'equivalent':>12}{'stale':>7}  {'score':>7}"
    )
    return "\n".join([head, *rows])


def run_all(
    mutants: list[Mutant],
    stages: list[list[str]],
    args: argparse.Namespace,
    results: list[Result],
    snapshot: Path,
) -> None:
    """Run the mutants ``args.jobs`` at a time, printing each result as it comes."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = [
            pool.submit(
                run_mutant,
                m,
                stages,
                args.timeout,
                snapshot,
                args.run_equivalent or not m.equivalent,
            )
            for m in mutants
        ]
        for future in concurrent.futures.as_completed(futures):
            r = future.result()
            results.append(r)
            eq = " (equivalent)" if r.mutant.equivalent else ""
            print(f"{r.mutant.id:<4} {r.status:<9}{eq} {r.where:<16} {r.seconds:5.0f}s  {r.detail}")
            sys.stdout.flush()
    if args.full and not args.all_tests:
        again = [r for r in results if r.status == "survived" and not r.mutant.equivalent]
        if again:
            print(f"\nre-running {len(again)} survivors against the whole suite", flush=True)
            with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
                redo = list(
                    pool.map(
                        lambda r: run_mutant(r.mutant, [["tests"]], 3 * args.timeout, snapshot),
                        again,
                    )
                )
            for old, new in zip(again, redo, strict=True):
                results[results.index(old)] = new
                print(f"{new.mutant.id:<4} {new.status:<9} (whole suite) {new.detail}", flush=True)


def report(results: list[Result], ids: list[str]) -> None:
    """Every result that is not a plain kill, then the score table."""
    results.sort(key=lambda r: ids.index(r.mutant.id))
    print("\nmutant results (killed includes timeouts):")
    for r in results:
        if (
            r.status in ("survived", "error", "stale", "ambiguous", "timeout")
            or r.mutant.equivalent
        ):
            eq = f" [equivalent: {r.mutant.equivalent}]" if r.mutant.equivalent else ""
            print(
                f"  {r.mutant.id} {r.status} in {r.where}: {r.mutant.original!r} -> "
                f"{r.mutant.mutated!r}{eq}"
            )
            if r.status == "timeout":
                print(f"      killed by timeout: {r.detail}")
            elif r.status in ("stale", "ambiguous", "error"):
                print(f"      {r.detail}")
    print()
    print(score_table(results))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", metavar="ID", help="run only these mutants")
    parser.add_argument("--jobs", type=int, default=2, help="mutants run at once (default 2)")
    parser.add_argument(
        "--timeout",
        type=float,
        default=900.0,
        help="seconds per mutant (default 900; at least 3 x the baseline's time is used)",
    )
    parser.add_argument(
        "--run-equivalent",
        action="store_true",
        help="run the mutants marked equivalent too (they should survive; not scored)",
    )
    parser.add_argument(
        "--all-tests", action="store_true", help="run the whole suite for every mutant (slow)"
    )
    parser.add_argument(
        "--full", action="store_true", help="re-run survivors of the fast tests on the whole suite"
    )
    parser.add_argument("--check", action="store_true", help="only locate every snippet")
    parser.add_argument(
        "--skip-baseline",
        action="store_true",
        help="do not first check that the unmutated tree passes (only if it just did)",
    )
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    args = parser.parse_args(argv)

    ids = [m.id for m in MUTANTS]
    duplicates = {i for i in ids if ids.count(i) > 1}
    if duplicates:
        parser.error(f"duplicate mutant ids: {sorted(duplicates)}")
    mutants = MUTANTS
    if args.only:
        unknown = set(args.only) - set(ids)
        if unknown:
            parser.error(f"unknown mutant ids: {sorted(unknown)}")
        mutants = [m for m in MUTANTS if m.id in args.only]
    if args.list:
        for m in mutants:
            eq = f"  [equivalent: {m.equivalent}]" if m.equivalent else ""
            print(f"{m.id} {m.label}: {m.original!r} -> {m.mutated!r}{eq}")
        return 0
    if args.check:
        bad = 0
        for m in mutants:
            located = locate(m, ROOT)
            if located.path is None:
                bad += 1
                print(f"{m.id} {m.label}: {located.problem}\n    {m.original!r}")
            elif located.path.name != m.label:  # found, but the score table would misfile it
                print(f"{m.id}: labelled {m.label}, found in {located.path} (fix the label)")
        print(f"{len(mutants) - bad} of {len(mutants)} snippets found exactly once")
        return 1 if bad else 0

    stages = [["tests"]] if args.all_tests else STAGES
    tests = [t for stage in stages for t in stage]
    # One snapshot of the working tree, taken now: editing the tree while mutants run
    # changes nothing in this run. The unmutated snapshot must pass, or every mutant
    # would look killed.
    with tempfile.TemporaryDirectory(prefix="mutant-snapshot-") as snap:
        snapshot = Path(snap)
        make_copy(snapshot)
        if not args.skip_baseline:
            start = time.monotonic()
            code, tail = run_stages(snapshot, stages, args.timeout)
            if code != 0:
                print(
                    f"the unmutated tree fails its tests ({tail}); fix that first", file=sys.stderr
                )
                return 2
            elapsed = time.monotonic() - start
            args.timeout = max(args.timeout, 3 * elapsed)  # a loaded machine is no kill
            print(f"baseline: {' '.join(tests)} pass in {elapsed:.0f} s", flush=True)
        results: list[Result] = []
        signal.signal(signal.SIGTERM, _interrupted)
        signal.signal(signal.SIGINT, _interrupted)
        try:
            run_all(mutants, stages, args, results, snapshot)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130
    report(results, ids)
    survived = sum(
        1 for r in results if r.status in ("survived", "error") and not r.mutant.equivalent
    )
    stale = sum(1 for r in results if r.status in ("stale", "ambiguous"))
    return 1 if survived or stale else 0


if __name__ == "__main__":
    sys.exit(main())
