"""What a `TcpConnection` reports to its owner, drained with `next_event()`/`take_events()`.

They live apart from the connection so that the stack (and later one module of every
runtime-facing event) can import them without the state machine.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Established:
    """The three-way handshake completed."""


@dataclass(slots=True)        # not frozen, unlike the other events: one per data segment, and a
class DataReceived:          # frozen dataclass's __init__ costs about twice as much
    """In-order payload from the peer (zero-copy: the segment's payload object or a view of it)."""

    data: bytes | memoryview


@dataclass(frozen=True, slots=True)
class EofReceived:
    """The peer's FIN, after all of its data."""


@dataclass(frozen=True, slots=True)
class Reset:
    """The peer reset the connection ('reset') or we gave up ('timeout', 'syn_timeout')."""

    reason: str


@dataclass(frozen=True, slots=True)
class Closed:
    """Reached CLOSED; the owner may forget the connection. Always the last event."""


TcpEvent = Established | DataReceived | EofReceived | Reset | Closed
