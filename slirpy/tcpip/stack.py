"""Stack: the guest-facing network, sans-I/O — the facade of `tcpip/`.

Theory of operation
-------------------
The stack plays every host the guest can reach on its Ethernet link: the virtual gateway
(network+2) and DNS address (network+3) answer ARP and ICMP echo themselves; everything else
the guest sends through the gateway is terminated here and becomes a *flow* the runtime
proxies to an ordinary host socket. With `config.network6` (IPv6, dual stack) the same holds
for IPv6: gateway network6+2 (and its link-local address), DNS network6+3, neighbour discovery
and router advertisements (prefix, MTU, RDNSS) instead of ARP, ICMPv6 instead of ICMP; flows of
both families share one table and the same handlers, and events carry the IPv6 address as
text. Without it every IPv6 frame is dropped and counted (`ipv6.rx.drop.off`).

Inputs are frames from the TAP (`receive_frame(frame, now)`), host-side happenings
(`tcp_host_*`), and the clock (`handle_timer(now)`). Outputs are frames for the TAP
(`frames_to_send(now)`), events for the runtime (`next_event()`), and one deadline
(`next_deadline()`). The stack does no I/O and never reads a clock.

Frames in: with a virtio-net header (TAP opened with IFF_VNET_HDR and offloads), TCP
arrives as GSO super-frames of up to 64 KB whose checksum is only partial (NEEDS_CSUM); we
trust those, because the guest kernel and the TAP are on the same machine, and verify the
checksum of anything that arrives complete. Frames out: TCP segments of up to
`TcpParams.gso_max` bytes leave as one GSO super-frame with NEEDS_CSUM and only the
pseudo-header sum in the checksum field; the guest's kernel cuts and finishes them. Without
offloads every segment fits the guest's MSS and carries a full checksum.

Every malformed or unwanted frame is dropped and counted under `rx.drop.<reason>` (or a more
specific counter); no input raises. Every table is bounded by `Limits`.

UDP: each (guest ip, guest port, destination ip, destination port) is a flow; the runtime
gives it one connected host socket (`UdpFlowOpened`, `UdpDatagramReceived`, `UdpFlowClosed`;
inputs `udp_host_datagram`, `udp_host_error`). Flows expire when idle, like conntrack:
`Limits.udp_timeout`, `udp_timeout_replied` once the host answered, `dns_timeout` for DNS.
Expiry is lazy (flow.py), so a datagram never touches the timer heap. The tables are
bounded; when full, the least recently active flow is evicted (`udp.flows.evicted`). The TAP
does not enable UDP offloads (no TUN_F_USO4/USO6), so the kernel never hands us UDP GSO
frames: every guest datagram fits the MTU. We verify the UDP checksum of any frame that is
neither NEEDS_CSUM nor DATA_VALID. Datagrams to the guest carry NEEDS_CSUM with the
pseudo-header sum when offloads are on, a full checksum otherwise; a host datagram that
would not fit the MTU unfragmented is dropped and counted (`udp.tx.drop.too_big`).

DNS: UDP and TCP to network+3 port 53 become flows marked `dns`; the runtime points their
host side at the upstream resolver. A UDP "query" shorter than a DNS header or with QR set is
dropped (`dns.rx.drop.garbage`) before it makes a flow. With DNS disabled the guest gets ICMP
port unreachable (UDP) or RST (TCP).

ICMP echo to any non-virtual address is a flow per (guest ip, identifier, destination); the
runtime sends the echoes from an unprivileged ICMP socket and returns replies with
`icmp_host_echo_reply`, which restores the guest's identifier. Nothing here forges a reply.
Errors the host learns about a UDP or echo flow come back as ICMP errors quoting the guest's
last packet on that flow.

Inbound (published ports): the runtime accepts a host client on a published port and calls
`tcp_inbound_open(client_ip, client_port, guest_port, now)`; the stack makes an active-open
`TcpConnection` whose SYN reaches the guest *from the client's own address and port*, so the
guest sees the real peer. The guest's answers go to its default route (the gateway), which
is us. A client the guest could not route back to (host loopback, IPv6, an address inside
the sandbox network, multicast, "this network") appears as the gateway instead, with its own
port when that 4-tuple is free. From then on the flow is an ordinary TCP flow: the same
events (`TcpDataReceived`, `TcpFlowClosed`, ...) and the same host inputs. A guest RST
(nothing listening) closes the flow with `reset=True`; a SYN the guest never answers gives up
after `Limits.tcp_inbound_timeout`, also with `reset=True`. UDP likewise:
`udp_inbound_open(...)` makes a `DatagramFlow` (marked `inbound`) for one client address:port;
`udp_host_datagram` delivers the client's datagrams; the guest's replies come out as
`UdpDatagramReceived` for the runtime to send through the listening socket; idle expiry as
for outbound UDP. Flow tables are keyed by the guest-side 4-tuple (guest ip, guest port,
peer ip, peer port) for both directions, exactly as the guest kernel sees its sockets, so an
inbound flow can never share a key with an outbound one: an inbound open whose key is taken
(not by a flow in TIME-WAIT) picks another gateway port, or fails for a real client address
(`tcp.inbound.drop.tuple_in_use`). Until the guest's MAC is known (a guest that only
listens has sent nothing yet) inbound frames wait and the stack ARPs for the guest (and, for
an IPv6 flow, sends it a neighbour solicitation too).

Inbound over IPv6: `guest_ip=None` follows the client's family (an IPv6 client reaches the
guest's IPv6 address from its own, or from the IPv6 gateway when the guest could not route
back to it; an IPv4 or IPv4-mapped client, or any client with IPv6 off, goes over IPv4); an
explicit packed `guest_ip` picks the family, and a client of the other family appears as that
family's gateway.

Routed prefixes (issue 15; routes.py): `config.routed`, replaced at run time with
`set_routed(prefixes)`, are subnets behind the guest (a holder namespace's bridges) that this
stack routes for: their sources are taken like the guest's own (flows, echo, DNS, counters),
frames for them go to the guest's MAC, inbound flows may name a `guest_ip` inside them (one
neither there nor on the sandbox network is refused: `*.inbound.drop.not_routed`), and
flows *to* them are refused (`routed_dst`). The guest's own network is checked first, so its
packets never pay for the list.

Names (issue 15; names.py): `set_names(views, domains)` gives the DNS forwarder per-querier
name views; a query to the DNS address (UDP here; TCP in the runtime, with `dns_answer`) whose
name the querier's view holds is answered locally, a query for a foreign network's name gets
NXDOMAIN, and the rest is forwarded upstream as before.

Not implemented here: IP fragments and IPv6 extension headers beyond the walk of wire/ipv6.py
(dropped, counted).

Layout: this module only wires the layers together and is the public API. The work is done
by iface/ (link, neighbours and ndp, ipv4 and ipv6, tcp, udp, dhcp, icmp and icmpv6, framer and
framer6), flow.py (tables, ids, deadlines, budgets), fwd.py (every forwarding/NAT decision)
and events.py (what the runtime is told).
Per-packet and per-host-input entry points are the layers' own bound methods, set on the
instance, so the facade adds no call layer to the hot path.
"""

