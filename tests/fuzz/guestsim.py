"""A simulated guest for in-process tests: one `TcpConnection` whose segments travel as real frames.

The guest builds what its kernel would put on tap0 (virtio header when the stack uses one,
Ethernet, IPv4, TCP with a full checksum) from the tuples of ``segments_to_send``, and parses
the stack's frames back (checksums verified unless the frame is marked NEEDS_CSUM, exactly as
a kernel would). `Transfer` drives a `Stack` (through a link filter such as `ImpairedLink`, or none) and that guest with
simulated time, playing the runtime's part for the host side, until a byte-exact exchange in
both directions has completed and both ends have closed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from slirpy.config import NetConfig
from slirpy.tcpip import stack as st
from slirpy.tcpip.checksum import finish, pseudo_header_sum, sum16
from slirpy.tcpip.errors import MalformedPacket
from slirpy.tcpip.wire.ethernet import ETH_HDR, ETH_HLEN, ETHERTYPE_IPV4
from slirpy.tcpip.wire.ipv4 import PROTO_TCP, Ipv4Header
from slirpy.tcpip.wire.ipv4 import build_header as build_ipv4_header
from slirpy.tcpip.wire.tcp import TcpSegment, build_header as build_tcp_header
from slirpy.tcpip.tcp.connection import TcpConnection
from slirpy.tcpip.tcp.events import Closed, DataReceived, EofReceived, Reset
from slirpy.tcpip.tcp.params import TcpParams
from slirpy.tcpip.tcp.state import TcpState
from slirpy.tcpip.wire.virtio import F_NEEDS_CSUM, VNET_HDR_LEN

GUEST_MAC = bytes.fromhex("020000000064")
GUEST_IP = bytes((10, 0, 2, 100))
HOST_IP = bytes((203, 0, 113, 1))
GUEST_PORT = 40000
HOST_PORT = 80


class Pattern:
    """A deterministic byte stream of `size` bytes, generated and checked piecewise, so that a
    GiB transfer needs no GiB buffers: a random block whose length (1 MiB + 4093, prime to any
    segment size) repeats."""

    PERIOD = (1 << 20) + 4093

    def __init__(self, size: int, seed: int):
        self.size = size
        block = random.Random(seed).randbytes(min(size, self.PERIOD))
        self._period = max(len(block), 1)
        self._twice = block + block

    def __len__(self) -> int:
        return self.size

    def slice(self, off: int, n: int) -> bytes:
        n = min(n, self.size - off, self._period)
        start = off % self._period
        return self._twice[start:start + n]

    def matches(self, off: int, data) -> bool:
        mv = memoryview(data)
        while len(mv):
            want = self.slice(off, len(mv))
            if not want or mv[:len(want)] != want:
                return False
            off += len(want)
            mv = mv[len(want):]
        return True


def flat(frame) -> bytes:
    return frame if type(frame) is bytes else b"".join(bytes(p) for p in frame)


class Guest:
    """The guest end of one TCP flow, speaking frames."""

    def __init__(self, config: NetConfig, *, vnet: bool, iss: int, now: float,
                 rcv_buf: int = 4 << 20, sport: int = GUEST_PORT, dport: int = HOST_PORT,
                 dst: bytes = HOST_IP):
        self.vnet = vnet
        self.sport = sport
        self.dport = dport
        self.dst = dst
        self.gw_mac = config.gateway_mac
        self.conn = TcpConnection.active(iss, now, TcpParams(mss=config.mtu - 40, rcv_buf=rcv_buf))
        self.drops: dict[str, int] = {}
        self.rx_frames = 0

    def segment_frame(self, seq: int, ack: int, flags: int, window: int, options: bytes,
                      payload: bytes) -> bytes:
        payload = bytes(payload)                 # a view of the send buffer, or a Gather
        tcp = build_tcp_header(self.sport, self.dport, seq, ack, flags, window, options)
        tcp_len = len(tcp) + len(payload)
        s = sum16(payload, sum16(tcp, pseudo_header_sum(GUEST_IP, self.dst, PROTO_TCP, tcp_len)))
        tcp = tcp[:16] + finish(s).to_bytes(2, "big") + tcp[18:]
        ip = build_ipv4_header(GUEST_IP, self.dst, PROTO_TCP, tcp_len)
        eth = ETH_HDR.pack(self.gw_mac, GUEST_MAC, ETHERTYPE_IPV4)
        return (bytes(VNET_HDR_LEN) if self.vnet else b"") + eth + ip + tcp + payload

    def frames(self, now: float) -> list[bytes]:
        return [self.segment_frame(*t) for t in self.conn.segments_to_send(now)]

    def _drop(self, why: str) -> None:
        self.drops[why] = self.drops.get(why, 0) + 1

    def receive(self, frame, now: float) -> None:
        """A frame from the stack: verify it as the guest kernel would and feed our connection."""
        self.rx_frames += 1
        buf = memoryview(flat(frame))
        verify = True
        if self.vnet:
            verify = not buf[0] & F_NEEDS_CSUM
            buf = buf[VNET_HDR_LEN:]
        dst_mac, _src_mac, ethertype = ETH_HDR.unpack_from(buf, 0)
        if ethertype != ETHERTYPE_IPV4 or dst_mac != GUEST_MAC:
            self._drop("not_for_us")
            return
        try:
            ip = Ipv4Header.parse(buf[ETH_HLEN:])
            if ip.proto != PROTO_TCP or ip.dst != GUEST_IP:
                self._drop("not_tcp")
                return
            seg = TcpSegment.parse(buf[ETH_HLEN + ip.header_len:ETH_HLEN + ip.total_length],
                                   ip.src, ip.dst, verify_checksum=verify)
        except MalformedPacket as e:
            self._drop(e.reason)
            return
        if (seg.src_port, seg.dst_port, ip.src) != (self.dport, self.sport, self.dst):
            self._drop("other_flow")
            return
        self.conn.receive_segment(seg, now)


@dataclass
class Transfer:
    """Drive a byte-exact exchange through `stack`, its frames through `link` (the stack
    itself when None, or a link filter around it such as an `ImpairedLink`).

    `up` goes guest -> host, `down` host -> guest; both sides shut down after sending and the
    run ends when the stack reported the flow closed and the guest connection is CLOSED.
    """

    stack: object
    guest: Guest
    up: Pattern
    down: Pattern
    link: object = None
    chunk: int = 64 * 1024
    guest_send_bound: int = 1 << 20
    step: float = 0.0002              # simulated time that passes per busy round
    max_rounds: int = 2_000_000
    time_limit: float = 3600.0
    # results
    host_received: int = 0            # bytes, each checked against `up` as it arrived
    guest_received: int = 0
    host_mismatch: int | None = None  # offset of the first chunk that differed
    guest_mismatch: int | None = None
    host_eof: bool = False
    guest_eof: bool = False
    flow_id: int | None = None
    flow_closed: bool = False
    flow_reset: bool = False
    guest_closed: bool = False
    guest_reset: str | None = None
    paused: bool = False
    host_sent: int = 0
    host_shut: bool = False
    guest_sent: int = 0
    guest_shut: bool = False
    now: float = 0.0
    rounds: int = 0

    def _host_side(self, now: float) -> bool:
        stack = self.stack
        busy = False
        while (ev := stack.next_event()) is not None:
            busy = True
            t = type(ev)
            if t is st.TcpConnectRequested:
                assert self.flow_id is None, "a second flow was opened"
                self.flow_id = ev.flow_id
                stack.tcp_host_connected(ev.flow_id, now)
            elif t is st.TcpDataReceived:
                assert not self.host_eof, "data after EOF"
                if self.host_mismatch is None and not self.up.matches(self.host_received, ev.data):
                    self.host_mismatch = self.host_received
                self.host_received += len(ev.data)
            elif t is st.TcpEofReceived:
                self.host_eof = True
            elif t is st.TcpHostReadPaused:
                self.paused = ev.paused
            elif t is st.TcpFlowClosed:
                self.flow_closed = True
                self.flow_reset = ev.reset
        fid = self.flow_id
        if fid is not None and not self.flow_closed and not self.paused:
            if self.host_sent < len(self.down):
                n = min(self.chunk, len(self.down) - self.host_sent)
                stack.tcp_host_data(fid, self.down.slice(self.host_sent, n), now)
                self.host_sent += n
                busy = True
            elif not self.host_shut:
                stack.tcp_host_eof(fid, now)
                self.host_shut = True
                busy = True
        return busy

    def _guest_side(self, now: float) -> bool:
        conn = self.guest.conn
        busy = False
        while (ev := conn.next_event()) is not None:
            busy = True
            t = type(ev)
            if t is DataReceived:
                assert not self.guest_eof, "guest: data after EOF"
                if self.guest_mismatch is None and not self.down.matches(self.guest_received, ev.data):
                    self.guest_mismatch = self.guest_received
                self.guest_received += len(ev.data)
            elif t is EofReceived:
                self.guest_eof = True
            elif t is Reset:
                self.guest_reset = ev.reason
            elif t is Closed:
                self.guest_closed = True
        if conn.state in (TcpState.ESTABLISHED, TcpState.CLOSE_WAIT):
            while self.guest_sent < len(self.up) and conn.send_buffered < self.guest_send_bound:
                n = min(self.chunk, len(self.up) - self.guest_sent)
                conn.send(self.up.slice(self.guest_sent, n))
                self.guest_sent += n
                busy = True
            if self.guest_sent == len(self.up) and not self.guest_shut:
                conn.shutdown_write(now)
                self.guest_shut = True
                busy = True
        return busy

    def _round(self, now: float) -> bool:
        """One runtime-like flush: guest frames in, stack frames out, events both sides."""
        stack = self.link or self.stack
        guest = self.guest
        busy = False
        for f in guest.frames(now):
            stack.receive_frame(f, now)
            busy = True
        for _ in range(64):
            frames = stack.frames_to_send(now)
            for f in frames:
                guest.receive(f, now)
            host_busy = self._host_side(now)
            if not frames and not host_busy:
                break
            busy = True
        busy |= self._guest_side(now)
        return busy

    def done(self) -> bool:
        return (self.flow_closed or self.flow_reset) and (self.guest_closed or self.guest_reset is not None)

    def run(self) -> "Transfer":
        link = self.link or self.stack
        stack = self.stack
        conn = self.guest.conn
        now = self.now
        while not self.done():
            self.rounds += 1
            assert self.rounds < self.max_rounds, "too many rounds"
            assert now < self.time_limit, f"no progress by t={now:.1f}: {conn!r}"
            d = link.next_deadline()
            if d is not None and d <= now:
                stack.handle_timer(now)
            t = conn.get_timer()
            if t is not None and t <= now:
                conn.handle_timer(now)
            if self._round(now):
                now += self.step
                continue
            nexts = [x for x in (link.next_deadline(), conn.get_timer()) if x is not None]
            if not nexts:
                break
            now = max(now + self.step, min(nexts))
        self.now = now
        return self

    def check(self) -> None:
        """Byte-exact both ways, clean close on both ends."""
        assert not self.flow_reset and self.guest_reset is None, \
            f"reset: stack={self.flow_reset} guest={self.guest_reset}"
        assert self.flow_closed and self.guest_closed
        assert self.host_eof and self.guest_eof
        assert self.host_received == len(self.up)
        assert self.host_mismatch is None, f"guest -> host bytes differ at {self.host_mismatch}"
        assert self.guest_received == len(self.down)
        assert self.guest_mismatch is None, f"host -> guest bytes differ at {self.guest_mismatch}"


def make_transfer(link_factory, size_up: int, size_down: int, *, seed: int, mtu: int = 1500,
                  vnet: bool = True, offload: bool = True, guest_iss: int | None = None,
                  **kw) -> Transfer:
    """A `Stack`, its link `link_factory(stack)` (e.g. lambda s: ImpairedLink(s, ...)), a
    guest, and `Pattern` payloads of the given sizes from `seed`."""
    rng = random.Random(seed)
    config = NetConfig(mtu=mtu)
    stack = st.Stack(config, vnet_hdr=vnet, offload=offload, rng=random.Random(rng.getrandbits(32)))
    link = link_factory(stack)
    iss = rng.getrandbits(32) if guest_iss is None else guest_iss
    guest = Guest(config, vnet=vnet, iss=iss, now=0.0)
    return Transfer(stack, guest, Pattern(size_up, rng.getrandbits(32)),
                    Pattern(size_down, rng.getrandbits(32)), link=link, **kw)
