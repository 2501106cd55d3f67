"""The DHCPv4 server at the gateway: addresses for guests that configure themselves.

Why a module: slirp4netns (libslirp) leases network+15..+30 to a guest that asks, and a guest
left unconfigured (slirp4netns mode without `-c`, a container image that runs its own DHCP
client) asks. `slirpy run` configures tap0 itself, so there nobody asks and this costs
nothing: the server is reached only from two places, both off the ordinary path: a UDP packet
from 0.0.0.0 (which IPv4 input otherwise drops as `bad_src`) and a new UDP "flow" that fwd.py
finds to be port 67 at the gateway or a broadcast address (its per-flow decision).

The lease table is bounded by its pool (16 addresses), keyed by the client's MAC. DISCOVER
offers the client's current address, else the one it asks for if free, else the first free
one (expired leases and offers are reclaimed when the pool is full); an offer holds the address
for OFFER_HOLD seconds. REQUEST is acknowledged for an address of the pool that is free or the
client's (NAK otherwise; a REQUEST naming another server drops the client's offer); INFORM gets
the options without an address; RELEASE and DECLINE free the client's lease. An ACK makes the
client the guest whose MAC the stack sends to (slirpy serves one guest per TAP), as ARP from
it would. Replies follow RFC 2131 §4.1: to ciaddr when the client has one, else broadcast
when it asks (and for a NAK), else to the offered address at the client's MAC.
Counters: `dhcp.rx.<type>`, `dhcp.tx.<offer|ack|nak>`, `dhcp.rx.drop.<reason>` (malformed
requests by their parser reason, `pool_full`, `other_server`, `not_dhcp`...).
"""

from __future__ import annotations

from typing import Any

from ..wire import dhcp as _dhcp
from ..errors import MalformedPacket
from ..wire.ethernet import ETH_HDR, ETHERTYPE_IPV4
from ..wire.ipv4 import PROTO_UDP
from ..wire.ipv4 import build_header as build_ipv4_header
from ..wire.udp import UDP_HLEN, UdpHeader, build_datagram
from .link import Link
from .neighbours import BROADCAST_MAC, Neighbours

POOL_START = 15                 # network+15 .. network+30, as libslirp
POOL_SIZE = 16
LEASE_TIME = 86400              # seconds (libslirp's)
OFFER_HOLD = 60.0               # seconds an offered address stays reserved for its client
BROADCAST_IP = b"\xff\xff\xff\xff"
ZERO_IP = bytes(4)
_NAMES = {_dhcp.DISCOVER: "discover", _dhcp.REQUEST: "request", _dhcp.DECLINE: "decline",
          _dhcp.RELEASE: "release", _dhcp.INFORM: "inform"}