from __future__ import annotations

import random
from collections import defaultdict, deque
from typing import Any, Callable, Iterable

from . import fwd as _fwd
from .addr import Prefix
from .events import (  # noqa: F401  (re-exported: the runtime-facing events are part of the API)
    IcmpEchoFlowClosed, IcmpEchoFlowOpened, IcmpEchoRequested, StackEvent, TcpConnectRequested,
    TcpDataReceived, TcpEofReceived, TcpFlowClosed, TcpHostReadPaused, UdpDatagramReceived,
    UdpFlowClosed, UdpFlowOpened,
)
from .flow import DatagramFlow, FlowTable, TcpFlow
from .fwd import ECONNREFUSED, EHOSTUNREACH, ENETUNREACH  # noqa: F401  (re-exported for tests)
from .iface.dhcp import DhcpServer
from .iface.fastpath import FastPath
from .iface.icmp import IcmpHandler
from .iface.icmpv6 import Icmpv6Handler
from .iface.ipv4 import Ipv4Input
from .iface.ipv6 import Ipv6Input
from .iface.link import Frame, Link
from .iface.ndp import Ndp
from .iface.neighbours import Neighbours
from .iface.tcp import TcpHandler
from .iface.udp import UdpHandler
from .routes import Network, pairs, parse_prefixes
from .wire.ipv6 import IPV6_MIN_MTU


