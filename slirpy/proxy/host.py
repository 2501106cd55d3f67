"""What the host-side adapters see of the runtime: the `FlowHost` protocol.

The adapters (proxy/tcp.py, proxy/udp.py, proxy/icmp.py, ports.py) turn host socket events
into Stack inputs. They need a handful of things from the runtime that owns them — the
Stack's host inputs, somewhere to register a TCP flow's protocol so the Stack's events reach
it, a coalesced flush, the counters, the read blocks, the loop, the outbound bind address —
and nothing else: they never see `Runtime`, its flow tables or its config. `Runtime`
implements `FlowHost`; tests may hand the adapters any object that does.

This module imports no adapter (the adapters import it), so the protocols name what they
exchange with small protocols of their own (`TcpFlowSocket`, `UdpFlowSocket`, `ReadBlocks`),
and the Stack as the adapters call it (`HostInputs`): the adapters are compiled with mypyc
(setup.py), which checks a parameter or attribute typed with a class at run time but not one
typed with a protocol, so tests can hand them a recorder instead of a Stack.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any, Callable, Protocol


class HostInputs(Protocol):
    """The Stack's inputs that the adapters call (tcpip.stack.Stack has them all: the host
    inputs are attributes there too, each the bound method of the layer that does the work)."""

    tcp_host_connected: Callable[[int, float], None]
    tcp_host_connect_failed: Callable[[int, int, float], None]
    tcp_host_allowance: Callable[[int], int]
    tcp_host_data: Callable[[int, bytes | memoryview, float], bool]
    tcp_host_eof: Callable[[int, float], None]
    tcp_host_reset: Callable[[int, float], None]
    tcp_host_write_paused: Callable[[int, bool, float], None]
    udp_host_datagram: Callable[[int, bytes | memoryview, float], None]
    udp_host_error: Callable[..., None]
    icmp_host_echo_reply: Callable[[int, int, bytes | memoryview, int, float], None]
    icmp_host_error: Callable[..., None]
    icmp_echo_dropped: Callable[[int, str, float], None]

    def tcp_inbound_open(self, client_ip: str, client_port: int, guest_port: int,
                         now: float, guest_ip: bytes | None = None) -> int | None: ...

    def udp_inbound_open(self, client_ip: str, client_port: int, guest_port: int,
                         now: float, guest_ip: bytes | None = None) -> int | None: ...

    def dns_answer(self, querier: bytes, msg: bytes | memoryview,
                   limit: int = 65535) -> bytes | None: ...


class ReadBlocks(Protocol):
    """Where host TCP reads land (proxy.tcp.RecvBlocks)."""

    def room(self) -> memoryview: ...
    def take(self, n: int) -> bytes | memoryview: ...


class TcpFlowSocket(Protocol):
    """A TCP flow's host side as the runtime drives it (proxy.tcp.HostTcpProtocol)."""

    transport: asyncio.Transport | None
    closed: bool

    def close(self, reset: bool) -> None: ...


class UdpFlowSocket(Protocol):
    """A UDP flow's host side as the runtime drives it: an outbound socket
    (proxy.udp.HostUdpFlow) or a published port's client (ports.InboundUdpFlow)."""

    def send(self, data: bytes | bytearray | memoryview) -> None: ...
    def send_many(self, parts: list[bytes | memoryview]) -> None: ...   # in order, as send each
    def close(self) -> None: ...


class FlowHost(Protocol):
    """The runtime as the host-side adapters see it."""

    @property
    def stack(self) -> HostInputs: ...

    @property
    def counters(self) -> defaultdict[str, int]: ...

    @property
    def recv_blocks(self) -> ReadBlocks: ...

    @property
    def loop(self) -> asyncio.AbstractEventLoop: ...

    def request_flush(self) -> None:
        """Flush once, soon (coalesced: one flush per loop iteration however many ask)."""

    def host_data_read(self, flow_id: int, nbytes: int) -> None:
        """`nbytes` were read from `flow_id`'s host socket and handed to the Stack: flush
        soon, as request_flush, or at once when reads of several flows have piled up."""

    def register_tcp_flow(self, flow_id: int, flow: TcpFlowSocket) -> None:
        """The Stack's events for `flow_id` go to `flow` from now on."""

    def unregister_tcp_flow(self, flow_id: int) -> None:
        """`flow_id`'s host side is gone (no-op if it was not registered)."""

    def register_udp_flow(self, flow_id: int, flow: UdpFlowSocket) -> None:
        """The Stack's datagrams for `flow_id` go to `flow` (a published port's client)."""

    def tcp_socket_opened(self) -> None:
        """A host TCP socket exists (connection_made): counted until `tcp_socket_closed`."""

    def tcp_socket_closed(self) -> None:
        """A host TCP socket was closed by its transport (connection_lost)."""

    def bind_address_for(self, host: str) -> str | None:
        """The local address an outbound socket to `host` binds to, or None."""


def remove_reader(loop: asyncio.AbstractEventLoop, fd: int) -> None:
    """`loop.remove_reader(fd)` with its result left unread. The stubs say it returns bool,
    uvloop returns None, and compiled code (mypyc) converts a declared bool result even when
    the call is a statement: TypeError. Every compiled module removes readers through here."""
    unchecked: Any = loop
    unchecked.remove_reader(fd)
