"""Fuzz harnesses: one per wire parser, and one that drives a whole `Stack`. The IPv6 ones
(ipv6, icmpv6, ndp) live in tests/fuzz/harnesses_ipv6.py, the DHCP one (dhcp) in
tests/fuzz/harnesses_dhcp.py, the DNS name views' one (dns_names) in tests/fuzz/harnesses_dns.py,
and are registered here.

A harness is called with one input (``bytes``) and must return normally. Malformed input is
fine -- the parsers raise `MalformedPacket` and the harness swallows it -- but any other
exception, or a broken invariant (an `AssertionError` raised here), is a finding. The same
callables serve the pure-Python engine (tests/fuzz/runner.py) and atheris.

Parser harnesses also check what a successful parse promises: re-emitting a header gives back
the bytes it came from, lengths lie inside the buffer, derived properties do not raise.

The stack harness (`StackHarness`) keeps a `Stack` with small limits and one established
TCP flow from a simulated guest (tests/fuzz/guestsim.py). Its input is one control byte and a
frame. With the control byte's low bit set the frame is first *aimed* at the flow: addresses,
ports, and sequence/acknowledgment numbers near the flow's own (offsets chosen by the control
byte) are written into it, the IPv4 header checksum is fixed and the frame is marked
NEEDS_CSUM -- so mutated TCP headers, flags, options and payloads reach the connection's state
machine instead of dying at a checksum. After every frame it flushes, answers the stack's
events as a runtime would (connect / refuse / unreachable, chosen by the input), sometimes
gives the flow host data, and advances the clock. Invariants: nothing escapes
``receive_frame``/``frames_to_send``/``handle_timer``; ``rx.frames`` counts every frame and no
counter ever shrinks; the flow table (flows with a host socket, and those in TIME-WAIT
apart), half-open count and neighbour table stay within `Limits`; every emitted frame is bytes (or a tuple of them) no larger than a GSO frame.
"""

from __future__ import annotations

import random
import struct
from pathlib import Path

from slirpy.config import Limits, NetConfig
from slirpy.tcpip import stack as st
from slirpy.tcpip.wire.arp import ArpPacket
from slirpy.tcpip.checksum import sum16
from slirpy.tcpip.errors import MalformedPacket
from slirpy.tcpip.wire.ethernet import ETHERTYPE_ARP, EthernetHeader
from slirpy.tcpip.wire.icmp import (
    IcmpHeader, build_dest_unreachable, build_echo_reply, build_time_exceeded, is_error,
)
from slirpy.tcpip.wire.ipv4 import Ipv4Header
from slirpy.tcpip.wire.tcp import TcpOptions, TcpSegment
from slirpy.tcpip.tcp.state import TcpState
from slirpy.tcpip.wire.udp import UdpHeader
from slirpy.tcpip.wire.virtio import VirtioNetHeader

from tests.fuzz.guestsim import GUEST_IP, HOST_IP, Guest
from tests.fuzz.harnesses_dhcp import fuzz_dhcp
from tests.fuzz.harnesses_dns import dns_names_corpus, fuzz_dns_names
from tests.fuzz.harnesses_ipv6 import fuzz_icmpv6, fuzz_ipv6, fuzz_ndp

CORPUS = Path(__file__).resolve().parent / "corpus"
A = GUEST_IP
B = HOST_IP


def corpus(name: str) -> list[bytes]:
    d = CORPUS / name
    return [p.read_bytes() for p in sorted(d.glob("*.bin"))] if d.is_dir() else []


# ------------------------------------------------------------------ parser harnesses

def fuzz_virtio(data: bytes) -> None:
    try:
        h = VirtioNetHeader.parse(data)
    except MalformedPacket:
        return
    assert h.pack() == data[:12]
    assert h.gso_kind >= 0 and h.needs_csum in (True, False)


def fuzz_eth_arp(data: bytes) -> None:
    try:
        eth = EthernetHeader.parse(data)
    except MalformedPacket:
        return
    assert eth.pack() == data[:14]
    eth.is_broadcast, eth.is_multicast
    for payload in (memoryview(data)[14:], data[14:]):
        try:
            arp = ArpPacket.parse(payload)
        except MalformedPacket:
            continue
        assert arp.pack() == bytes(payload[:28])
        arp.is_gratuitous
        if eth.ethertype != ETHERTYPE_ARP:
            break


