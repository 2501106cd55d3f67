"""UDP (and DNS over UDP): guest datagrams into flows, host datagrams back to the guest.

Why a module: UDP flows are connectionless and expire when idle (flow.py); everything about
them that is not a table operation is here. Each (guest ip, guest port, destination ip,
destination port) is a flow whose host socket the runtime opens on `UdpFlowOpened`; fwd.py
decides where it goes (DNS to network+3:53 goes to the upstream) or how it is refused. A DNS
"query" shorter than a DNS header or with QR set is dropped before it makes a flow. The TAP
does not enable UDP offloads, so every guest datagram fits the MTU; the checksum of one that
is neither NEEDS_CSUM nor DATA_VALID is verified. Datagrams to the guest carry NEEDS_CSUM
with the pseudo-header sum when offloads are on, a full checksum otherwise; one that would not
fit the MTU unfragmented is dropped and counted. The same code serves both IP families: a
flow keeps its family's framing (`DatagramFlow.fam`: header length and builder, ethertype,
checksum offload header, how much of a packet an error may quote) and ICMP flavour (picked
by address length on the error paths), and DNS at the IPv6 DNS address is DNS as at
network+3. Over IPv6 a UDP checksum is mandatory: the wire parser refuses a zero one. A first
datagram that fwd.py finds to be DHCP (port 67 at the gateway or a broadcast address) makes no
flow: it goes to the DHCP server (iface/dhcp.py, wired by the Stack as `dhcp`). With name
views set (names.py, wired as `names`), each DNS query is first offered to them: a local
answer (or NXDOMAIN for a foreign network's name) goes straight back to the querier from
the DNS address, and only the rest reaches (or opens) the flow to the upstream.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Callable

from .. import fwd as _fwd
from ..addr import ntoa
from ..checksum import finish, fold, sum16
from ..events import StackEvent, UdpDatagramReceived, UdpFlowOpened
from ..flow import DatagramFlow, FlowKey, FlowTable
from ..names import DROP, NameViews
from ..wire.ipv4 import PROTO_UDP
from ..wire.udp import UDP_HDR, UDP_HLEN, UdpHeader, build_datagram
from .icmp import ErrorChannel
from .link import Link
from .neighbours import Neighbours

DNS_HLEN = 12


def _no_dhcp(payload: memoryview, now: float) -> None:
    return None


def is_dns_query(payload: memoryview) -> bool:
    """Long enough for a DNS header, and QR clear (a query, not a response)."""
    return len(payload) >= DNS_HLEN and not payload[2] & 0x80


class UdpHandler:
    def __init__(self, config: Any, link: Link, neighbours: Neighbours, table: FlowTable,
                 fwd: _fwd.Forwarder, errors: dict[int, ErrorChannel],
                 events: deque[StackEvent]) -> None:
        self._link = link
        self._neighbours = neighbours
        self._counters = link.counters
        self._table = table
        self._flows = table.udp
        self._fwd = fwd
        self._errors = errors          # the ICMP flavour by address length (4 or 16)
        self._events = events
        self._mtu: int = config.mtu
        self.dhcp: Callable[[memoryview, float], None] = _no_dhcp   # wired to iface/dhcp.py
        self.names = NameViews(self._counters)                     # the Stack's (set_names)

    def receive(self, packet: memoryview, hlen: int, src: bytes, dst: bytes, verify: bool,
                now: float) -> None:
        c = self._counters
        udp = packet[hlen:]
        hdr = UdpHeader.parse(udp, src, dst, verify)
        sport = hdr.src_port
        dport = hdr.dst_port
        payload = udp[UDP_HLEN:hdr.length]
        key = (src, sport, dst, dport)
        table = self._flows
        flow = table.get(key)
        if flow is None:
            flow = self._open(packet, key, payload, now)
            if flow is None:
                return
        else:
            if flow.dns:
                if not is_dns_query(payload):
                    c["dns.rx.drop.garbage"] += 1
                    return
                if self.names.active and self._answered_locally(key, payload):
                    return
            table.move_to_end(key)
        self.deliver(flow, packet, payload, now)

    def deliver(self, flow: DatagramFlow, packet: memoryview, payload: memoryview,
                now: float) -> None:
        """A guest datagram on `flow` (`packet`: its IP packet): the flow's records, the
        counter and the event, for this receive path and iface/fastpath.py's."""
        flow.last_head = bytes(packet[:flow.fam.quote_max])
        flow.last_active = now
        flow.datagrams_in += 1
        flow.bytes_in += len(payload)
        self._counters["udp.rx.datagrams"] += 1
        self._events.append(UdpDatagramReceived(flow.flow_id, payload))

    def _open(self, packet: memoryview, key: FlowKey, payload: memoryview,
              now: float) -> DatagramFlow | None:
        c = self._counters
        src, sport, dst, dport = key
        if not _fwd.ports_valid(sport, dport):
            c["udp.rx.drop.port_zero"] += 1
            return None
        verdict = self._fwd.outbound(PROTO_UDP, src, dst, dport)
        if verdict.host is None:
            if verdict.reply == _fwd.REPLY_DHCP:
                self.dhcp(payload, now)
                return None
            c["udp.rx.drop." + verdict.why] += 1
            if verdict.reply == _fwd.REPLY_PORT_UNREACH:
                self._errors[len(src)].port_unreachable(packet, src, dst)
            elif verdict.reply == _fwd.REPLY_NET_UNREACH:
                self._errors[len(src)].unreachable_from_gateway(
                    src, _fwd.net_unreach_code(len(src) == 16), bytes(packet))
            return None
        dns = verdict.dns
        if dns:
            if not is_dns_query(payload):
                c["dns.rx.drop.garbage"] += 1
                return None
            if self.names.active and self._answered_locally(key, payload):
                return None
        flow = self._table.new_dgram(key, PROTO_UDP, src, sport, dst, dport, now, dns,
                                     verdict.host, self._link.family(src))
        if dns:
            c["dns.flows.opened"] += 1
        self._events.append(UdpFlowOpened(flow.flow_id, verdict.host, dport, ntoa(src), sport,
                                          dns))
        return flow

    def _answered_locally(self, key: FlowKey, payload: memoryview) -> bool:
        """Offer a DNS query to the name views; True when it was answered (or dropped) here."""
        src, sport, dst, dport = key
        reply = self.names.answer(src, payload)
        if reply is None:
            return False
        if reply is not DROP:
            self._link.send_ip(dst, src, PROTO_UDP, build_datagram(dst, src, dport, sport, reply))
            self._counters["dns.names.tx"] += 1
        return True

    def inbound_open(self, key: FlowKey, guest_ip: bytes, guest_port: int, client_ip: str,
                     now: float) -> int:
        """Make the flow of a published port's new client (key from the Stack's inbound_key)."""
        _, _, src, sport = key
        flow = self._table.new_dgram(key, PROTO_UDP, guest_ip, guest_port, src, sport, now,
                                     False, client_ip, self._link.family(guest_ip))
        flow.inbound = True
        self._counters["udp.inbound.opened"] += 1
        return flow.flow_id

    def host_datagram(self, flow_id: int, data: bytes | memoryview, now: float) -> None:
        """A datagram arrived on the flow's host socket: deliver it to the guest."""
        c = self._counters
        flow = self._table.dgram_by_id.get(flow_id)
        if flow is None or flow.proto != PROTO_UDP:
            c["udp.host.drop.no_flow"] += 1
            return
        n = len(data)
        fam = flow.fam
        if fam.hlen + UDP_HLEN + n > self._mtu:
            c["udp.tx.drop.too_big"] += 1
            return
        link = self._link
        mac = link.guest_mac
        if mac is None:
            if flow.inbound and self._neighbours.hold_udp(flow_id, data, now, flow.guest_ip):
                c["udp.inbound.await_mac"] += 1
            else:
                c["tx.drop.no_guest_mac"] += 1
            return
        self._table.dgram_replied(flow, n, now)
        length = UDP_HLEN + n
        sport = flow.host_port
        dport = flow.guest_port
        p = flow.pseudo_base + length
        if link.offload:
            udp = UDP_HDR.pack(sport, dport, length, fold(p))
            vnet = fam.vnet_udp_csum
        else:
            csum = finish(sum16(data, p + sport + dport + length)) or 0xFFFF
            udp = UDP_HDR.pack(sport, dport, length, csum)
            vnet = link.vnet_plain
        src = flow.host_ip
        head = (vnet + link.eth_prefix(mac, link.virtual_macs.get(src), fam.ethertype)
                + fam.build_header(src, flow.guest_ip, PROTO_UDP, length) + udp)
        link.frames.append((head, data) if n else head)
        c["udp.tx.datagrams"] += 1

    def host_error(self, flow_id: int, err: int, now: float, icmp_type: int | None = None,
                   icmp_code: int = 0, offender: bytes | None = None, info: int = 0) -> None:
        """The flow's host socket reported an error: errno `err`, and when the kernel told us
        (IP_RECVERR / IPV6_RECVERR), the ICMP type/code it received from `offender` (ICMPv6
        values and a 16-byte offender for an IPv6 flow). Becomes an ICMP error of the flow's
        flavour to the guest, quoting its last datagram on the flow."""
        flow = self._table.dgram_by_id.get(flow_id)
        if flow is None or flow.proto != PROTO_UDP:
            return
        n = len(flow.guest_ip)
        errors = self._errors[n]
        if icmp_type is None:
            code = _fwd.datagram_unreach_code(err, n == 16)
            if code is None:
                self._counters["udp.host.error.other"] += 1
                return
            icmp_type, icmp_code = errors.unreach_type, code
        self._counters["udp.host.error"] += 1
        errors.flow_error(flow, icmp_type, icmp_code, offender, info)