class Stack:
    """The facade: see the module docstring for the inputs, outputs and behaviour."""

    # Entry points bound to the layer that does the work (no facade call on the hot path).
    receive_frame: Callable[[bytes | memoryview, float], None]
    fastpath: FastPath
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

    def __init__(self, config: Any, *, vnet_hdr: bool, offload: bool,
                 rng: random.Random | None = None) -> None:
        if config.network6 is not None and config.mtu < IPV6_MIN_MTU:
            config = config.replace(network6=None)   # RFC 8200 §5: no IPv6 link
        self.config = config
        self.limits = config.limits
        self._rng = rng or random.Random(0)
        self.gateway_ip: bytes = config.gateway.packed
        self.dns_ip: bytes = config.dns.packed
        self.guest_ip: bytes = config.guest.packed
        self.counters: defaultdict[str, int] = defaultdict(int)
        self._events: deque[StackEvent] = deque()
        self.link = link = Link(config, self.counters, vnet_hdr=vnet_hdr, offload=offload)
        self.vnet_hdr = vnet_hdr
        self.offload = link.offload
        self.table = table = FlowTable(self.limits, self.counters, self._events)
        self.fwd = fwd = _fwd.Forwarder(config, self.counters, self._rng)
        self._icmp = icmp = IcmpHandler(config, link, table, fwd, self._events)
        dirty: dict[int, TcpFlow] = {}
        self.neighbours = nb = Neighbours(config, link, table, dirty)
        # The ICMP flavour of each family's flows, by address length (IPv6 adds its own).
        errors = icmp.errors
        ndp = icmp6 = None
        if config.network6 is not None:
            ndp = Ndp(config, link, nb)
            nb.solicit6 = ndp.solicit_guest
            icmp6 = errors[16] = Icmpv6Handler(config, link, table, fwd, ndp, icmp, self._events)
        self.ndp: Ndp | None = ndp
        self._icmp6: Icmpv6Handler | None = icmp6
        self._tcp = tcp = TcpHandler(config, link, nb, table, fwd, errors, self._events,
                                     self._rng)
        tcp.dirty = self._dirty = dirty
        self._udp = udp = UdpHandler(config, link, nb, table, fwd, errors, self._events)
        nb.deliver_udp = udp.host_datagram
        self.dhcp = dhcp = DhcpServer(config, link, nb)
        udp.dhcp = dhcp.handle
        self.ipv4 = Ipv4Input(link, nb, Prefix(config.network), tcp.receive, udp.receive,
                              icmp.receive)
        self.ipv4.unconfigured = dhcp.receive_unconfigured
        link.ipv4_input = self.ipv4.receive
        link.arp_input = nb.receive_arp
        self.ipv6: Ipv6Input | None = None
        if ndp is not None and icmp6 is not None:
            self.ipv6 = Ipv6Input(link, nb, ndp, Prefix(config.network6), tcp.receive,
                                  udp.receive, icmp6.receive, icmp6.receive_link)
            link.ipv6_input = self.ipv6.receive
        self.routed: tuple[Network, ...] = ()
        self.set_routed(getattr(config, "routed", ()))
        self._bind_entry_points()

    def _bind_entry_points(self) -> None:
        link, tcp, udp, icmp = self.link, self._tcp, self._udp, self._icmp
        # An established IPv4 flow's next segment, an existing UDP flow's next datagram, skip
        # the layers (iface/fastpath.py).
        self.fastpath = FastPath(link, self.neighbours, self.ipv4, tcp, udp, self.ipv6)
        self.receive_frame = self.fastpath.receive_frame
        self.tcp_host_connected = tcp.host_connected
        self.tcp_host_connect_failed = tcp.host_connect_failed
        self.tcp_host_allowance = tcp.host_allowance
        self.tcp_host_data = tcp.host_data
        self.tcp_host_eof = tcp.host_eof
        self.tcp_host_reset = tcp.host_reset
        self.tcp_host_write_paused = tcp.host_write_paused
        self.udp_host_datagram = udp.host_datagram
        self.udp_host_error = udp.host_error
        self.icmp_echo_dropped = icmp.echo_dropped
        self.icmp_host_error = icmp.host_error          # by the flow's family (icmp.errors)
        if self._icmp6 is None:
            self.icmp_host_echo_reply = icmp.host_echo_reply
        else:
            self.icmp_host_echo_reply = self._echo_reply_by_family

    def _icmp_of(self, flow_id: int) -> IcmpHandler | Icmpv6Handler:
        """The ICMP flavour of an echo flow (IPv4's for a flow that is gone: it counts that)."""
        flow = self.table.dgram_by_id.get(flow_id)
        if flow is not None and len(flow.guest_ip) == 16 and self._icmp6 is not None:
            return self._icmp6
        return self._icmp

    def _echo_reply_by_family(self, flow_id: int, seq: int, data: bytes | memoryview,
                              hop_limit: int, now: float) -> None:
        self._icmp_of(flow_id).host_echo_reply(flow_id, seq, data, hop_limit, now)

    # ------------------------------------------------------------------ public: TAP side

    def has_output(self) -> bool:
        """Whether frames_to_send would return anything (frames queued or flows to service)."""
        return bool(self.link.frames or self._dirty)

    def frames_to_send(self, now: float) -> list[Frame]:
        """Frames for the TAP: each item is `bytes`, or a tuple of buffers for `os.writev`."""
        dirty = self._dirty
        if dirty:
            tcp = self._tcp
            while dirty:
                for flow_id, flow in dirty.items():     # the oldest (compiled: no next/iter call)
                    break
                del dirty[flow_id]
                tcp.service(flow, now)
        link = self.link
        frames, link.frames = link.frames, []
        return frames

    # ------------------------------------------------------------------ public: runtime side

    def next_event(self) -> StackEvent | None:
        return self._events.popleft() if self._events else None

    def next_deadline(self) -> float | None:
        table = self.table
        return table.timers.next_deadline(table.by_id)     # (FlowTable.next_deadline, inlined)

    def handle_timer(self, now: float) -> None:
        """Run every flow whose deadline has come (one heap for all flows, flow.py)."""
        table = self.table
        tcp_due = self._tcp.timer_due
        for flow in list(table.timers.pop_due(now, table.by_id)):
            if type(flow) is TcpFlow:
                tcp_due(flow, now)
            else:
                table.dgram_due(flow, now)

    def flows(self) -> list[TcpFlow]:
        return list(self.table.tcp_by_id.values())

    def udp_flows(self) -> list[DatagramFlow]:
        return list(self.table.udp.values())

    def echo_flows(self) -> list[DatagramFlow]:
        return list(self.table.echo.values())

    def snd_share(self) -> int:
        """Bytes a flow may queue towards the guest before its host reads pause (flow.Budgets)."""
        return self.table.budgets.snd_share()

    @property
    def rcv_share(self) -> int:
        """The receive window each flow bringing guest data advertises now (flow.Budgets)."""
        return self.table.budgets.rcv_share

    @property
    def snd_queued(self) -> int:
        """Host -> guest bytes queued over all TCP flows (sent-but-unacknowledged included)."""
        return self.table.budgets.snd_total

    @property
    def half_open(self) -> int:
        return self.table.half_open

    @property
    def time_wait(self) -> int:
        """TCP flows in TIME-WAIT (their host sockets are closed already)."""
        return len(self.table.time_wait)

    # ------------------------------------------------------------------ public: routing

    def set_routed(self, prefixes: Iterable[object]) -> None:
        """Replace the routed prefixes (strings or ip_network values, both families). Raises
        ValueError naming a bad value (routes.parse_prefixes); nothing changes then."""
        own = [n for n in (self.config.network, self.config.network6) if n is not None]
        nets = parse_prefixes(prefixes, own, self.config.network6 is not None)
        self.routed = nets
        self.ipv4.routed = pairs(nets, 4)
        if self.ipv6 is not None:
            self.ipv6.routed = pairs(nets, 6)
        self.fwd.set_routed(nets)

    def set_names(self, views: Any, domains: Iterable[object]) -> None:
        """Replace the DNS name views ({querier address -> {name -> [addresses]}}) and the
        network names. Raises ValueError naming a bad value (names.py); nothing changes then."""
        self._udp.names.replace(views, domains)

    @property
    def has_names(self) -> bool:
        """Whether name views are set (DNS over TCP then goes through `dns_answer`)."""
        return self._udp.names.active

    def dns_answer(self, querier: bytes, msg: bytes | memoryview, limit: int = 65535) -> bytes | None:
        """The local answer to DNS query `msg` from packed `querier` (b"" for a malformed
        query: drop it), or None: forward it (the runtime's DNS over TCP asks here)."""
        names = self._udp.names
        return names.answer(querier, msg, limit) if names.active else None

    def routes_to(self, ip: bytes) -> bool:
        """Whether packed `ip` is in a routed prefix (a guest_ip an inbound flow may name)."""
        return self.fwd.routes_to(ip)

    # ------------------------------------------------------------------ public: inbound (published ports)

    def probe_guest(self, now: float) -> None:
        """ARP for the guest now, so that its MAC is known before the first inbound flow."""
        if self.link.guest_mac is None:
            self.neighbours.arp_for_guest(now)

    def inbound_source(self, client_ip: str, guest_ip: bytes | None = None) -> bytes:
        """The address the guest (at `guest_ip`, by default its IPv4 address) sees for a host
        client at `client_ip` (fwd.py decides)."""
        return self.fwd.inbound_source(client_ip, guest_ip)

    def tcp_inbound_open(self, client_ip: str, client_port: int, guest_port: int,
                         now: float, guest_ip: bytes | None = None) -> int | None:
        """A host client connected to a port published to `guest_port`: open a flow whose SYN
        reaches the guest (at `guest_ip`, packed, or chosen by the client's family) from the
        client's address (or the gateway's, see the module doc). Returns the flow id, or None
        when the flow cannot be opened (counted): the runtime then resets the client."""
        c = self.counters
        if not _fwd.ports_valid(guest_port, client_port):
            c["tcp.inbound.drop.port_zero"] += 1
            return None
        why = self._tcp.over_limit()
        if why is not None:
            c["tcp.inbound.drop." + why] += 1
            return None
        guest = self.fwd.inbound_guest(client_ip, guest_ip)
        if guest is None:
            c["tcp.inbound.drop.family_off"] += 1
            return None
        if guest_ip is not None and self.fwd.unroutable_guest(guest):
            c["tcp.inbound.drop.not_routed"] += 1
            return None
        key = self.fwd.inbound_key(client_ip, client_port, guest_port, self.table.tcp_by_key,
                                   "tcp", self._tcp.free_time_wait, guest)
        if key is None:
            return None
        # IPv6 chosen by the client's family (not named): retried over IPv4 if refused.
        retry = (client_ip, client_port) if guest_ip is None and len(guest) == 16 else None
        return self._tcp.inbound_open(key, guest_port, client_ip, now, retry)

    def udp_inbound_open(self, client_ip: str, client_port: int, guest_port: int,
                         now: float, guest_ip: bytes | None = None) -> int | None:
        """A new host client (address:port) sent to a UDP port published to `guest_port`:
        make its flow (deliver its datagrams with `udp_host_datagram`); the guest side as for
        `tcp_inbound_open`. Returns the flow id, or None (counted)."""
        c = self.counters
        if not _fwd.ports_valid(guest_port, client_port):
            c["udp.inbound.drop.port_zero"] += 1
            return None
        guest = self.fwd.inbound_guest(client_ip, guest_ip)
        if guest is None:
            c["udp.inbound.drop.family_off"] += 1
            return None
        if guest_ip is not None and self.fwd.unroutable_guest(guest):
            c["udp.inbound.drop.not_routed"] += 1
            return None
        key = self.fwd.inbound_key(client_ip, client_port, guest_port, self.table.udp, "udp",
                                   None, guest)
        if key is None:
            return None
        return self._udp.inbound_open(key, guest, guest_port, client_ip, now)
