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

Not implemented here (yet): UDP, ICMP to other hosts, DNS, IPv6, inbound (published) flows.
"""

from __future__ import annotations

import ipaddress
import random
from collections import defaultdict, deque
from dataclasses import dataclass

from . import arp as _arp
from . import icmp as _icmp
from .checksum import finish, sum16
from .errors import MalformedPacket
from .ethernet import ETH_HDR, ETH_HLEN, ETHERTYPE_ARP, ETHERTYPE_IPV4
from .flows import DeadlineHeap, TcpFlow
from .ipv4 import IPV4_HDR, IPV4_HLEN, PROTO_ICMP, PROTO_TCP, PROTO_UDP
from .ipv4 import build_header as build_ipv4_header
from .tcp import ACK, FIN, RST, SYN, TCP_HDR, TcpSegment
from .tcp_conn import (
    Closed, DataReceived, EofReceived, Established, Reset, TcpConnection, TcpParams, TcpState,
)
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


# --- events for the runtime -------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class TcpConnectRequested:
    """The guest opened a TCP connection: connect a host socket to host:port."""
    flow_id: int
    host: str
    port: int
    guest: str
    guest_port: int


@dataclass(frozen=True, slots=True)
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


# ----------------------------------------------------------------------------------------


class Stack:
    def __init__(self, config, *, vnet_hdr: bool, offload: bool, rng: random.Random | None = None):
        self.config = config
        self.limits = config.limits
        self.vnet_hdr = vnet_hdr
        self.offload = offload and vnet_hdr
        self._rng = rng or random.Random(0)
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
        )
        self._tcp_by_key: dict[tuple, TcpFlow] = {}
        self._tcp_by_id: dict[int, TcpFlow] = {}
        self._next_flow_id = 1
        self._half_open = 0
        self._dirty: dict[int, TcpFlow] = {}         # insertion-ordered set of flows to service
        self._timers = DeadlineHeap()
        self._frames: list = []                      # frames ready for the TAP
        self._events: deque = deque()

        if vnet_hdr:
            self._vnet_plain = bytes(VNET_HDR_LEN)
            # A complete frame whose TCP checksum we leave to the kernel.
            self._vnet_csum = VNET_HDR.pack(F_NEEDS_CSUM, GSO_NONE, 0, 0, _ETH_IP_HLEN, 16, 0)
        else:
            self._vnet_plain = b""
            self._vnet_csum = b""

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

    def frames_to_send(self, now: float) -> list:
        """Frames for the TAP: each item is `bytes`, or a tuple of buffers for `os.writev`."""
        dirty = self._dirty
        while dirty:
            flow_id = next(iter(dirty))
            flow = dirty.pop(flow_id)
            self._service(flow, now)
        self._timers.compact(self._tcp_by_id)
        frames, self._frames = self._frames, []
        return frames

    # ------------------------------------------------------------------ public: runtime side

    def next_event(self):
        return self._events.popleft() if self._events else None

    def next_deadline(self) -> float | None:
        return self._timers.next_deadline(self._tcp_by_id)

    def handle_timer(self, now: float) -> None:
        for flow in list(self._timers.pop_due(now, self._tcp_by_id)):
            flow.conn.handle_timer(now)
            self._dirty[flow.flow_id] = flow

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
            self._forget(flow)
            self._events.append(TcpFlowClosed(flow_id, False))
            return
        self._dirty[flow_id] = flow

    def tcp_host_data(self, flow_id: int, data: bytes, now: float) -> None:
        flow = self._tcp_by_id.get(flow_id)
        if flow is None:
            return
        conn = flow.conn
        conn.send(data)
        flow.bytes_out += len(data)
        if not flow.read_paused and conn.send_buffered >= self.limits.tcp_snd_buf:
            flow.read_paused = True
            self.counters["tcp.host.read_paused"] += 1
            self._events.append(TcpHostReadPaused(flow_id, True))
        self._dirty[flow_id] = flow

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
        elif proto == PROTO_ICMP:
            self._receive_icmp(packet, hlen, src, dst)
        elif proto == PROTO_UDP:
            c["udp.rx.drop.unsupported"] += 1
        else:
            c["ipv4.rx.drop.proto"] += 1

    def _destination_allowed(self, dst: bytes) -> str | None:
        """Why a flow to `dst` may not be proxied, or None. Host loopback is never reachable
        except through the gateway address with allow_host_loopback."""
        d = int.from_bytes(dst, "big")
        if dst == self.gateway_ip:
            return None if self.config.allow_host_loopback else "host_loopback_denied"
        if (d & self._net_mask) == self._net_lo:
            return "local_network"          # .3 (DNS over TCP: not yet), the guest itself, others
        first = d >> 24
        if first == 127 or first == 0 or first >= 224:
            return "martian_dst"            # loopback, "this network", multicast, reserved/broadcast
        return None

    def _receive_icmp(self, packet: memoryview, hlen: int, src: bytes, dst: bytes) -> None:
        c = self.counters
        if dst not in self._virtual_macs:
            c["icmp.rx.drop.unsupported"] += 1
            return
        msg = packet[hlen:]
        hdr = _icmp.IcmpHeader.parse(msg, verify_checksum=True)
        if hdr.type != _icmp.ECHO_REQUEST:
            c["icmp.rx.drop.type"] += 1
            return
        reply = _icmp.build_echo_reply(msg)
        self._send_ip(dst, src, PROTO_ICMP, reply)
        c["icmp.tx.echo_reply"] += 1

    def _send_ip(self, src: bytes, dst: bytes, proto: int, payload: bytes) -> None:
        mac = self._guest_mac
        if mac is None:
            self.counters["tx.drop.no_guest_mac"] += 1
            return
        src_mac = self._virtual_macs.get(src, self._gw_mac)
        ip = build_ipv4_header(src, dst, proto, len(payload))
        self._frames.append(self._vnet_plain + ETH_HDR.pack(mac, src_mac, ETHERTYPE_IPV4) + ip + payload)

    def _send_icmp_error(self, from_ip: bytes, to_ip: bytes, message: bytes) -> None:
        # ICMP errors about a remote host come from the gateway, the router that "forwarded" it.
        self._send_ip(self.gateway_ip, to_ip, PROTO_ICMP, message)
        self.counters["icmp.tx.error"] += 1

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
            if (flags & (SYN | ACK | RST)) == SYN and conn.state is TcpState.TIME_WAIT:
                # A new incarnation of the 4-tuple (RFC 9293 §3.10.7.4 / RFC 6191): let the old go.
                self._forget(flow)
                c["tcp.time_wait.reused"] += 1
            else:
                flow.bytes_in += len(seg.payload)
                conn.receive_segment(seg, now)
                self._dirty[flow.flow_id] = flow
                return
        # No flow for this 4-tuple.
        if flags & RST:
            c["tcp.rx.drop.rst_no_flow"] += 1
            return
        if (flags & (SYN | ACK | FIN)) != SYN:
            c["tcp.rx.no_flow"] += 1
            self._send_rst_for(seg, src, dst)
            return
        if seg.dst_port == 0 or seg.src_port == 0:
            c["tcp.rx.drop.port_zero"] += 1
            return
        why = self._destination_allowed(dst)
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
        self._open_flow(seg, packet, src, dst, now)

    def _open_flow(self, seg: TcpSegment, packet: memoryview, src: bytes, dst: bytes, now: float) -> None:
        mac = self._guest_mac
        if mac is None:
            self.counters["tx.drop.no_guest_mac"] += 1
            return
        flow_id = self._next_flow_id
        self._next_flow_id += 1
        conn = TcpConnection.passive(seg, self._rng.getrandbits(32), now, self._tcp_params)
        key = (src, seg.src_port, dst, seg.dst_port)
        flow = TcpFlow(flow_id, key, conn, src, seg.src_port, dst, seg.dst_port,
                       ETH_HDR.pack(mac, self._gw_mac, ETHERTYPE_IPV4), now,
                       syn_head=bytes(packet[:_SYN_HEAD_MAX]))
        self._tcp_by_key[key] = flow
        self._tcp_by_id[flow_id] = flow
        self._half_open += 1
        self.counters["tcp.flows.opened"] += 1
        host = "127.0.0.1" if dst == self.gateway_ip else str(ipaddress.IPv4Address(dst))
        self._events.append(TcpConnectRequested(
            flow_id, host, seg.dst_port, str(ipaddress.IPv4Address(src)), seg.src_port))
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
        segments = conn.segments_to_send(now)
        if segments:
            self._emit_segments(flow, conn, segments)
        events = self._events
        fid = flow.flow_id
        closed = reset = False
        while True:
            ev = conn.next_event()
            if ev is None:
                break
            t = type(ev)
            if t is DataReceived:
                events.append(TcpDataReceived(fid, ev.data))
            elif t is EofReceived:
                events.append(TcpEofReceived(fid))
            elif t is Established:
                if flow.half_open:
                    flow.half_open = False
                    self._half_open -= 1
                self.counters["tcp.flows.established"] += 1
            elif t is Reset:
                self.counters["tcp.flows.reset." + ev.reason] += 1
                reset = True
            elif t is Closed:
                closed = True
        if closed:
            self._forget(flow)
            events.append(TcpFlowClosed(fid, reset))
            return
        if flow.read_paused and conn.send_buffered <= self.limits.tcp_snd_buf // 2:
            flow.read_paused = False
            events.append(TcpHostReadPaused(fid, False))
        t = conn.get_timer()
        if t != flow.timer_at:
            flow.timer_at = t
            if t is not None:
                self._timers.push(t, fid)

    def _forget(self, flow: TcpFlow) -> None:
        self._tcp_by_key.pop(flow.key, None)
        self._tcp_by_id.pop(flow.flow_id, None)
        self._dirty.pop(flow.flow_id, None)
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
                tcp = pack_tcp(sport, dport, seq, ack, thlen << 2, flags, window, 0, 0) + options
                csum = finish(sum16(payload, sum16(tcp, p))) if plen else finish(sum16(tcp, p))
                tcp = tcp[:16] + csum.to_bytes(2, "big") + tcp[18:]
                hdr = self._vnet_plain
            if plen:
                frames.append((hdr + eth_prefix + ip + tcp, payload))
            else:
                frames.append(hdr + eth_prefix + ip + tcp)
        c["tcp.tx.segments"] += len(segments)
