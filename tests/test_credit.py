"""Property tests of the credit arithmetic: ``SendCredit`` and ``ReceiveWindow`` (spec §8).

Each test runs a random program against the class and against a few lines of model
arithmetic, and checks after every operation that the two agree: a spend or a receive
fails exactly when it would pass a limit (and then changes nothing), a grant is a
``max()``, and the receiver never holds more than its window (spec §8.2-§8.6).
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from flowproto import ErrorCode, LocalProtocolError, ReceiveWindow, RemoteProtocolError, SendCredit
from flowproto._frames import MAX_COUNTER

PROPERTY = settings(max_examples=300, deadline=None)

counts = st.integers(min_value=0, max_value=300)
limits = st.integers(min_value=0, max_value=2000)


send_ops = st.lists(
    st.one_of(
        st.tuples(st.just("grant"), st.none() | limits, st.none() | limits),
        st.tuples(st.just("spend"), counts, st.integers(min_value=0, max_value=3)),
    ),
    max_size=60,
)


@PROPERTY
@given(
    limit_bytes=limits,
    limit_messages=st.none() | st.integers(min_value=0, max_value=20),
    ops=send_ops,
)
def test_send_credit_never_spends_past_a_limit(
    limit_bytes: int, limit_messages: int | None, ops: list[tuple[str, int | None, int | None]]
) -> None:
    """spend() raises FLOW_CONTROL_ERROR exactly when it would pass a limit (spec §8.3).

    A refused spend counts nothing; a grant raises a limit only upward (spec §8.2), and
    ``limit_messages is None`` (the connection) never counts messages against anything.
    """
    credit = SendCredit(limit_bytes, limit_messages)
    model_bytes, model_messages = limit_bytes, limit_messages
    sent_bytes = sent_messages = 0
    for op, a, b in ops:
        if op == "grant":
            raised = credit.grant(a, b)
            new_bytes = model_bytes if a is None else max(model_bytes, a)
            new_messages = model_messages
            if model_messages is not None and b is not None:
                new_messages = max(model_messages, b)
            assert raised == ((new_bytes, new_messages) != (model_bytes, model_messages))
            model_bytes, model_messages = new_bytes, new_messages
        else:
            assert a is not None and b is not None
            over = sent_bytes + a > model_bytes or (
                model_messages is not None and sent_messages + b > model_messages
            )
            if over:
                try:
                    credit.spend(a, b)
                except LocalProtocolError as exc:
                    assert exc.error_code is ErrorCode.FLOW_CONTROL_ERROR
                else:
                    raise AssertionError(f"spend({a}, {b}) past the limit was allowed")
            else:
                credit.spend(a, b)
                sent_bytes += a
                sent_messages += b
        assert (credit.limit_bytes, credit.limit_messages) == (model_bytes, model_messages)
        assert (credit.sent_bytes, credit.sent_messages) == (sent_bytes, sent_messages)
        # What was sent never passes what was granted.
        assert credit.bytes_left >= 0
        if model_messages is None:
            assert credit.messages_left is None
        else:
            assert credit.messages_left is not None and credit.messages_left >= 0


@PROPERTY
@given(
    initial=st.tuples(limits, st.integers(min_value=0, max_value=20)),
    grants=st.lists(st.tuples(st.none() | limits, st.none() | limits), max_size=20),
    data=st.data(),
)
def test_grants_are_a_max_so_order_and_duplicates_do_not_matter(
    initial: tuple[int, int], grants: list[tuple[int | None, int | None]], data: st.DataObject
) -> None:
    """Applying CREDITs in any order, with repeats, gives the same limits (spec §8.2)."""
    shuffled = data.draw(st.permutations(grants), label="shuffled")
    repeats = data.draw(st.lists(st.sampled_from(grants), max_size=10) if grants else st.just([]))
    in_order = SendCredit(*initial)
    for g in grants:
        in_order.grant(*g)
    reordered = SendCredit(*initial)
    for g in shuffled + repeats:
        reordered.grant(*g)
    assert (reordered.limit_bytes, reordered.limit_messages) == (
        in_order.limit_bytes,
        in_order.limit_messages,
    )
    expected_bytes = max([initial[0]] + [b for b, _ in grants if b is not None])
    expected_messages = max([initial[1]] + [m for _, m in grants if m is not None])
    assert (in_order.limit_bytes, in_order.limit_messages) == (expected_bytes, expected_messages)


@st.composite
def windows(draw: st.DrawFn) -> tuple[int, int, int]:
    """(window_bytes, window_messages, min_progress) with window_bytes >= min_progress (§9 R3)."""
    min_progress = draw(st.integers(min_value=0, max_value=500))
    window_bytes = draw(st.integers(min_value=min_progress, max_value=4 * min_progress + 10))
    # The connection's window counts no messages: it uses MAX_COUNTER (spec §12).
    window_messages = draw(st.integers(min_value=1, max_value=10) | st.just(MAX_COUNTER))
    return window_bytes, window_messages, min_progress


receive_ops = st.lists(
    st.one_of(
        st.tuples(st.just("receive"), counts, st.integers(min_value=0, max_value=3)),
        st.tuples(st.just("consume"), counts, st.integers(min_value=0, max_value=3)),
        st.tuples(st.just("consume_all"), st.just(0), st.just(0)),
        st.tuples(st.just("update"), st.just(0), st.just(0)),
    ),
    max_size=80,
)


@PROPERTY
@given(window=windows(), ops=receive_ops)
def test_receive_window_checks_limits_and_holds_at_most_the_window(
    window: tuple[int, int, int], ops: list[tuple[str, int, int]]
) -> None:
    """receive() fails exactly when over the advertised limit; held <= window (spec §8.4).

    Limits come only from update(), so the advertised limit never passes
    ``consumed + window`` (spec §8.6) and what is held never passes the window. Nothing
    more is released than arrived (spec §8.5); a failed receive or consume changes nothing.
    Every CREDIT that update() asks for raises a limit; asked again at once, it asks for
    none (no redundant CREDIT, spec §8.6). held_peak() is exactly the most ever held.
    """
    window_bytes, window_messages, min_progress = window
    rw = ReceiveWindow(window_bytes, window_messages, min_progress)
    received = [0, 0]
    consumed = [0, 0]
    advertised = [window_bytes, window_messages]
    peak = [0, 0]  # the model's: the most held after any operation
    for op, nbytes, nmessages in ops:
        if op == "receive":
            over = received[0] + nbytes > advertised[0] or received[1] + nmessages > advertised[1]
            if over:
                try:
                    rw.receive(nbytes, nmessages, "stream 1")
                except RemoteProtocolError as exc:
                    assert exc.error_code is ErrorCode.FLOW_CONTROL_ERROR
                else:
                    raise AssertionError(f"receive({nbytes}, {nmessages}) over the limit passed")
            else:
                rw.receive(nbytes, nmessages, "stream 1")
                received[0] += nbytes
                received[1] += nmessages
        elif op == "consume":
            if nbytes > received[0] - consumed[0] or nmessages > received[1] - consumed[1]:
                try:
                    rw.consume(nbytes, nmessages)
                except LocalProtocolError:
                    pass
                else:
                    raise AssertionError(f"consume({nbytes}, {nmessages}) over what is held")
            else:
                rw.consume(nbytes, nmessages)
                consumed[0] += nbytes
                consumed[1] += nmessages
        elif op == "consume_all":
            assert rw.consume_all() == received[0] - consumed[0]
            consumed = list(received)
        else:
            update = rw.update()
            if update is not None:
                assert update == (rw.advertised_bytes, rw.advertised_messages)
                assert update[0] > advertised[0] or update[1] > advertised[1]
                assert update[0] >= advertised[0] and update[1] >= advertised[1]
                advertised = list(update)
                assert rw.update() is None
        assert (rw.received_bytes, rw.received_messages) == tuple(received)
        assert (rw.consumed_bytes, rw.consumed_messages) == tuple(consumed)
        assert (rw.advertised_bytes, rw.advertised_messages) == tuple(advertised)
        assert 0 <= rw.held_bytes <= window_bytes
        assert 0 <= rw.held_messages <= window_messages
        peak = [max(peak[0], rw.held_bytes), max(peak[1], rw.held_messages)]
        assert rw.held_peak() == tuple(peak)  # exact, not sampled
        assert rw.advertised_bytes <= rw.consumed_bytes + window_bytes
        assert rw.advertised_messages <= rw.consumed_messages + window_messages


@PROPERTY
@given(
    window=windows(),
    rounds=st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=1000),
            st.integers(min_value=0, max_value=10),
            st.integers(min_value=0, max_value=1000),
            st.integers(min_value=0, max_value=10),
        ),
        max_size=20,
    ),
)
def test_consuming_everything_held_leaves_min_progress_open(
    window: tuple[int, int, int], rounds: list[tuple[int, int, int, int]]
) -> None:
    """Once all that arrived is consumed, update() leaves room for one max-size message.

    spec §8.5: the advertised limits are then at least ``consumed + max_message_bytes``
    bytes and ``consumed + 1`` messages, without waiting for BLOCKED or more input; this is
    what spec §9 needs for deadlock freedom. The peer sends as much as it may each round
    (clamped to the limits), and the application consumes some of it, then all of it.
    """
    window_bytes, window_messages, min_progress = window
    rw = ReceiveWindow(window_bytes, window_messages, min_progress)
    for want_bytes, want_messages, part_bytes, part_messages in rounds:
        nbytes = min(want_bytes, rw.advertised_bytes - rw.received_bytes)
        nmessages = min(want_messages, rw.advertised_messages - rw.received_messages)
        rw.receive(nbytes, nmessages, "stream 1")
        rw.consume(min(part_bytes, rw.held_bytes), min(part_messages, rw.held_messages))
        rw.update()
        rw.consume(rw.held_bytes, rw.held_messages)
        update = rw.update()
        assert rw.advertised_bytes >= rw.consumed_bytes + min_progress
        assert rw.advertised_messages >= rw.consumed_messages + 1
        if update is not None:
            assert rw.update() is None
