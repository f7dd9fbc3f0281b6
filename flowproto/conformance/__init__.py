"""A conformance suite in the style of h2spec: crafted frames to a peer, its answers checked.

``flowproto conformance HOST:PORT`` runs it against a flowproto endpoint that accepts
connections (``flowproto receive`` is one; an implementation in another language is the
point). Each :class:`Case` has an id made of the spec section it checks and a number
(``4.2/1``), opens its own TCP connection, speaks the wire protocol through a
:class:`Probe` (the preface, a HELLO, then frames built by hand, some of them broken on
purpose) and checks the answer the spec requires:

- a **connection error** passes when the peer sends GOAWAY with the expected code as its
  last frame and then closes. A close without GOAWAY also passes, as in h2spec, unless
  ``strict`` is set; a GOAWAY with another code fails;
- a **stream error** passes on a RESET with the expected code on that stream, with the
  connection still answering PING;
- "ignored" input passes when the connection still answers a PING afterwards and
  nothing else was said about it;
- the budgets of spec §10.7 are optional (MAY): such a case passes when the peer either
  ends the connection with ENHANCE_YOUR_CALM or survives the flood and still answers a
  PING; ``strict`` requires ENHANCE_YOUR_CALM (the reference implementation's behaviour).

Cases marked ``timer`` wait for one of the peer's timers (handshake, frame timeout), up
to ``timer_wait`` seconds.

A **sender** peer (one that connects, as ``flowproto send`` does) is checked by
:func:`run_sender_suite` (``flowproto conformance --listen HOST:PORT``): the sender
connects once per case, and a :class:`Receiver`, the sans-IO core with small windows,
checks every frame it sends against the receiver rules while the case pokes at it
(no credit, a PING, a CREDIT over the maximum, a RESET, a small ``max_streams``, a
GOAWAY). A sender case may advertise other settings (:meth:`Receiver.advertise`).

Receiver cases run concurrently (each on its own connection), sender cases one after
another; results come back in case order. Only the sans-IO core and plain Trio streams
are used, so the suite tests the wire, not this implementation's Trio layer.

Layout: ``_probe`` (crafted bytes, :class:`Probe`, :class:`Receiver`), ``_cases`` (the
receiver cases, in their recorded order), ``_sender_cases``, ``_runner`` (running, the
table, the JSON report, the exit status).
"""

from __future__ import annotations

from ._cases import CASES, FLOOD, case
from ._probe import (
    DEFAULT_TIMEOUT,
    DEFAULT_TIMER_WAIT,
    SENDER_WINDOWS,
    Case,
    CaseFailed,
    CaseSkipped,
    Connect,
    Probe,
    Receiver,
    data,
    describe,
    frame,
    open_stream,
    ping_body,
)
from ._runner import (
    Result,
    exit_status,
    format_table,
    report,
    run_against,
    run_listening,
    run_sender_suite,
    run_suite,
)
from ._sender_cases import SENDER_CASES, sender_case

__all__ = [
    "CASES",
    "DEFAULT_TIMEOUT",
    "DEFAULT_TIMER_WAIT",
    "FLOOD",
    "SENDER_CASES",
    "SENDER_WINDOWS",
    "Case",
    "CaseFailed",
    "CaseSkipped",
    "Connect",
    "Probe",
    "Receiver",
    "Result",
    "case",
    "data",
    "describe",
    "exit_status",
    "format_table",
    "frame",
    "open_stream",
    "ping_body",
    "report",
    "run_against",
    "run_listening",
    "run_sender_suite",
    "run_suite",
    "sender_case",
]
