"""The eleven TCP states (RFC 9293 §3.3.2) and every close-side transition in one table.

The open side is three transitions spread over the handshake code (SYN-SENT/SYN-RECEIVED ->
ESTABLISHED); the close side is where states multiply (our CLOSE, the peer's FIN, the ACK of
our FIN, in any order), so its rules are data here, each with its RFC section, in the manner
of h11's `_state.py`. The connection looks a transition up; it never spells one out.
"""

from __future__ import annotations

import enum
from typing import Final


class TcpState(enum.Enum):
    CLOSED = "CLOSED"
    LISTEN = "LISTEN"
    SYN_SENT = "SYN-SENT"
    SYN_RECEIVED = "SYN-RECEIVED"
    ESTABLISHED = "ESTABLISHED"
    FIN_WAIT_1 = "FIN-WAIT-1"
    FIN_WAIT_2 = "FIN-WAIT-2"
    CLOSE_WAIT = "CLOSE-WAIT"
    CLOSING = "CLOSING"
    LAST_ACK = "LAST-ACK"
    TIME_WAIT = "TIME-WAIT"

    # Members are singletons compared by identity: hash them the same way, in C. (Enum's own
    # __hash__ is Python code, and every `state in SEND_STATES` paid for it.)
    __hash__ = object.__hash__


class CloseEvent(enum.Enum):
    """What moves a connection along its close side."""

    CLOSE = "CLOSE"                  # our owner shut the write side (RFC 9293 §3.10.4)
    FIN_RECEIVED = "FIN_RECEIVED"    # the peer's FIN, in sequence (§3.10.7.4, eighth)
    FIN_ACKED = "FIN_ACKED"          # the peer acknowledged our FIN (§3.10.7.4, fifth)

    __hash__ = object.__hash__


CLOSED: Final[TcpState] = TcpState.CLOSED
SYN_SENT: Final[TcpState] = TcpState.SYN_SENT
SYN_RECEIVED: Final[TcpState] = TcpState.SYN_RECEIVED
ESTABLISHED: Final[TcpState] = TcpState.ESTABLISHED
FIN_WAIT_1: Final[TcpState] = TcpState.FIN_WAIT_1
FIN_WAIT_2: Final[TcpState] = TcpState.FIN_WAIT_2
CLOSE_WAIT: Final[TcpState] = TcpState.CLOSE_WAIT
CLOSING: Final[TcpState] = TcpState.CLOSING
LAST_ACK: Final[TcpState] = TcpState.LAST_ACK
TIME_WAIT: Final[TcpState] = TcpState.TIME_WAIT

# (state, event) -> next state. A pair missing here leaves the state as it is.
CLOSE_TRANSITIONS: dict[tuple[TcpState, CloseEvent], TcpState] = {
    # §3.10.4 CLOSE: "queue this until all preceding SENDs have been segmentized, then form a
    # FIN segment and send it. In any case, enter FIN-WAIT-1 state" / "enter LAST-ACK state".
    # (In SYN-SENT/SYN-RECEIVED the FIN waits for ESTABLISHED and the state stays.)
    (ESTABLISHED, CloseEvent.CLOSE): FIN_WAIT_1,
    (CLOSE_WAIT, CloseEvent.CLOSE): LAST_ACK,
    # §3.10.7.4 eighth, FIN bit: ESTABLISHED -> CLOSE-WAIT; FIN-WAIT-1 (our FIN not yet
    # acknowledged) -> CLOSING, a simultaneous close (§3.6 figure 13); FIN-WAIT-2 -> TIME-WAIT.
    (ESTABLISHED, CloseEvent.FIN_RECEIVED): CLOSE_WAIT,
    (FIN_WAIT_1, CloseEvent.FIN_RECEIVED): CLOSING,
    (FIN_WAIT_2, CloseEvent.FIN_RECEIVED): TIME_WAIT,
    # §3.10.7.4 fifth, ACK field: "if the FIN segment is now acknowledged" FIN-WAIT-1 ->
    # FIN-WAIT-2; CLOSING -> TIME-WAIT; LAST-ACK -> CLOSED ("delete the TCB").
    (FIN_WAIT_1, CloseEvent.FIN_ACKED): FIN_WAIT_2,
    (CLOSING, CloseEvent.FIN_ACKED): TIME_WAIT,
    (LAST_ACK, CloseEvent.FIN_ACKED): CLOSED,
}

# States in which queued data may still be (re)transmitted.
SEND_STATES: Final[frozenset[TcpState]] = frozenset({ESTABLISHED, CLOSE_WAIT, FIN_WAIT_1, CLOSING, LAST_ACK})
# States in which the peer may still send us data (RFC 9293 §3.10.7.4, seventh).
RECV_STATES: Final[frozenset[TcpState]] = frozenset({ESTABLISHED, FIN_WAIT_1, FIN_WAIT_2})
# States in which our FIN has been queued and may be (re)sent.
FIN_STATES: Final[frozenset[TcpState]] = frozenset({FIN_WAIT_1, CLOSING, LAST_ACK})
# States in which the owner may still queue data (SEND, §3.10.2).
OPEN_STATES: Final[frozenset[TcpState]] = frozenset({ESTABLISHED, CLOSE_WAIT, SYN_SENT, SYN_RECEIVED})
