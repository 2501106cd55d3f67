"""What the host-side adapters see of the runtime: the `FlowHost` protocol.

The adapters (proxy/tcp.py, proxy/udp.py, proxy/icmp.py, ports.py) turn host socket events
into Stack inputs. They need a handful of things from the runtime that owns them — the
Stack's host inputs, somewhere to register a TCP flow's protocol so the Stack's events reach
it, a coalesced flush, the counters, the read blocks, the loop, the outbound bind address —
and nothing else: they never see `Runtime`, its flow tables or its config. `Runtime`
implements `FlowHost`; tests may hand the adapters any object that does.

This module imports no adapter (the adapters import it), so the protocols name what they
exchange with small protocols of their own (`TcpFlowSocket`, `UdpFlowSocket`, `ReadBlocks`).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:  # the adapters call the Stack's own host inputs; no copy of their list here
    from ..tcpip.stack import Stack


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
    def close(self) -> None: ...


class FlowHost(Protocol):
    """The runtime as the host-side adapters see it."""

    @property
    def stack(self) -> Stack: ...

    @property
    def counters(self) -> defaultdict[str, int]: ...

    @property
    def recv_blocks(self) -> ReadBlocks: ...

    @property
    def loop(self) -> asyncio.AbstractEventLoop: ...

    def request_flush(self) -> None:
        """Flush once, soon (coalesced: one flush per loop iteration however many ask)."""

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
