"""Stack: the guest-facing network, sans-I/O.

Theory of operation
-------------------
The stack plays every host the guest can reach on its Ethernet link: the virtual gateway
(network+2) and DNS address (network+3) answer ARP and ICMP echo themselves; everything else
the guest sends through the gateway is terminated here and becomes a *flow* the runtime
proxies to an ordinary host socket.

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
Expiry is lazy (flows.py), so a datagram never touches the timer heap. The tables are
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
listens has sent nothing yet) inbound frames wait and the stack ARPs for the guest.

Not implemented here (yet): IPv6, IP fragments (dropped, counted).
"""

from __future__ import annotations

import hashlib
import ipaddress
import random
import struct
from collections import OrderedDict, defaultdict, deque
from dataclasses import dataclass

from . import arp as _arp
from . import icmp as _icmp
from .checksum import finish, sum16
from .errors import MalformedPacket
from .ethernet import ETH_HDR, ETH_HLEN, ETHERTYPE_ARP, ETHERTYPE_IPV4
from .flows import DatagramFlow, Deadline, DeadlineHeap, TcpFlow
from .sendbuf import Gather
from .ipv4 import IPV4_HDR, IPV4_HLEN, PROTO_ICMP, PROTO_TCP, PROTO_UDP
from .ipv4 import build_header as build_ipv4_header
from .wire.tcp import ACK, FIN, RST, SYN, TCP_HDR, TcpSegment
from .udp import UDP_HDR, UDP_HLEN, UdpHeader
from .tcp.connection import TcpConnection
from .tcp.events import Closed, DataReceived, EofReceived, Established, Reset
from .tcp.params import TcpParams
from .tcp.state import TcpState
from .virtio import F_DATA_VALID, F_NEEDS_CSUM, GSO_NONE, GSO_TCPV4, VNET_HDR, VNET_HDR_LEN

_ETH_IP_HLEN = ETH_HLEN + IPV4_HLEN            # 34: csum_start of a TCP header after option-less IPv4
_GSO_MAX = 65535 - IPV4_HLEN - 60               # payload bytes in one IPv4 super-frame, worst-case options
_SYN_HEAD_MAX = 576 - 20 - 8                    # what an ICMP error may quote (RFC 1812 §4.3.2.3)

# errno values are Linux's; the pure core names them itself instead of importing errno's table
# through os. (They are stable ABI.)
ECONNREFUSED = 111
ENETUNREACH = 101
EHOSTUNREACH = 113
ETIMEDOUT = 110
EACCES = 13
EPERM = 1
EMFILE = 24
ENFILE = 23
ENOBUFS = 105
ENOMEM = 12
EADDRNOTAVAIL = 99
# Shortages on our side, not facts about the destination: the guest must not be told the
# host is unreachable. Its SYN is dropped as a server with a full SYN queue would, and the
# guest's retransmission is a fresh attempt.
_LOCAL_RESOURCE_ERRORS = frozenset((EMFILE, ENFILE, ENOBUFS, ENOMEM, EADDRNOTAVAIL))

_QUOTE_MAX = _icmp.ERROR_QUOTE_MAX              # head of a guest packet kept for ICMP errors
_ECHO_ID_SEQ = struct.Struct("!HH")
_DNS_PORT = 53
_DNS_HLEN = 12
_BROADCAST_MAC = b"\xff" * 6
_GUEST_ARP_INTERVAL = 0.5        # seconds between ARP requests for a silent guest
_UDP_AWAIT_MAC_MAX = 64          # inbound datagrams held while the guest's MAC is unknown
_INBOUND_SRC_CACHE = 1024       # client addresses whose inbound source is remembered
_REMAP_TRIES = 32                # gateway ports tried when a client's own port is taken


# --- events for the runtime -------------------------------------------------------------

_PORT_PAIR = struct.Struct("!HH")
_HOST_READ_MIN = 16 << 10     # a host read may always take this much (see tcp_host_allowance)
_SND_SHARE_MIN = 64 << 10      # a flow's share of tcp_snd_buf_total never falls below this
# A flow's receive window never falls below two 64 KiB super-frames: with one, each flow would
# wait for the ACK of every frame (100 upload streams: 7.0 Gbit/s at 64 KiB, 10.2-11.3 at 128).
_RCV_SHARE_MIN = 128 << 10
_RCV_EPOCH = 0.05             # seconds: how often the receiving flows are counted again


def _equal_share(total: int, flows: int, floor: int, cap: int) -> int:
    """One flow's part of a budget shared equally among `flows` busy flows: `total // flows`,
    at most `cap` (the per-flow limit) and at least `floor` (so that every flow moves)."""
    share = total // (flows or 1)
    if share > cap:
        return cap
    return share if share > floor else floor


def _ntoa(ip: bytes) -> str:
    """Dotted quad of a 4-byte address (what str(IPv4Address(ip)) gives, several times faster)."""
    return "%d.%d.%d.%d" % (ip[0], ip[1], ip[2], ip[3])


@dataclass(frozen=True, slots=True)
class TcpConnectRequested:
    """The guest opened a TCP connection: connect a host socket to host:port."""
    flow_id: int
    host: str
    port: int
    guest: str
    guest_port: int
    dns: bool = False        # to the DNS forwarder: host/port are the guest's; use the upstream


@dataclass(slots=True)        # not frozen, unlike the other events: one per data segment
class TcpDataReceived:
    """Bytes the guest sent on a flow, for the host socket."""
    flow_id: int
    data: memoryview | bytes


@dataclass(frozen=True, slots=True)
class TcpEofReceived:
    """The guest shut down its sending side: shut down writing on the host socket."""
    flow_id: int


@dataclass(frozen=True, slots=True)
class TcpHostReadPaused:
    """Stop (paused=True) or resume reading the host socket: the guest-bound queue is full/drained."""
    flow_id: int
    paused: bool


@dataclass(frozen=True, slots=True)
class TcpFlowClosed:
    """The flow is gone: close the host socket (abort it if `reset`)."""
    flow_id: int
    reset: bool


@dataclass(frozen=True, slots=True)
class UdpFlowOpened:
    """A new UDP flow: open a host UDP socket connected to host:port (for `dns`, the upstream)."""
    flow_id: int
    host: str
    port: int
    guest: str
    guest_port: int
    dns: bool = False


@dataclass(frozen=True, slots=True)
class UdpDatagramReceived:
    """One datagram payload the guest sent on a UDP flow."""
    flow_id: int
    data: memoryview | bytes


@dataclass(frozen=True, slots=True)
class UdpFlowClosed:
    """The UDP flow expired or was evicted: close its host socket."""
    flow_id: int


@dataclass(frozen=True, slots=True)
class IcmpEchoFlowOpened:
    """A new echo flow (guest ident -> host): open an unprivileged ICMP socket."""
    flow_id: int
    host: str
    guest: str
    ident: int