def fuzz_ipv4(data: bytes) -> None:
    for verify in (True, False):
        try:
            h = Ipv4Header.parse(memoryview(data), verify_checksum=verify)
        except MalformedPacket:
            continue
        assert 20 <= h.header_len <= h.total_length <= len(data)
        assert h.pack() == data[:h.header_len]
        assert sum16(h.with_checksum().pack()) == 0xFFFF
        h.is_fragment, h.dont_fragment, h.more_fragments, h.fragment_offset, h.payload_len
        if verify:
            assert sum16(data[:h.header_len]) == 0xFFFF


def fuzz_icmp(data: bytes) -> None:
    for verify in (True, False):
        try:
            h = IcmpHeader.parse(data, verify_checksum=verify)
        except MalformedPacket:
            continue
        assert h.pack() == data[:8]
        h.ident, h.sequence, h.next_hop_mtu, is_error(h.type)
    try:
        reply = build_echo_reply(memoryview(data))
    except MalformedPacket:
        pass
    else:
        assert IcmpHeader.parse(reply, verify_checksum=True).type == 0
    # error messages quote whatever they are given, within 576 bytes
    for build in (lambda q: build_dest_unreachable(3, q), lambda q: build_dest_unreachable(4, q, 1400),
                  lambda q: build_time_exceeded(0, q)):
        msg = build(data)
        assert len(msg) <= 576 - 20
        IcmpHeader.parse(msg, verify_checksum=True)


def fuzz_udp(data: bytes) -> None:
    for verify in (True, False):
        try:
            h = UdpHeader.parse(memoryview(data), A, B, verify_checksum=verify)
        except MalformedPacket:
            continue
        assert 8 <= h.length <= len(data)
        assert h.pack() == data[:8]


def fuzz_tcp(data: bytes) -> None:
    mv = memoryview(data)
    for verify in (True, False):
        try:
            seg = TcpSegment.parse(mv, A, B, verify_checksum=verify)
        except MalformedPacket:
            continue
        hlen = (data[12] >> 4) * 4
        assert len(seg.payload) == len(data) - hlen
        assert seg.seg_len >= len(seg.payload)
        o = seg.options
        assert o.mss is None or 0 <= o.mss <= 0xFFFF
        assert o.wscale is None or 0 <= o.wscale <= 255
        assert len(o.sack_blocks) <= 4
    try:
        opts = TcpOptions.parse(mv[20:])
    except MalformedPacket:
        return
    try:
        packed = opts.pack()
    except ValueError:
        return          # more than fits in 40 bytes (e.g. 4 SACK blocks + timestamps)
    assert TcpOptions.parse(packed) == opts


# ------------------------------------------------------------------ the stack harness

_U32 = struct.Struct("!I")
_DELTAS = (0, 0, 0, 1, -1, 2, -2, 1000, -1000, 65535, 1 << 20, -(1 << 20), 1 << 31, (1 << 31) - 1)
FUZZ_LIMITS = Limits(max_tcp_flows=32, max_half_open=8, max_neighbours=8, tcp_snd_buf=1 << 20,
                     tcp_rcv_buf=1 << 20, max_time_wait=2)
GSO_FRAME_MAX = 12 + 14 + 65535