class DhcpServer:
    """The lease table and the answers (see the module docstring)."""

    def __init__(self, config: Any, link: Link, neighbours: Neighbours) -> None:
        self._link = link
        self._neighbours = neighbours
        self._counters = link.counters
        net = config.network
        base = int(net.network_address)
        self.pool: tuple[bytes, ...] = tuple((base + POOL_START + i).to_bytes(4, "big")
                                             for i in range(POOL_SIZE))
        self._pool_set = frozenset(self.pool)
        self.server: bytes = config.gateway.packed
        self._mask: bytes = net.netmask.packed
        self._dns: bytes | None = config.dns.packed if config.dns_enabled else None
        self.destinations = frozenset((self.server, BROADCAST_IP, net.broadcast_address.packed))
        self.leases: dict[bytes, tuple[bytes, float]] = {}     # MAC -> (address, expires at)

    # ------------------------------------------------------------------ inputs

    def receive_unconfigured(self, packet: memoryview, hlen: int, src: bytes, dst: bytes,
                             verify: bool, now: float) -> None:
        """A UDP packet from 0.0.0.0 (IPv4 input's `bad_src` case): DHCP, or dropped."""
        c = self._counters
        try:
            udp = UdpHeader.parse(packet[hlen:], src, dst, verify)
        except MalformedPacket as e:
            c["rx.drop." + e.reason] += 1
            return
        if udp.dst_port != _dhcp.SERVER_PORT or dst not in self.destinations:
            c["ipv4.rx.drop.bad_src"] += 1
            return
        self.handle(packet[hlen + UDP_HLEN:hlen + udp.length], now)

    def handle(self, payload: memoryview, now: float) -> None:
        """One client message (the UDP payload): parse, answer, count."""
        c = self._counters
        try:
            req = _dhcp.DhcpRequest.parse(payload)
        except MalformedPacket as e:
            c["dhcp.rx.drop." + e.reason.split(".", 1)[-1]] += 1
            return
        c["dhcp.rx." + _NAMES[req.msg_type]] += 1
        if req.mac[0] & 1 or req.mac == bytes(6):
            c["dhcp.rx.drop.bad_mac"] += 1
            return
        t = req.msg_type
        if t == _dhcp.DISCOVER:
            self._discover(req, now)
        elif t == _dhcp.REQUEST:
            self._request(req, now)
        elif t == _dhcp.INFORM:
            self._reply(_dhcp.ACK, req, ZERO_IP, 0)
        else:                                   # RELEASE, DECLINE: the address is given back
            self.leases.pop(req.mac, None)

    # ------------------------------------------------------------------ decisions

    def _discover(self, req: _dhcp.DhcpRequest, now: float) -> None:
        ip = self._pick(req.mac, req.requested_ip, now)
        if ip is None:
            self._counters["dhcp.rx.drop.pool_full"] += 1
            return
        held = self.leases.get(req.mac)
        expires = max(held[1], now + OFFER_HOLD) if held is not None and held[0] == ip \
            else now + OFFER_HOLD
        self.leases[req.mac] = (ip, expires)
        self._reply(_dhcp.OFFER, req, ip, LEASE_TIME)

    def _request(self, req: _dhcp.DhcpRequest, now: float) -> None:
        if req.server_id is not None and req.server_id != self.server:
            self.leases.pop(req.mac, None)      # the client took another server's offer
            self._counters["dhcp.rx.drop.other_server"] += 1
            return
        ip = req.requested_ip or (req.ciaddr if req.ciaddr != ZERO_IP else None)
        if (ip is None or ip not in self._pool_set or not self._free_for(ip, req.mac, now)
                or not self._room(req.mac, now)):
            self._reply(_dhcp.NAK, req, ZERO_IP, 0)
            return
        self.leases[req.mac] = (ip, now + LEASE_TIME)
        self._neighbours.remember(ip, req.mac, "arp.neighbour.evicted")
        self._neighbours.guest_mac_is(req.mac)
        self._reply(_dhcp.ACK, req, ip, LEASE_TIME)

    def _free_for(self, ip: bytes, mac: bytes, now: float) -> bool:
        """Whether `ip` may be `mac`'s: nobody else holds it, or their hold has expired."""
        for other, (held, expires) in self.leases.items():
            if held == ip and other != mac and expires > now:
                return False
        return True

    def _room(self, mac: bytes, now: float) -> bool:
        """Whether the table can hold `mac` (it has an entry, or one is free or expired)."""
        leases = self.leases
        if mac in leases or len(leases) < POOL_SIZE:
            return True
        for other in [m for m, (_, exp) in leases.items() if exp <= now]:
            del leases[other]
        return len(leases) < POOL_SIZE

    def _pick(self, mac: bytes, wanted: bytes | None, now: float) -> bytes | None:
        """The address to offer `mac`: its own, the one it asks for, or the first free one."""
        leases = self.leases
        own = leases.get(mac)
        if own is not None and self._free_for(own[0], mac, now):
            return own[0]
        if not self._room(mac, now):
            return None
        taken = {ip for ip, exp in leases.values() if exp > now}
        if wanted is not None and wanted in self._pool_set and wanted not in taken:
            return wanted
        for ip in self.pool:
            if ip not in taken:
                return ip
        return None

    # ------------------------------------------------------------------ output

    def _reply(self, msg_type: int, req: _dhcp.DhcpRequest, yiaddr: bytes, lease: int) -> None:
        if msg_type == _dhcp.NAK:
            body = _dhcp.build_reply(msg_type, req, ZERO_IP, self.server)
        else:
            body = _dhcp.build_reply(msg_type, req, yiaddr, self.server, self._mask,
                                     self.server, self._dns, lease)
        if req.ciaddr != ZERO_IP and msg_type != _dhcp.NAK:
            dst, dst_mac = req.ciaddr, req.mac
        elif req.broadcast or msg_type == _dhcp.NAK:
            dst, dst_mac = BROADCAST_IP, BROADCAST_MAC
        else:
            dst, dst_mac = yiaddr, req.mac
        link = self._link
        udp = build_datagram(self.server, dst, _dhcp.SERVER_PORT, _dhcp.CLIENT_PORT, body)
        ip = build_ipv4_header(self.server, dst, PROTO_UDP, len(udp))
        link.frames.append(link.vnet_plain + ETH_HDR.pack(dst_mac, link.gw_mac, ETHERTYPE_IPV4)
                           + ip + udp)
        self._counters["dhcp.tx." + {_dhcp.OFFER: "offer", _dhcp.ACK: "ack",
                                     _dhcp.NAK: "nak"}[msg_type]] += 1