@dataclass(frozen=True, slots=True)
class IcmpEchoRequested:
    """Send one echo request (sequence `seq`, payload `data`, the guest's `ttl`) on the flow."""
    flow_id: int
    seq: int
    ttl: int
    data: memoryview | bytes


@dataclass(frozen=True, slots=True)
class IcmpEchoFlowClosed:
    """The echo flow expired or was evicted: close its ICMP socket."""
    flow_id: int


# ----------------------------------------------------------------------------------------


class Stack:
    def __init__(self, config, *, vnet_hdr: bool, offload: bool, rng: random.Random | None = None):
        self.config = config
        self.limits = config.limits
        self.vnet_hdr = vnet_hdr
        self.offload = offload and vnet_hdr
        self._rng = rng or random.Random(0)
        self._iss_secret = self._rng.randbytes(16)
        net = config.network
        self._net_lo = int(net.network_address)
        self._net_mask = int(net.netmask)
        self.gateway_ip = config.gateway.packed
        self.dns_ip = config.dns.packed
        self.guest_ip = config.guest.packed
        self._gw_mac = config.gateway_mac
        self._virtual_macs = {self.gateway_ip: config.gateway_mac, self.dns_ip: config.dns_mac}
        self._guest_mac: bytes | None = config.guest_mac
        self._neighbours: dict[bytes, bytes] = {}
        self.counters: defaultdict[str, int] = defaultdict(int)

        mss = config.mtu - 40
        self._tcp_params = TcpParams(
            mss=mss,
            rcv_buf=self.limits.tcp_rcv_buf,
            gso_max=_GSO_MAX if self.offload else 0,    # the connection rounds it to its MSS
            time_wait=self.limits.tcp_time_wait,
            syn_timeout=self.limits.tcp_syn_timeout,
            ack_delay=self.limits.tcp_ack_delay,
            counters=self.counters,
        )
        self._tcp_by_key: dict[tuple, TcpFlow] = {}
        self._tcp_by_id: dict[int, TcpFlow] = {}
        self._next_flow_id = 1
        self._half_open = 0
        self._dirty: dict[int, TcpFlow] = {}         # insertion-ordered set of flows to service
        self._snd_total = 0                          # host -> guest bytes queued, all flows
        self._snd_active = 0                         # flows with some of it
        self._rcv_share = self.limits.tcp_rcv_buf    # receive window of each receiving flow
        self._rcv_seen: dict[int, TcpFlow] = {}      # flows that brought data this epoch
        self._rcv_epoch_end = 0.0
        self._inbound_src: dict[str, bytes] = {}     # inbound_source, by client address
        self._timers = DeadlineHeap()
        # UDP and ICMP echo flows: tables in least-recently-active order, one id space with TCP.
        self._udp: OrderedDict[tuple, DatagramFlow] = OrderedDict()
        self._echo: OrderedDict[tuple, DatagramFlow] = OrderedDict()
        self._dgram_by_id: dict[int, DatagramFlow] = {}
        self._dgram_timers = DeadlineHeap()
        self._frames: list = []                      # frames ready for the TAP
        self._events: deque = deque()
        # Inbound (published-port) flows: SYN give-up deadlines, flows waiting for the guest MAC.
        self._inbound_syn: dict[int, Deadline] = {}
        self._inbound_timers = DeadlineHeap()
        self._await_mac: dict[int, TcpFlow] = {}
        self._udp_await_mac: deque = deque()
        self._guest_arp_at: float | None = None

        if vnet_hdr:
            self._vnet_plain = bytes(VNET_HDR_LEN)
            # A complete frame whose TCP checksum we leave to the kernel.
            self._vnet_csum = VNET_HDR.pack(F_NEEDS_CSUM, GSO_NONE, 0, 0, _ETH_IP_HLEN, 16, 0)
            self._vnet_udp_csum = VNET_HDR.pack(F_NEEDS_CSUM, GSO_NONE, 0, 0, _ETH_IP_HLEN, 6, 0)
        else:
            self._vnet_plain = b""
            self._vnet_csum = b""
            self._vnet_udp_csum = b""

    # ------------------------------------------------------------------ public: TAP side

    def receive_frame(self, frame: bytes | memoryview, now: float) -> None:
        """Take one frame read from the TAP (with its virtio header when `vnet_hdr`)."""
        c = self.counters
        c["rx.frames"] += 1
        mv = memoryview(frame)
        try:
            verify = True
            if self.vnet_hdr:
                if len(mv) < VNET_HDR_LEN:
                    raise MalformedPacket("virtio.short")
                if mv[0] & (F_NEEDS_CSUM | F_DATA_VALID):
                    verify = False
                mv = mv[VNET_HDR_LEN:]
            if len(mv) < ETH_HLEN:
                raise MalformedPacket("eth.short")
            dst_mac, src_mac, ethertype = ETH_HDR.unpack_from(mv, 0)
            if ethertype == ETHERTYPE_IPV4:
                self._receive_ipv4(mv[ETH_HLEN:], src_mac, verify, now)
            elif ethertype == ETHERTYPE_ARP:
                self._receive_arp(mv[ETH_HLEN:], src_mac)
            else:
                c["rx.drop.ethertype"] += 1
        except MalformedPacket as e:
            c["rx.drop." + e.reason] += 1

    def has_output(self) -> bool:
        """Whether frames_to_send would return anything (frames queued or flows to service)."""
        return bool(self._frames or self._dirty)

    def frames_to_send(self, now: float) -> list:
        """Frames for the TAP: each item is `bytes`, or a tuple of buffers for `os.writev`."""
        dirty = self._dirty
        while dirty:
            flow_id = next(iter(dirty))
            flow = dirty.pop(flow_id)
            self._service(flow, now)
        frames, self._frames = self._frames, []
        return frames

    # ------------------------------------------------------------------ public: runtime side

    def next_event(self):
        return self._events.popleft() if self._events else None

    def next_deadline(self) -> float | None:
        best = self._timers.next_deadline(self._tcp_by_id)
        for d in (self._dgram_timers.next_deadline(self._dgram_by_id),
                  self._inbound_timers.next_deadline(self._inbound_syn)):
            if d is not None and (best is None or d < best):
                best = d
        return best

    def handle_timer(self, now: float) -> None:
        for flow in list(self._timers.pop_due(now, self._tcp_by_id)):
            flow.conn.handle_timer(now)
            self._dirty[flow.flow_id] = flow
        heap = self._dgram_timers
        for flow in list(heap.pop_due(now, self._dgram_by_id)):
            expires = flow.last_active + self._idle_timeout(flow)
            if expires > now:
                flow.timer_at = expires
                heap.push(expires, flow.flow_id, self._dgram_by_id)
            else:
                self._close_dgram(flow, "expired")
        for rec in list(self._inbound_timers.pop_due(now, self._inbound_syn)):
            self._inbound_syn.pop(rec.flow_id, None)
            flow = self._tcp_by_id.get(rec.flow_id)
            if flow is not None and flow.half_open:
                self._inbound_give_up(flow, now)

    def tcp_host_connected(self, flow_id: int, now: float) -> None:
        flow = self._tcp_by_id.get(flow_id)
        if flow is None:
            return
        flow.conn.accept(now)
        self._dirty[flow_id] = flow

    def tcp_host_connect_failed(self, flow_id: int, err: int, now: float) -> None:
        """The host connect failed with errno `err`: tell the guest the way its kernel expects."""
        flow = self._tcp_by_id.get(flow_id)
        if flow is None:
            return
        c = self.counters
        if err == ECONNREFUSED:
            c["tcp.connect.refused"] += 1
            flow.conn.refuse()
        elif err in _LOCAL_RESOURCE_ERRORS:
            c["tcp.connect.drop.local_resource"] += 1
            self._forget(flow, False)
            return
        else:
            code = {
                ENETUNREACH: _icmp.UNREACH_NET,
                EACCES: _icmp.UNREACH_ADMIN,
                EPERM: _icmp.UNREACH_ADMIN,
            }.get(err, _icmp.UNREACH_HOST)
            c["tcp.connect.unreachable"] += 1
            # The guest's kernel aborts a connect in SYN-SENT on any ICMP unreachable that
            # quotes its SYN; no RST, so that it reports the right error.
            self._send_icmp_error(flow.host_ip, flow.guest_ip,
                                  _icmp.build_dest_unreachable(code, flow.syn_head))
            self._forget(flow, False)
            return
        self._dirty[flow_id] = flow

    def _account_queued(self, flow: TcpFlow, queued: int) -> None:
        """Keep the total of host -> guest bytes queued, and how many flows hold some."""
        old = flow.queued
        if queued != old:
            self._snd_total += queued - old
            if not old:
                self._snd_active += 1
            elif not queued:
                self._snd_active -= 1
            flow.queued = queued

    def snd_share(self) -> int:
        """Bytes a flow may queue towards the guest before its host reads pause: an equal share
        of `tcp_snd_buf_total` among the flows holding data, within [64 KiB, tcp_snd_buf]."""
        limits = self.limits
        return _equal_share(limits.tcp_snd_buf_total, self._snd_active, _SND_SHARE_MIN,
                            limits.tcp_snd_buf)

    def _rcv_epoch(self, now: float) -> None:
        """The flows that brought data in the epoch now ending share `tcp_rcv_buf_total`
        equally (within [_RCV_SHARE_MIN, tcp_rcv_buf]) as their receive window. Guest -> host
        data in flight is then bounded over all flows, not per flow: 100 upload streams with
        4 MiB windows each keep the TAP queue so deep that every byte is cold by the time it
        is copied (8.7-9.8 Gbit/s; 10.2-11.3 with 128 KiB windows), while one stream needs
        about 1 MiB to keep the pipe full."""
        seen = self._rcv_seen
        limits = self.limits
        share = self._rcv_share = _equal_share(limits.tcp_rcv_buf_total, len(seen), _RCV_SHARE_MIN,
                                               limits.tcp_rcv_buf)
        for flow in seen.values():
            flow.conn.set_receive_window(share)
        self._rcv_seen = {}
        self._rcv_epoch_end = now + _RCV_EPOCH

    @property
    def rcv_share(self) -> int:
        """The receive window each flow bringing guest data advertises now (see _rcv_epoch)."""
        return self._rcv_share

    def tcp_host_allowance(self, flow_id: int) -> int:
        """How many bytes the next host read of this flow may take: what is left of its share
        and of `tcp_snd_buf_total` (but up to _SND_SHARE_MIN past the total, and at least
        _HOST_READ_MIN, so that every flow moves). With the pause in tcp_host_data (a flow
        holding _SND_SHARE_MIN stops once the total is reached) the total queued stays within
        the budget plus 2 * _SND_SHARE_MIN per flow; reads sized by the socket alone (256 KiB)
        let 100 busy flows queue 2.3 times the budget."""
        flow = self._tcp_by_id.get(flow_id)
        if flow is None:
            return _HOST_READ_MIN
        room = self.snd_share() - flow.queued
        total_room = self.limits.tcp_snd_buf_total - self._snd_total
        if total_room < _SND_SHARE_MIN:
            total_room = _SND_SHARE_MIN
        if total_room < room:
            room = total_room
        return room if room > _HOST_READ_MIN else _HOST_READ_MIN

    @property
    def snd_queued(self) -> int:
        """Host -> guest bytes queued over all TCP flows (sent-but-unacknowledged included)."""
        return self._snd_total

    def tcp_host_data(self, flow_id: int, data: bytes, now: float) -> bool:
        """Host bytes for the guest. True when the host reads must stop now: the event loop may
        read the same socket again before the TcpHostReadPaused event is dispatched (libuv
        reads up to 32 times per readable socket), so the caller stops them at once."""
        flow = self._tcp_by_id.get(flow_id)
        if flow is None:
            return False
        conn = flow.conn
        conn.send(data)
        flow.bytes_out += len(data)
        queued = conn.send_buffered
        self._account_queued(flow, queued)
        if not flow.read_paused and (queued >= self.snd_share() or (
                queued >= _SND_SHARE_MIN and self._snd_total >= self.limits.tcp_snd_buf_total)):
            flow.read_paused = True
            self.counters["tcp.host.read_paused"] += 1
            self._events.append(TcpHostReadPaused(flow_id, True))
        self._dirty[flow_id] = flow
        return flow.read_paused

    def tcp_host_eof(self, flow_id: int, now: float) -> None:
        flow = self._tcp_by_id.get(flow_id)
        if flow is None:
            return
        flow.conn.shutdown_write(now)
        self._dirty[flow_id] = flow

    def tcp_host_reset(self, flow_id: int, now: float) -> None:
        """The host connection failed or was reset: reset the guest's side too."""
        flow = self._tcp_by_id.get(flow_id)
        if flow is None:
            return
        self.counters["tcp.host.reset"] += 1
        flow.conn.abort(now)
        self._dirty[flow_id] = flow

    def tcp_host_write_paused(self, flow_id: int, paused: bool, now: float) -> None:
        """The host socket's write buffer is above (True) / back below (False) its high-water mark."""
        flow = self._tcp_by_id.get(flow_id)
        if flow is None:
            return
        flow.conn.set_receive_paused(paused, now)
        self._dirty[flow_id] = flow

    def flows(self) -> list[TcpFlow]:
        return list(self._tcp_by_id.values())

    # ------------------------------------------------------------------ public: inbound (published ports)

    def probe_guest(self, now: float) -> None:
        """ARP for the guest now, so that its MAC is known before the first inbound flow."""
        if self._guest_mac is None:
            self._arp_for_guest(now)

    def tcp_inbound_open(self, client_ip: str, client_port: int, guest_port: int,
                         now: float) -> int | None:
        """A host client connected to a port published to `guest_port`: open a flow whose SYN
        reaches the guest from the client's address (or the gateway's, see the module doc).
        Returns the flow id, or None when the flow cannot be opened (counted): the runtime
        then resets the client."""
        c = self.counters
        limits = self.limits
        if not 0 < guest_port < 65536 or not 0 < client_port < 65536:
            c["tcp.inbound.drop.port_zero"] += 1
            return None
        if len(self._tcp_by_id) >= limits.max_tcp_flows:
            c["tcp.inbound.drop.flow_limit"] += 1
            return None
        if self._half_open >= limits.max_half_open:
            c["tcp.inbound.drop.half_open_limit"] += 1
            return None
        key = self._inbound_key(client_ip, client_port, guest_port, self._tcp_by_key, "tcp")
        if key is None:
            return None
        _, _, src, sport = key
        flow_id = self._next_flow_id
        self._next_flow_id += 1
        conn = TcpConnection.active(self._iss(key, now), now, self._tcp_params)
        conn.set_receive_window(self._rcv_share)
        mac = self._guest_mac
        prefix = ETH_HDR.pack(mac, self._gw_mac, ETHERTYPE_IPV4) if mac is not None else None
        flow = TcpFlow(flow_id, key, conn, self.guest_ip, guest_port, src, sport, prefix, now,
                       inbound=True)
        self._tcp_by_key[key] = flow
        self._tcp_by_id[flow_id] = flow
        self._half_open += 1
        c["tcp.flows.opened"] += 1
        c["tcp.inbound.opened"] += 1
        rec = Deadline(flow_id, now + limits.tcp_inbound_timeout)
        self._inbound_syn[flow_id] = rec
        self._inbound_timers.push(rec.timer_at, flow_id, self._inbound_syn)
        self._dirty[flow_id] = flow
        return flow_id

    def udp_inbound_open(self, client_ip: str, client_port: int, guest_port: int,
                         now: float) -> int | None:
        """A new host client (address:port) sent to a UDP port published to `guest_port`:
        make its flow (deliver its datagrams with `udp_host_datagram`). Returns the flow id,
        or None (counted)."""
        c = self.counters
        if not 0 < guest_port < 65536 or not 0 < client_port < 65536:
            c["udp.inbound.drop.port_zero"] += 1
            return None
        key = self._inbound_key(client_ip, client_port, guest_port, self._udp, "udp")
        if key is None:
            return None
        table = self._udp
        if len(table) >= self.limits.max_udp_flows:
            self._close_dgram(next(iter(table.values())), "evicted")
        _, _, src, sport = key
        flow = self._new_dgram(key, PROTO_UDP, self.guest_ip, guest_port, src, sport, now, False)
        flow.inbound = True
        table[key] = flow
        c["udp.inbound.opened"] += 1
        return flow.flow_id

    def inbound_source(self, client_ip: str) -> bytes:
        """The address the guest sees for a host client at `client_ip`: the client's own when
        the guest can route back to it through the gateway, else the gateway's. Remembered
        per address string (clients come from few addresses; parsing one costs a few us)."""
        cache = self._inbound_src
        src = cache.get(client_ip)
        if src is None:
            if len(cache) >= _INBOUND_SRC_CACHE:
                cache.clear()
            src = cache[client_ip] = self._parse_inbound_source(client_ip)
        return src

    def _parse_inbound_source(self, client_ip: str) -> bytes:
        try:
            ip = ipaddress.ip_address(client_ip.split("%", 1)[0])
        except ValueError:
            return self.gateway_ip
        if ip.version == 6:
            ip = ip.ipv4_mapped
            if ip is None:
                return self.gateway_ip
        packed = ip.packed
        d = int.from_bytes(packed, "big")
        first = d >> 24
        if (first == 127 or first == 0 or first >= 224 or (d & self._net_mask) == self._net_lo):
            return self.gateway_ip
        return packed

    def _inbound_key(self, client_ip: str, client_port: int, guest_port: int, table,
                     proto: str) -> tuple | None:
        c = self.counters
        src = self.inbound_source(client_ip)
        mapped = src == self.gateway_ip
        if mapped:
            c[proto + ".inbound.via_gateway"] += 1
        sport = client_port
        for attempt in range(_REMAP_TRIES):
            key = (self.guest_ip, guest_port, src, sport)
            old = table.get(key)
            if old is None:
                return key
            if proto == "tcp" and old.conn.state is TcpState.TIME_WAIT:
                self._forget(old, False)             # a new incarnation of the 4-tuple
                c["tcp.time_wait.reused"] += 1
                return key
            if not mapped:
                break
            sport = 1024 + self._rng.randrange(65536 - 1024)
            c[proto + ".inbound.port_remapped"] += 1
        c[proto + ".inbound.drop.tuple_in_use"] += 1
        return None

    def _inbound_give_up(self, flow: TcpFlow, now: float) -> None:
        """The guest never completed an inbound handshake: RST it if needed, reset the client."""
        self.counters["tcp.inbound.timeout"] += 1
        conn = flow.conn
        conn.abort(now)
        if flow.eth_prefix is not None:
            segments = conn.segments_to_send(now)
            if segments:
                self._emit_segments(flow, conn, segments)
        self._forget(flow, True)

    def _arp_for_guest(self, now: float) -> None:
        last = self._guest_arp_at
        if last is not None and now - last < _GUEST_ARP_INTERVAL:
            return
        self._guest_arp_at = now
        req = _arp.ArpPacket(_arp.OP_REQUEST, self._gw_mac, self.gateway_ip, bytes(6), self.guest_ip)
        self._frames.append(self._vnet_plain + ETH_HDR.pack(_BROADCAST_MAC, self._gw_mac, ETHERTYPE_ARP)
                            + req.pack())
        self.counters["arp.tx.request"] += 1

    def _guest_mac_learned(self, mac: bytes) -> None:
        if self._await_mac:
            prefix = ETH_HDR.pack(mac, self._gw_mac, ETHERTYPE_IPV4)
            for fid, flow in self._await_mac.items():
                if fid in self._tcp_by_id:
                    flow.eth_prefix = prefix
                    self._dirty[fid] = flow
            self._await_mac.clear()
        held = self._udp_await_mac
        while held:
            fid, data, now = held.popleft()
            self.udp_host_datagram(fid, data, now)

    def udp_flows(self) -> list[DatagramFlow]:
        return list(self._udp.values())

    def echo_flows(self) -> list[DatagramFlow]:
        return list(self._echo.values())

    # ------------------------------------------------------------------ public: UDP / ICMP host side

    def udp_host_datagram(self, flow_id: int, data: bytes | memoryview, now: float) -> None:
        """A datagram arrived on the flow's host socket: deliver it to the guest."""
        c = self.counters
        flow = self._dgram_by_id.get(flow_id)
        if flow is None or flow.proto != PROTO_UDP:
            c["udp.host.drop.no_flow"] += 1
            return
        n = len(data)
        if IPV4_HLEN + UDP_HLEN + n > self.config.mtu:
            c["udp.tx.drop.too_big"] += 1
            return
        mac = self._guest_mac
        if mac is None:
            if flow.inbound and len(self._udp_await_mac) < _UDP_AWAIT_MAC_MAX:
                self._udp_await_mac.append((flow_id, bytes(data), now))
                self._arp_for_guest(now)
                c["udp.inbound.await_mac"] += 1
            else:
                c["tx.drop.no_guest_mac"] += 1
            return
        flow.replied = True
        flow.last_active = now
        flow.datagrams_out += 1
        self._udp.move_to_end(flow.key)
        length = UDP_HLEN + n
        sport = flow.host_port
        dport = flow.guest_port
        p = flow.pseudo_base + length
        if self.offload:
            p = (p & 0xFFFF) + (p >> 16)
            p = (p & 0xFFFF) + (p >> 16)
            udp = UDP_HDR.pack(sport, dport, length, p)
            vnet = self._vnet_udp_csum
        else:
            csum = finish(sum16(data, p + sport + dport + length)) or 0xFFFF
            udp = UDP_HDR.pack(sport, dport, length, csum)
            vnet = self._vnet_plain
        src = flow.host_ip
        head = (vnet + ETH_HDR.pack(mac, self._virtual_macs.get(src, self._gw_mac), ETHERTYPE_IPV4)
                + build_ipv4_header(src, flow.guest_ip, PROTO_UDP, length) + udp)
        self._frames.append((head, data) if n else head)
        c["udp.tx.datagrams"] += 1

    def udp_host_error(self, flow_id: int, err: int, now: float, icmp_type: int | None = None,
                       icmp_code: int = 0, offender: bytes | None = None, info: int = 0) -> None:
        """The flow's host socket reported an error: errno `err`, and when the kernel told us
        (IP_RECVERR), the ICMP type/code it received from `offender`. Becomes an ICMP error to
        the guest quoting its last datagram on the flow."""
        flow = self._dgram_by_id.get(flow_id)
        if flow is None or flow.proto != PROTO_UDP:
            return
        if icmp_type is None:
            code = {ECONNREFUSED: _icmp.UNREACH_PORT, ENETUNREACH: _icmp.UNREACH_NET,
                    EHOSTUNREACH: _icmp.UNREACH_HOST}.get(err)
            if code is None:
                self.counters["udp.host.error.other"] += 1
                return
            icmp_type, icmp_code = _icmp.DEST_UNREACH, code
        self.counters["udp.host.error"] += 1
        self._flow_icmp_error(flow, icmp_type, icmp_code, offender, info)

    def icmp_host_echo_reply(self, flow_id: int, seq: int, data: bytes | memoryview, ttl: int,
                             now: float) -> None:
        """An echo reply came back on the flow's ICMP socket: hand it to the guest with its
        own identifier (the kernel rewrote it to the socket's)."""
        c = self.counters
        flow = self._dgram_by_id.get(flow_id)
        if flow is None or flow.proto != PROTO_ICMP:
            c["icmp.host.drop.no_flow"] += 1
            return
        msg = _icmp.build_message(_icmp.ECHO_REPLY, 0, _ECHO_ID_SEQ.pack(flow.guest_port, seq & 0xFFFF), data)
        if IPV4_HLEN + len(msg) > self.config.mtu:
            c["icmp.tx.drop.too_big"] += 1
            return
        flow.replied = True
        flow.last_active = now
        flow.datagrams_out += 1
        self._echo.move_to_end(flow.key)
        self._send_ip(flow.host_ip, flow.guest_ip, PROTO_ICMP, msg, ttl=max(1, min(255, ttl)), df=False)
        c["icmp.tx.echo_reply.proxied"] += 1

    def icmp_host_error(self, flow_id: int, icmp_type: int, icmp_code: int, now: float,
                        offender: bytes | None = None, info: int = 0) -> None:
        """The echo flow's socket received an ICMP error (unreachable, TTL exceeded)."""
        flow = self._dgram_by_id.get(flow_id)
        if flow is None or flow.proto != PROTO_ICMP:
            return
        self.counters["icmp.host.error"] += 1
        self._flow_icmp_error(flow, icmp_type, icmp_code, offender, info)

    def icmp_echo_dropped(self, flow_id: int, reason: str, now: float) -> None:
        """The runtime could not send an echo (e.g. ping sockets not permitted): count it."""
        self.counters["icmp.echo.drop." + reason] += 1

    def _flow_icmp_error(self, flow: DatagramFlow, icmp_type: int, icmp_code: int,
                         offender: bytes | None, info: int) -> None:
        c = self.counters
        head = flow.last_head
        if not head:
            c["icmp.tx.drop.nothing_to_quote"] += 1
            return
        if icmp_type == _icmp.DEST_UNREACH:
            msg = _icmp.build_dest_unreachable(icmp_code, head, info)
        elif icmp_type == _icmp.TIME_EXCEEDED:
            msg = _icmp.build_time_exceeded(icmp_code, head)
        else:
            c["icmp.tx.drop.error_type"] += 1
            return
        # Port unreachable comes from the host itself; a router's error from that router,
        # unless it is one the guest cannot know (host loopback, "this network"), in which
        # case from the gateway, the router the guest sent it to.
        if icmp_type == _icmp.DEST_UNREACH and icmp_code == _icmp.UNREACH_PORT:
            src = flow.host_ip
        elif offender and len(offender) == 4 and offender[0] not in (0, 127):
            src = offender
        else:
            src = self.gateway_ip
        self._send_ip(src, flow.guest_ip, PROTO_ICMP, msg)
        c["icmp.tx.error"] += 1

    @property
    def half_open(self) -> int:
        return self._half_open

    # ------------------------------------------------------------------ ARP

    def _receive_arp(self, mv: memoryview, src_mac: bytes) -> None:
        pkt = _arp.ArpPacket.parse(mv)
        c = self.counters
        self._learn(pkt.sender_ip, pkt.sender_mac)
        if pkt.op != _arp.OP_REQUEST:
            c["arp.rx.ignored"] += 1
            return
        mac = self._virtual_macs.get(pkt.target_ip)
        if mac is None:
            c["arp.rx.ignored"] += 1
            return
        reply = _arp.ArpPacket(_arp.OP_REPLY, mac, pkt.target_ip, pkt.sender_mac, pkt.sender_ip)
        self._frames.append(self._vnet_plain + ETH_HDR.pack(pkt.sender_mac, mac, ETHERTYPE_ARP) + reply.pack())
        c["arp.tx.reply"] += 1

    def _learn(self, ip: bytes, mac: bytes) -> None:
        if (int.from_bytes(ip, "big") & self._net_mask) != self._net_lo or mac[0] & 1:
            return
        table = self._neighbours
        if ip not in table and len(table) >= self.limits.max_neighbours:
            table.pop(next(iter(table)))
            self.counters["arp.neighbour.evicted"] += 1
        table[ip] = mac
        if ip == self.guest_ip:
            self._guest_mac = mac
            if self._await_mac or self._udp_await_mac:
                self._guest_mac_learned(mac)

    # ------------------------------------------------------------------ IPv4

    def _receive_ipv4(self, mv: memoryview, src_mac: bytes, verify: bool, now: float) -> None:
        c = self.counters
        n = len(mv)
        if n < IPV4_HLEN:
            raise MalformedPacket("ipv4.short")
        vihl, _tos, total, _ident, frag, _ttl, proto, _csum, src, dst = IPV4_HDR.unpack_from(mv, 0)
        if vihl >> 4 != 4:
            raise MalformedPacket("ipv4.bad_version")
        hlen = (vihl & 15) * 4
        if hlen < IPV4_HLEN or hlen > n:
            raise MalformedPacket("ipv4.bad_ihl")
        if total < hlen or total > n:
            raise MalformedPacket("ipv4.bad_total_length")
        if sum16(mv[:hlen]) != 0xFFFF:
            raise MalformedPacket("ipv4.bad_checksum")
        if frag & 0x3FFF:                      # MF or a fragment offset
            c["ipv4.rx.drop.fragment"] += 1
            return
        if (int.from_bytes(src, "big") & self._net_mask) != self._net_lo:
            c["ipv4.rx.drop.bad_src"] += 1
            return
        if src_mac != self._neighbours.get(src):
            self._learn(src, src_mac)
        packet = mv[:total]
        if proto == PROTO_TCP:
            self._receive_tcp(packet, hlen, src, dst, verify, now)
        elif proto == PROTO_UDP:
            self._receive_udp(packet, hlen, src, dst, verify, now)
        elif proto == PROTO_ICMP:
            self._receive_icmp(packet, hlen, src, dst, _ttl, now)
        else:
            c["ipv4.rx.drop.proto"] += 1

    def _destination_allowed(self, dst: bytes) -> str | None:
        """Why a flow to `dst` may not be proxied, or None. Host loopback is never reachable
        except through the gateway address with allow_host_loopback."""
        d = int.from_bytes(dst, "big")
        if dst == self.gateway_ip:
            return None if self.config.allow_host_loopback else "host_loopback_denied"
        if (d & self._net_mask) == self._net_lo:
            return "local_network"          # .3 other than DNS, the guest itself, others
        first = d >> 24
        if first == 127 or first == 0 or first >= 224:
            return "martian_dst"            # loopback, "this network", multicast, reserved/broadcast
        return None

    def _receive_icmp(self, packet: memoryview, hlen: int, src: bytes, dst: bytes, ttl: int,
                      now: float) -> None:
        c = self.counters
        msg = packet[hlen:]
        if dst not in self._virtual_macs:
            self._receive_echo_remote(packet, msg, src, dst, ttl, now)
            return
        hdr = _icmp.IcmpHeader.parse(msg, verify_checksum=True)
        if hdr.type != _icmp.ECHO_REQUEST:
            c["icmp.rx.drop.type"] += 1
            return
        reply = _icmp.build_echo_reply(msg)
        self._send_ip(dst, src, PROTO_ICMP, reply)
        c["icmp.tx.echo_reply"] += 1

    def _send_ip(self, src: bytes, dst: bytes, proto: int, payload: bytes, ttl: int = 64,
                 df: bool = True) -> None:
        mac = self._guest_mac
        if mac is None:
            self.counters["tx.drop.no_guest_mac"] += 1
            return
        src_mac = self._virtual_macs.get(src, self._gw_mac)
        ip = build_ipv4_header(src, dst, proto, len(payload), ttl=ttl, df=df)
        self._frames.append(self._vnet_plain + ETH_HDR.pack(mac, src_mac, ETHERTYPE_IPV4) + ip + payload)

    def _send_icmp_error(self, from_ip: bytes, to_ip: bytes, message: bytes) -> None:
        # ICMP errors about a remote host come from the gateway, the router that "forwarded" it.
        self._send_ip(self.gateway_ip, to_ip, PROTO_ICMP, message)
        self.counters["icmp.tx.error"] += 1

    # ------------------------------------------------------------------ ICMP echo to hosts

    def _receive_echo_remote(self, packet: memoryview, msg: memoryview, src: bytes, dst: bytes,
                             ttl: int, now: float) -> None:
        c = self.counters
        hdr = _icmp.IcmpHeader.parse(msg, verify_checksum=True)
        if hdr.type != _icmp.ECHO_REQUEST or hdr.code != 0:
            c["icmp.rx.drop.type"] += 1
            return
        why = self._destination_allowed(dst)
        if why is not None:
            c["icmp.rx.drop." + why] += 1
            return
        ident, seq = _ECHO_ID_SEQ.unpack_from(msg, 4)
        key = (src, ident, dst)
        table = self._echo
        flow = table.get(key)
        if flow is None:
            if len(table) >= self.limits.max_icmp_flows:
                self._close_dgram(next(iter(table.values())), "evicted")
            flow = self._new_dgram(key, PROTO_ICMP, src, ident, dst, 0, now, False)
            table[key] = flow
            self._events.append(IcmpEchoFlowOpened(
                flow.flow_id, _ntoa(dst), _ntoa(src), ident))
        else:
            table.move_to_end(key)
        flow.last_head = bytes(packet[:_QUOTE_MAX])
        flow.last_active = now
        flow.datagrams_in += 1
        c["icmp.rx.echo_request.proxied"] += 1
        self._events.append(IcmpEchoRequested(flow.flow_id, seq, ttl, msg[_icmp.ICMP_HLEN:]))

    # ------------------------------------------------------------------ UDP

    def _receive_udp(self, packet: memoryview, hlen: int, src: bytes, dst: bytes,
                     verify: bool, now: float) -> None:
        c = self.counters
        udp = packet[hlen:]
        hdr = UdpHeader.parse(udp, src, dst, verify)
        sport = hdr.src_port
        dport = hdr.dst_port
        payload = udp[UDP_HLEN:hdr.length]
        key = (src, sport, dst, dport)
        table = self._udp
        flow = table.get(key)
        if flow is None:
            flow = self._open_udp(packet, key, payload, now)
            if flow is None:
                return
        else:
            if flow.dns and (len(payload) < _DNS_HLEN or payload[2] & 0x80):
                c["dns.rx.drop.garbage"] += 1
                return
            table.move_to_end(key)
        flow.last_head = bytes(packet[:_QUOTE_MAX])
        flow.last_active = now
        flow.datagrams_in += 1
        c["udp.rx.datagrams"] += 1
        self._events.append(UdpDatagramReceived(flow.flow_id, payload))

    def _open_udp(self, packet: memoryview, key: tuple, payload: memoryview,
                  now: float) -> DatagramFlow | None:
        c = self.counters
        src, sport, dst, dport = key
        if sport == 0 or dport == 0:
            c["udp.rx.drop.port_zero"] += 1
            return None
        dns = dst == self.dns_ip and dport == _DNS_PORT
        if dns:
            if not self.config.dns_enabled:
                c["udp.rx.drop.dns_disabled"] += 1
                self._port_unreachable(packet, src, dst)
                return None
            if len(payload) < _DNS_HLEN or payload[2] & 0x80:
                c["dns.rx.drop.garbage"] += 1
                return None
        else:
            why = self._destination_allowed(dst)
            if why is not None:
                c["udp.rx.drop." + why] += 1
                if dst in self._virtual_macs:
                    self._port_unreachable(packet, src, dst)
                return None
        table = self._udp
        if len(table) >= self.limits.max_udp_flows:
            self._close_dgram(next(iter(table.values())), "evicted")
        flow = self._new_dgram(key, PROTO_UDP, src, sport, dst, dport, now, dns)
        table[key] = flow
        if dns:
            c["dns.flows.opened"] += 1
            host = ""
        else:
            host = "127.0.0.1" if dst == self.gateway_ip else _ntoa(dst)
        self._events.append(UdpFlowOpened(flow.flow_id, host, dport,
                                          _ntoa(src), sport, dns))
        return flow

    def _port_unreachable(self, packet: memoryview, src: bytes, dst: bytes) -> None:
        self._send_ip(dst, src, PROTO_ICMP, _icmp.build_dest_unreachable(_icmp.UNREACH_PORT, packet))
        self.counters["icmp.tx.error"] += 1

    def _new_dgram(self, key: tuple, proto: int, guest_ip: bytes, guest_port: int, host_ip: bytes,
                   host_port: int, now: float, dns: bool) -> DatagramFlow:
        flow_id = self._next_flow_id
        self._next_flow_id += 1
        flow = DatagramFlow(flow_id, key, proto, guest_ip, guest_port, host_ip, host_port, now, dns)
        self._dgram_by_id[flow_id] = flow
        flow.timer_at = now + self._idle_timeout(flow)
        self._dgram_timers.push(flow.timer_at, flow_id, self._dgram_by_id)
        self.counters[("udp" if proto == PROTO_UDP else "icmp") + ".flows.opened"] += 1
        return flow

    def _idle_timeout(self, flow: DatagramFlow) -> float:
        limits = self.limits
        if flow.proto == PROTO_ICMP:
            return limits.icmp_timeout
        if flow.dns:
            return limits.dns_timeout
        return limits.udp_timeout_replied if flow.replied else limits.udp_timeout

    def _close_dgram(self, flow: DatagramFlow, why: str) -> None:
        fid = flow.flow_id
        self._dgram_by_id.pop(fid, None)
        flow.timer_at = None
        if flow.proto == PROTO_UDP:
            self._udp.pop(flow.key, None)
            self.counters["udp.flows." + why] += 1
            self._events.append(UdpFlowClosed(fid))
        else:
            self._echo.pop(flow.key, None)
            self.counters["icmp.flows." + why] += 1
            self._events.append(IcmpEchoFlowClosed(fid))

    # ------------------------------------------------------------------ TCP

    def _receive_tcp(self, packet: memoryview, hlen: int, src: bytes, dst: bytes,
                     verify: bool, now: float) -> None:
        c = self.counters
        seg = TcpSegment.parse(packet[hlen:], src, dst, verify)
        key = (src, seg.src_port, dst, seg.dst_port)
        flow = self._tcp_by_key.get(key)
        flags = seg.flags
        if flow is not None:
            conn = flow.conn
            if (flags & (SYN | ACK | RST)) == SYN and conn.state is TcpState.CLOSED:
                # The flow ended earlier in this batch (the guest's RST, say) and waits to be
                # serviced: finish it now, so that a new SYN from the same port right behind
                # it opens a new flow instead of meeting the dead one (the guest would retry
                # only after its 1 s SYN timeout).
                self._dirty.pop(flow.flow_id, None)
                self._service(flow, now)
                flow = self._tcp_by_key.get(key)
        if flow is not None:
            conn = flow.conn
            if (flags & (SYN | ACK | RST)) == SYN and conn.state is TcpState.TIME_WAIT:
                # A new incarnation of the 4-tuple (RFC 9293 §3.10.7.4 / RFC 6191): let the old go.
                self._forget(flow, False)
                c["tcp.time_wait.reused"] += 1
            else:
                n = len(seg.payload)
                if n:
                    flow.bytes_in += n
                    self._rcv_seen[flow.flow_id] = flow
                    if now >= self._rcv_epoch_end:
                        self._rcv_epoch(now)
                conn.receive_segment(seg, now)
                self._dirty[flow.flow_id] = flow
                return
        # No flow for this 4-tuple.
        if flags & RST:
            c["tcp.rx.drop.rst_no_flow"] += 1
            return
        if flags & SYN and flags & FIN:
            c["tcp.rx.drop.syn_fin"] += 1           # never valid; Linux discards it too
            return
        if (flags & (SYN | ACK | FIN)) != SYN:
            c["tcp.rx.no_flow"] += 1
            self._send_rst_for(seg, src, dst)
            return
        if seg.dst_port == 0 or seg.src_port == 0:
            c["tcp.rx.drop.port_zero"] += 1
            return
        dns = dst == self.dns_ip and seg.dst_port == _DNS_PORT and self.config.dns_enabled
        why = None if dns else self._destination_allowed(dst)
        if why is not None:
            c["tcp.rx.drop." + why] += 1
            self._send_rst_for(seg, src, dst)
            return
        limits = self.limits
        if len(self._tcp_by_id) >= limits.max_tcp_flows:
            c["tcp.rx.drop.flow_limit"] += 1
            self._send_rst_for(seg, src, dst)
            return
        if self._half_open >= limits.max_half_open:
            c["tcp.rx.drop.half_open_limit"] += 1
            self._send_rst_for(seg, src, dst)
            return
        self._open_flow(seg, packet, src, dst, now, dns)

    def _iss(self, key: tuple, now: float) -> int:
        """Initial sequence number per RFC 6528: a 4-microsecond clock plus a keyed hash of the
        4-tuple. It grows with time for the same 4-tuple, so a guest still holding that tuple
        in TIME-WAIT accepts our new SYN at once (RFC 6191 / Linux) instead of making it wait
        for a retransmission; and it is not guessable from outside."""
        src, sport, dst, dport = key
        h = hashlib.blake2s(src + dst + _PORT_PAIR.pack(sport, dport), digest_size=4,
                            key=self._iss_secret).digest()
        return (int(now * 250_000) + int.from_bytes(h, "big")) & 0xFFFFFFFF

    def _open_flow(self, seg: TcpSegment, packet: memoryview, src: bytes, dst: bytes, now: float,
                   dns: bool = False) -> None:
        mac = self._guest_mac
        if mac is None:
            self.counters["tx.drop.no_guest_mac"] += 1
            return
        flow_id = self._next_flow_id
        self._next_flow_id += 1
        key = (src, seg.src_port, dst, seg.dst_port)
        conn = TcpConnection.passive(seg, self._iss(key, now), now, self._tcp_params)
        conn.set_receive_window(self._rcv_share)
        flow = TcpFlow(flow_id, key, conn, src, seg.src_port, dst, seg.dst_port,
                       ETH_HDR.pack(mac, self._gw_mac, ETHERTYPE_IPV4), now,
                       syn_head=bytes(packet[:_SYN_HEAD_MAX]))
        self._tcp_by_key[key] = flow
        self._tcp_by_id[flow_id] = flow
        self._half_open += 1
        self.counters["tcp.flows.opened"] += 1
        if dns:
            self.counters["dns.tcp.flows.opened"] += 1
            host = ""
        else:
            host = "127.0.0.1" if dst == self.gateway_ip else _ntoa(dst)
        self._events.append(TcpConnectRequested(
            flow_id, host, seg.dst_port, _ntoa(src), seg.src_port, dns))
        self._dirty[flow_id] = flow

    def _send_rst_for(self, seg: TcpSegment, src: bytes, dst: bytes) -> None:
        """RST for a segment that has no connection (RFC 9293 §3.10.7.1)."""
        if seg.flags & ACK:
            seq, ack, flags = seg.ack, 0, RST
        else:
            seq, ack, flags = 0, (seg.seq + seg.seg_len) & 0xFFFFFFFF, RST | ACK
        tcp = TCP_HDR.pack(seg.dst_port, seg.src_port, seq, ack, 0x50, flags, 0, 0, 0)
        pseudo = sum16(dst + src) + PROTO_TCP + len(tcp)
        tcp = tcp[:16] + finish(sum16(tcp, pseudo)).to_bytes(2, "big") + tcp[18:]
        self._send_ip(dst, src, PROTO_TCP, tcp)
        self.counters["tcp.tx.rst"] += 1

    def _service(self, flow: TcpFlow, now: float) -> None:
        """Emit a flow's pending segments, pass on its events, re-arm its timer."""
        conn = flow.conn
        fid = flow.flow_id
        if flow.eth_prefix is None:
            if conn.state is not TcpState.CLOSED:
                # An inbound flow to a guest whose MAC we do not know yet: hold its segments
                # (they stay pending in the connection) and ask for the MAC.
                self._await_mac[fid] = flow
                self._arp_for_guest(now)
                t = conn.get_timer()
                if t != flow.timer_at:
                    flow.timer_at = t
                    if t is not None:
                        self._timers.push(t, fid, self._tcp_by_id)
                return
            conn.segments_to_send(now)           # nothing was ever sent: nothing to reset
        else:
            segments = conn.segments_to_send(now)
            if segments:
                self._emit_segments(flow, conn, segments)
        events = self._events
        closed = reset = False
        for ev in conn.take_events():
            t = type(ev)
            if t is DataReceived:
                events.append(TcpDataReceived(fid, ev.data))
            elif t is EofReceived:
                events.append(TcpEofReceived(fid))
            elif t is Established:
                if flow.half_open:
                    flow.half_open = False
                    self._half_open -= 1
                    if flow.inbound:
                        self._inbound_syn.pop(fid, None)
                self.counters["tcp.flows.established"] += 1
            elif t is Reset:
                self.counters["tcp.flows.reset." + ev.reason] += 1
                reset = True
            elif t is Closed:
                closed = True
        if closed:
            self._forget(flow, reset)
            return
        queued = conn.send_buffered
        if queued != flow.queued:
            self._account_queued(flow, queued)
        if flow.read_paused and queued <= self.snd_share() // 2:
            flow.read_paused = False
            events.append(TcpHostReadPaused(fid, False))
        t = conn.get_timer()
        if t != flow.timer_at:
            flow.timer_at = t
            if t is not None:
                self._timers.push(t, fid, self._tcp_by_id)

    def _forget(self, flow: TcpFlow, reset: bool) -> None:
        """The one way a TCP flow ends, whatever ended it: it leaves every table and the
        runtime is told to close its host socket (abort it if `reset`). A flow dropped from
        the tables without that event would keep its host socket open for good."""
        self._events.append(TcpFlowClosed(flow.flow_id, reset))
        self._account_queued(flow, 0)
        self._tcp_by_key.pop(flow.key, None)
        self._tcp_by_id.pop(flow.flow_id, None)
        self._dirty.pop(flow.flow_id, None)
        self._await_mac.pop(flow.flow_id, None)
        if flow.inbound:
            self._inbound_syn.pop(flow.flow_id, None)
        flow.timer_at = None
        if flow.half_open:
            flow.half_open = False
            self._half_open -= 1
        self.counters["tcp.flows.closed"] += 1

    def _emit_segments(self, flow: TcpFlow, conn: TcpConnection, segments: list) -> None:
        frames = self._frames
        eth_prefix = flow.eth_prefix
        sport = flow.host_port
        dport = flow.guest_port
        ip_base = flow.ip_base_sum
        pseudo_base = flow.pseudo_base
        vnet = self.vnet_hdr
        offload = self.offload
        mss = conn.snd_mss
        pack_tcp = TCP_HDR.pack
        pack_ip = IPV4_HDR.pack
        src_ip = flow.host_ip
        dst_ip = flow.guest_ip
        c = self.counters
        for seq, ack, flags, window, options, payload in segments:
            thlen = 20 + len(options)
            plen = len(payload)
            tcp_len = thlen + plen
            total = IPV4_HLEN + tcp_len
            # IPv4 header checksum: constant part + total length (ident 0, DF set).
            s = ip_base + total
            s = (s & 0xFFFF) + (s >> 16)
            s = (s & 0xFFFF) + (s >> 16)
            ip = pack_ip(0x45, 0, total, 0, 0x4000, 64, PROTO_TCP, ~s & 0xFFFF, src_ip, dst_ip)
            p = pseudo_base + tcp_len
            if offload:
                p = (p & 0xFFFF) + (p >> 16)
                p = (p & 0xFFFF) + (p >> 16)
                tcp = pack_tcp(sport, dport, seq, ack, thlen << 2, flags, window, p, 0) + options
                if plen > mss:
                    hdr = VNET_HDR.pack(F_NEEDS_CSUM, GSO_TCPV4, ETH_HLEN + IPV4_HLEN + thlen, mss,
                                        _ETH_IP_HLEN, 16, 0)
                    c["tcp.tx.gso_frames"] += 1
                else:
                    hdr = self._vnet_csum
            else:
                if type(payload) is Gather:
                    payload = bytes(payload)            # summed below: one contiguous buffer
                tcp = pack_tcp(sport, dport, seq, ack, thlen << 2, flags, window, 0, 0) + options
                csum = finish(sum16(payload, sum16(tcp, p))) if plen else finish(sum16(tcp, p))
                tcp = tcp[:16] + csum.to_bytes(2, "big") + tcp[18:]
                hdr = self._vnet_plain
            if type(payload) is Gather:
                frames.append((hdr + eth_prefix + ip + tcp, *payload.parts))
            elif plen:
                frames.append((hdr + eth_prefix + ip + tcp, payload))
            else:
                frames.append(hdr + eth_prefix + ip + tcp)
        c["tcp.tx.segments"] += len(segments)