class StackHarness:
    """A `Stack` with one established flow, fed one (control byte + frame) per call."""

    def __init__(self, seed: int = 0, reset_every: int = 5000):
        self.seed = seed
        self.reset_every = reset_every
        self.calls = 0
        self.resets = 0
        self.reestablished = 0
        self._rng = random.Random(seed)
        self._new_stack()

    def _new_stack(self) -> None:
        self.config = NetConfig(mtu=1500, limits=FUZZ_LIMITS)
        self.stack = st.Stack(self.config, vnet_hdr=True, offload=True,
                              rng=random.Random(self._rng.getrandbits(32)))
        self.now = 0.0
        self.since_reset = 0
        self.last_counters = {}
        self.flow_id = None
        self.guest = None
        self.resets += 1
        self._establish()

    def _establish(self) -> None:
        """Open a flow from a simulated guest (a fresh source port each time)."""
        stack = self.stack
        port = 40000 + (self.reestablished % 20000)
        self.reestablished += 1
        guest = Guest(self.config, vnet=True, iss=self._rng.getrandbits(32), now=self.now, sport=port)
        for _ in range(4):
            for f in guest.frames(self.now):
                stack.receive_frame(f, self.now)
            for f in stack.frames_to_send(self.now):
                guest.receive(f, self.now)
            while (ev := stack.next_event()) is not None:
                if type(ev) is st.TcpConnectRequested and ev.guest_port == port:
                    self.flow_id = ev.flow_id
                    stack.tcp_host_connected(ev.flow_id, self.now)
        self.guest = guest if guest.conn.state is TcpState.ESTABLISHED else None

    def _flow(self):
        for f in self.stack.flows():
            if f.flow_id == self.flow_id:
                return f
        return None

    def _aim(self, ctl: int, frame: bytearray) -> None:
        """Point a frame at the established flow (see the module docstring)."""
        if len(frame) < 12 + 14 + 20:
            return
        flow = self._flow()
        if flow is None:
            self._establish()
            flow = self._flow()
            if flow is None:
                return
        frame[0] |= 1                                    # NEEDS_CSUM: the TCP checksum is not checked
        frame[12 + 12:12 + 14] = b"\x08\x00"
        frame[12:18] = self.config.gateway_mac
        if self.guest is not None:
            frame[18:24] = bytes.fromhex("020000000064")
        ip = 12 + 14
        ihl = (frame[ip] & 15) * 4
        frame[ip] = 0x40 | (frame[ip] & 15)
        frame[ip + 12:ip + 16] = flow.guest_ip
        frame[ip + 16:ip + 20] = flow.host_ip
        if ctl & 2:
            frame[ip + 9] = 6
        if 20 <= ihl <= len(frame) - ip:
            frame[ip + 10:ip + 12] = b"\0\0"
            frame[ip + 10:ip + 12] = (~sum16(frame[ip:ip + ihl]) & 0xFFFF).to_bytes(2, "big")
            t = ip + ihl
            if len(frame) >= t + 20:
                frame[t:t + 2] = flow.guest_port.to_bytes(2, "big")
                frame[t + 2:t + 4] = flow.host_port.to_bytes(2, "big")
                conn = flow.conn
                dseq = _DELTAS[(ctl >> 2) % len(_DELTAS)]
                dack = _DELTAS[(ctl >> 5) % len(_DELTAS)] if ctl & 0x80 else 0
                _U32.pack_into(frame, t + 4, (conn.rcv_nxt + dseq) & 0xFFFFFFFF)
                _U32.pack_into(frame, t + 8, (conn.snd_una + dack) & 0xFFFFFFFF)

    def __call__(self, data: bytes) -> None:
        if not data:
            return
        self.calls += 1
        self.since_reset += 1
        if self.since_reset > self.reset_every:
            self._new_stack()
        stack = self.stack
        ctl = data[0]
        frame = bytearray(data[1:])
        if ctl & 1:
            self._aim(ctl, frame)
        c = stack.counters
        before = c.get("rx.frames", 0)
        stack.receive_frame(bytes(frame), self.now)
        assert c["rx.frames"] == before + 1, "rx.frames did not count the frame"
        self._flush(ctl)
        if self.since_reset % 64 == 0:
            self.now += 0.5 + (ctl & 3)
            stack.handle_timer(self.now)
            self._flush(ctl)
        elif self.since_reset % 8 == 4 and ctl & 0x10 and self.flow_id is not None:
            self._close_host_first()
        self._check()

    def _close_host_first(self) -> None:
        """The host closes the flow first, then the guest answers our FIN with its own (a
        FIN|ACK built from the flow's sequence numbers: the simulated guest is often gone by
        now): our side goes into TIME-WAIT, which max_time_wait bounds (the oldest let go).
        The next aimed frame opens a new flow, so TIME-WAIT flows pile up to that bound."""
        stack = self.stack
        flow = self._flow()
        if flow is None:
            return
        stack.tcp_host_eof(flow.flow_id, self.now)
        self._flush(0)
        conn = flow.conn
        fin = Guest(self.config, vnet=True, iss=0, now=self.now, sport=flow.guest_port,
                    dport=flow.host_port, dst=flow.host_ip)
        stack.receive_frame(fin.segment_frame(conn.rcv_nxt, conn.snd_nxt, 0x11, 65535, b"", b""),
                            self.now)
        self.guest = None
        self._flush(0)
        if stack.time_wait:
            self.flow_id = None

    def _flush(self, ctl: int) -> None:
        stack = self.stack
        for _ in range(16):
            frames = stack.frames_to_send(self.now)
            for f in frames:
                if type(f) is tuple:
                    assert all(isinstance(p, (bytes, bytearray, memoryview)) for p in f)
                    n = sum(len(p) for p in f)
                else:
                    assert type(f) is bytes
                    n = len(f)
                assert 12 + 14 + 20 <= n <= GSO_FRAME_MAX or (n == 12 + 14 + 28), n
                if self.guest is not None:
                    self.guest.receive(f, self.now)
            busy = bool(frames)
            while (ev := stack.next_event()) is not None:
                busy = True
                t = type(ev)
                if t is st.TcpConnectRequested:
                    choice = (ctl + ev.flow_id) % 4
                    if choice == 0:
                        stack.tcp_host_connected(ev.flow_id, self.now)
                    elif choice == 1:
                        stack.tcp_host_connect_failed(ev.flow_id, st.ECONNREFUSED, self.now)
                    elif choice == 2:
                        stack.tcp_host_connect_failed(ev.flow_id, st.EHOSTUNREACH, self.now)
                    # 3: left pending (half-open)
                elif t is st.TcpDataReceived and ev.flow_id == self.flow_id and ctl & 0x40:
                    stack.tcp_host_data(ev.flow_id, b"r" * min(len(ev.data), 3000), self.now)
                elif t is st.TcpEofReceived and ctl & 0x20:
                    stack.tcp_host_eof(ev.flow_id, self.now)
            if not busy:
                break
        if self.guest is not None:
            # the simulated guest keeps talking on its flow (ACKs, window updates)
            for f in self.guest.frames(self.now):
                stack.receive_frame(f, self.now)

    def _check(self) -> None:
        stack = self.stack
        limits = self.config.limits
        tw = stack.time_wait
        assert len(stack.flows()) - tw <= limits.max_tcp_flows, (len(stack.flows()), tw)
        assert tw <= limits.max_time_wait and tw == sum(
            1 for f in stack.flows() if f.conn.state is TcpState.TIME_WAIT), tw
        assert 0 <= stack.half_open <= limits.max_half_open, stack.half_open
        assert len(stack.neighbours.entries) <= limits.max_neighbours
        counters = stack.counters
        last = self.last_counters
        for k, v in last.items():
            assert counters.get(k, 0) >= v, f"counter {k} went from {v} to {counters.get(k, 0)}"
        self.last_counters = dict(counters)


