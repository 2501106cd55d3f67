"""Neighbours: ARP (answering for the virtual hosts, learning the guest's MAC), the one
neighbour table, and the queues of what waits for the guest's MAC.

Why a module: the only thing the stack must learn about its link is who is on it. A guest that
has only listened so far (inbound flows to a published port) has sent nothing, so its MAC is
unknown: TCP flows wait in `await_tcp` (their segments stay pending in the connection) and UDP
datagrams in `await_udp` while we ask for the guest (ARP, or NDP for an IPv6 flow), at most
every `GUEST_ARP_INTERVAL`. NDP (ndp.py) sits beside ARP and shares the table (IPv4 and IPv6
entries together, `limits.max_neighbours` in all) and the guest's MAC: the guest has one MAC,
learned from either family and used by both.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Callable

from ..wire import arp as _arp
from ..addr import Prefix
from ..flow import FlowTable, TcpFlow, lru_victim
from .link import Link

BROADCAST_MAC = b"\xff" * 6
GUEST_ARP_INTERVAL = 0.5        # seconds between ARP requests for a silent guest
UDP_AWAIT_MAC_MAX = 64          # inbound datagrams held while the guest's MAC is unknown

UdpDeliver = Callable[[int, bytes, float], None]
Solicit = Callable[[float], None]


def _drop(flow_id: int, data: bytes, now: float) -> None:
    return None


def _no_solicit(now: float) -> None:
    return None


class Neighbours:
    """The neighbour table (bounded), the guest's MAC, and what waits for it."""

    def __init__(self, config: Any, link: Link, table: FlowTable, dirty: dict[int, TcpFlow]
                 ) -> None:
        self._link = link
        self._table = table
        self._dirty = dirty
        self._counters = link.counters
        self._max = config.limits.max_neighbours
        self._net = Prefix(config.network)
        self.gateway_ip: bytes = config.gateway.packed
        self.guest_ip: bytes = config.guest.packed
        self.entries: dict[bytes, bytes] = {}
        self.await_tcp: dict[int, TcpFlow] = {}
        self.await_udp: deque[tuple[int, bytes, float]] = deque()
        self.deliver_udp: UdpDeliver = _drop       # wired to the UDP handler by the Stack
        self.solicit6: Solicit = _no_solicit        # wired to NDP by the Stack (IPv6 on)
        self._guest_arp_at: float | None = None

    def receive_arp(self, mv: memoryview, src_mac: bytes) -> None:
        pkt = _arp.ArpPacket.parse(mv)
        c = self._counters
        self.learn(pkt.sender_ip, pkt.sender_mac)
        if pkt.op != _arp.OP_REQUEST:
            c["arp.rx.ignored"] += 1
            return
        mac = self._link.virtual_macs.get(pkt.target_ip)
        if mac is None:
            c["arp.rx.ignored"] += 1
            return
        reply = _arp.ArpPacket(_arp.OP_REPLY, mac, pkt.target_ip, pkt.sender_mac, pkt.sender_ip)
        self._link.send_arp(pkt.sender_mac, mac, reply.pack())
        c["arp.tx.reply"] += 1

    def learn(self, ip: bytes, mac: bytes) -> None:
        """An IPv4 neighbour (from ARP or an IPv4 packet), if it is on the sandbox network."""
        net = self._net
        if (int.from_bytes(ip, "big") & net.mask) != net.lo or mac[0] & 1:
            return
        self.remember(ip, mac, "arp.neighbour.evicted")
        if ip == self.guest_ip:
            self.guest_mac_is(mac)

    def remember(self, ip: bytes, mac: bytes, evicted: str) -> None:
        """Enter a neighbour of either family in the one bounded table (the least recently
        added entry makes room; counted as `evicted`)."""
        table = self.entries
        if ip not in table:
            victim = lru_victim(table, self._max)
            if victim is not None:
                table.pop(victim)
                self._counters[evicted] += 1
        table[ip] = mac

    def guest_mac_is(self, mac: bytes) -> None:
        """The guest's MAC, learned from either family: what waited for it leaves now."""
        self._link.guest_mac = mac
        if self.await_tcp or self.await_udp:
            self._guest_mac_learned(mac)

    def solicit_guest(self, guest_ip: bytes, now: float) -> None:
        """Ask for the guest's MAC on behalf of a flow to `guest_ip`: ARP, and for an IPv6
        flow NDP too (the guest has one MAC; whichever family answers first frees the flow,
        so a guest whose IPv6 address is not `guest6`, say one it made by SLAAC, answers)."""
        if len(guest_ip) == 16:
            self.solicit6(now)
        self.arp_for_guest(now)

    def arp_for_guest(self, now: float) -> None:
        last = self._guest_arp_at
        if last is not None and now - last < GUEST_ARP_INTERVAL:
            return
        self._guest_arp_at = now
        link = self._link
        req = _arp.ArpPacket(_arp.OP_REQUEST, link.gw_mac, self.gateway_ip, bytes(6), self.guest_ip)
        link.send_arp(BROADCAST_MAC, link.gw_mac, req.pack())
        self._counters["arp.tx.request"] += 1

    def hold_udp(self, flow_id: int, data: bytes | memoryview, now: float,
                 guest_ip: bytes = b"") -> bool:
        """Keep an inbound datagram until the guest's MAC is known; False when the queue is full."""
        if len(self.await_udp) >= UDP_AWAIT_MAC_MAX:
            return False
        self.await_udp.append((flow_id, bytes(data), now))
        self.solicit_guest(guest_ip, now)
        return True

    def _guest_mac_learned(self, mac: bytes) -> None:
        if self.await_tcp:
            link = self._link
            live = self._table.tcp_by_id
            for fid, flow in self.await_tcp.items():
                if fid in live:
                    flow.eth_prefix = link.eth_prefix(mac, None, link.family(flow.guest_ip).ethertype)
                    self._dirty[fid] = flow
            self.await_tcp.clear()
        held = self.await_udp
        while held:
            fid, data, now = held.popleft()
            self.deliver_udp(fid, data, now)