def stack_corpus() -> list[bytes]:
    """Captured frames, each as plain (0x00) and aimed at the flow (two control bytes)."""
    out = []
    for frame in corpus("stack"):
        out += [b"\x00" + frame, b"\x01" + frame, b"\x83" + frame]
    return out


def stack6_corpus() -> list[bytes]:
    """The captured IPv6 packets (tests/fuzz/corpus/ipv6, icmpv6) as frames from the guest to
    the gateway, through the whole Stack (control byte 0x00: not aimed at the IPv4 flow; the
    mutated control byte aims some at it, which is fuzz too)."""
    gw_mac = NetConfig().gateway_mac
    head = bytes([1]) + bytes(11) + gw_mac + bytes.fromhex("020000000064") + b"\x86\xdd"
    return [b"\x00" + head + packet for name in ("ipv6", "icmpv6") for packet in corpus(name)]


# ------------------------------------------------------------------ DNS through the stack

def _dns_name(name: str) -> bytes:
    return b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\x00"


def dns_corpus() -> list[bytes]:
    """Well-formed DNS messages (built here, byte for byte as dig sends and servers answer):
    control byte 0x00 = a query from the guest, 0x01 = an answer from the upstream."""
    out = []
    for qid, name, qtype in ((0x1a2b, "a.test", 1), (0x3c4d, "a.test", 28), (0x5e6f, "txt.test", 16),
                             (0x0101, "big.test", 1)):
        q = struct.pack("!HHHHHH", qid, 0x0120, 1, 0, 0, 1) + _dns_name(name) + struct.pack("!HH", qtype, 1)
        q += b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x00"          # EDNS0 OPT, as dig adds
        out.append(b"\x00" + q)
        rdata = {1: bytes([192, 0, 2, 10]), 28: bytes(15) + b"\x10", 16: b"\x0chello slirpy"}[qtype]
        a = (struct.pack("!HHHHHH", qid, 0x8580, 1, 1, 0, 0) + _dns_name(name) + struct.pack("!HH", qtype, 1)
             + b"\xc0\x0c" + struct.pack("!HHIH", qtype, 1, 60, len(rdata)) + rdata)
        out.append(b"\x01" + a)
    return out


class DnsHarness:
    """DNS to the forwarder at network+3 through a real `Stack`. Input: a control byte and a
    DNS message. Even control byte: the message is a query the guest sends from a port chosen
    by the byte; it must either become a DNS flow datagram with exactly these bytes, or be
    counted as garbage. Odd: the message is the upstream's answer on an open DNS flow; it must
    reach the guest as one UDP datagram from network+3:53 with exactly these bytes (or be
    counted as too big)."""

    def __init__(self, seed: int = 0):
        self.stack = st.Stack(NetConfig(mtu=1500), vnet_hdr=False, offload=False, rng=random.Random(seed))
        self.now = 0.0
        self.dns = NetConfig().dns.packed
        self.flows: dict[int, int] = {}         # guest port -> flow id

    def _guest_frame(self, sport: int, payload: bytes) -> bytes:
        from slirpy.tcpip.wire.ipv4 import PROTO_UDP, build_header
        from slirpy.tcpip.wire.udp import build_datagram
        udp = build_datagram(A, self.dns, sport, 53, payload)
        ip = build_header(A, self.dns, PROTO_UDP, len(udp))
        return (NetConfig().gateway_mac + b"\x02\x00\x00\x00\x00\x64" + b"\x08\x00") + ip + udp

    def _events(self) -> list:
        evs = []
        while (ev := self.stack.next_event()) is not None:
            evs.append(ev)
        return evs

    def __call__(self, data: bytes) -> None:
        if not data:
            return
        s = self.stack
        c = s.counters
        self.now += 0.01
        ctl, msg = data[0], data[1:]
        sport = 1024 + (ctl >> 1) * 7
        if ctl & 1 == 0 or sport not in self.flows:
            garbage = c["dns.rx.drop.garbage"]
            s.receive_frame(self._guest_frame(sport, msg), self.now)
            s.frames_to_send(self.now)
            evs = self._events()
            got = [bytes(e.data) for e in evs if isinstance(e, st.UdpDatagramReceived)]
            for e in evs:
                if isinstance(e, st.UdpFlowOpened):
                    assert e.dns and e.port == 53
                    self.flows[sport] = e.flow_id
            if got:
                assert got == [msg]
            else:
                assert c["dns.rx.drop.garbage"] == garbage + 1 or len(msg) > 1472 - 8
            if ctl & 1 == 0:
                return
            msg = msg[::-1]                     # then answer with something else
        fid = self.flows.get(sport)
        if fid is None:
            return
        s.udp_host_datagram(fid, msg, self.now)
        frames = [f if isinstance(f, bytes) else b"".join(bytes(p) for p in f)
                  for f in s.frames_to_send(self.now)]
        self._events()
        if not frames:
            assert len(msg) > 1500 - 28, len(msg)
            return
        [frame] = frames
        ip = Ipv4Header.parse(memoryview(frame)[14:], verify_checksum=True)
        assert ip.src == self.dns and ip.dst == A
        udp = memoryview(frame)[14 + ip.header_len:14 + ip.total_length]
        h = UdpHeader.parse(udp, ip.src, ip.dst, verify_checksum=True)
        assert (h.src_port, h.dst_port) == (53, sport)
        assert bytes(udp[8:h.length]) == msg


HARNESSES = {
    "virtio": (fuzz_virtio, lambda: corpus("virtio")),
    "eth_arp": (fuzz_eth_arp, lambda: corpus("eth_arp")),
    "ipv4": (fuzz_ipv4, lambda: corpus("ipv4")),
    "icmp": (fuzz_icmp, lambda: corpus("icmp")),
    "udp": (fuzz_udp, lambda: corpus("udp")),
    "tcp": (fuzz_tcp, lambda: corpus("tcp")),
    "ipv6": (fuzz_ipv6, lambda: corpus("ipv6")),
    "icmpv6": (fuzz_icmpv6, lambda: corpus("icmpv6")),
    "ndp": (fuzz_ndp, lambda: corpus("ndp")),
    "dhcp": (fuzz_dhcp, lambda: corpus("dhcp")),
    "dns_names": (fuzz_dns_names, dns_names_corpus),
    "stack": (None, stack_corpus),          # target built per run: StackHarness(seed)
    "stack6": (None, stack6_corpus),        # the same StackHarness, fed IPv6 frames
    "dns": (None, dns_corpus),              # target built per run: DnsHarness(seed)
}


def make_target(name: str, seed: int = 0):
    fn, _ = HARNESSES[name]
    if fn is None:
        return DnsHarness(seed) if name == "dns" else StackHarness(seed)   # stack, stack6
    return fn
