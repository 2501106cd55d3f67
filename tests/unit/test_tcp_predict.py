"""Header prediction (tcp/predict.py, iface/fastpath.py) against the general receive path.

Every test drives two stacks made alike with the same inputs: `fast` as the Stack wires it
(the fast path first), `slow` with the general path only (`Link.receive_frame`). After every
input both must have emitted the same frames and events and hold the same counters, flow
records and connection state, field by field. A spy on the fast path's fallback counts which
frames the fast path handed on: the qualifying ones must not be, the others must all be.
"""

from __future__ import annotations

import random
import struct
from typing import Any

import pytest

from slirpy.config import Limits, NetConfig
from slirpy.tcpip import stack as st
from slirpy.tcpip.checksum import finish, pseudo_header_sum, sum16
from slirpy.tcpip.tcp.connection import TcpConnection
from slirpy.tcpip.wire.arp import OP_REQUEST, ArpPacket
from slirpy.tcpip.wire.ipv4 import build_header as ip_header
from slirpy.tcpip.wire.ipv6 import build_header as ip6_header
from slirpy.tcpip.wire.tcp import (
    ACK, CWR, ECE, FIN, PSH, RST, SYN, TS_OPTION_LEAD, URG, TcpOptions, build_header, ts_option,
)
from slirpy.tcpip.wire.virtio import F_DATA_VALID, F_NEEDS_CSUM, VNET_HDR_LEN

GUEST = bytes([10, 0, 2, 100])
REMOTE = bytes([203, 0, 113, 1])
GUEST6 = bytes.fromhex("fd000000000000000000000000000100")       # fd00::100
REMOTE6 = bytes.fromhex("20010db8000000000000000000000001")      # 2001:db8::1
GUEST_MAC = bytes.fromhex("020000000064")
GW_MAC = bytes.fromhex("52550a000202")


def _attrs(obj: Any) -> tuple[str, ...]:
    cls = type(obj)
    names: list[str] = []
    for k in cls.__mro__:
        names += getattr(k, "__slots__", ()) or getattr(k, "__mypyc_attrs__", ())
    return tuple(n for n in names if not n.startswith("__"))


def snap(value: Any, depth: int = 0) -> Any:
    """A comparable copy of a state record (slots followed, views as bytes)."""
    if value is None or isinstance(value, (bool, int, float, str, bytes)):
        return value
    if isinstance(value, memoryview):
        return bytes(value)
    if isinstance(value, (list, tuple)):
        return [snap(v, depth + 1) for v in value]
    if isinstance(value, dict):
        return {k: snap(v, depth + 1) for k, v in value.items()}
    names = _attrs(value)
    if not names or depth > 4:
        return repr(value) if type(value).__module__.startswith("slirpy.tcpip.tcp.state") \
            else type(value).__name__
    return (type(value).__name__,
            {n: snap(getattr(value, n), depth + 1) for n in names if n != "params"})


def flat(frame: Any) -> bytes:
    return frame if isinstance(frame, bytes) else b"".join(bytes(p) for p in frame)


def spy_on_general_path(pair: Any) -> None:
    """`pair.slow` gets the general path only; what `pair.fast`'s fast path hands on to it is
    counted in `pair.general`."""
    pair.slow.receive_frame = pair.slow.link.receive_frame
    pair.general = 0
    inner = pair.fast.fastpath._general

    def spy(frame: Any, now: float) -> None:
        pair.general += 1
        inner(frame, now)

    pair.fast.fastpath._general = spy


class Pair:
    """The two stacks, the guest's side of one flow, and the comparison after each input."""

    def __init__(self, *, vnet: bool = True, offload: bool = True, mtu: int = 65520,
                 flags: int = F_NEEDS_CSUM, src_ip: bytes | None = None,
                 routed: tuple[str, ...] = (), v6: bool = False, ts: bool = False,
                 **limits: Any) -> None:
        cfg = NetConfig(mtu=mtu, limits=Limits(**limits))
        self.fast = st.Stack(cfg, vnet_hdr=vnet, offload=offload, rng=random.Random(1))
        self.slow = st.Stack(cfg, vnet_hdr=vnet, offload=offload, rng=random.Random(1))
        for s in (self.fast, self.slow):
            s.set_routed(routed)
        self.v6 = v6
        self.src_ip = src_ip if src_ip is not None else GUEST6 if v6 else GUEST
        self.remote = REMOTE6 if v6 else REMOTE
        spy_on_general_path(self)
        self.vnet = vnet
        self.vflags = flags
        self.sport = 40000
        self.seq = 1000            # the guest's next sequence number
        self.ack = 0               # what the guest acknowledges
        self.snd_top = 0           # the end of what we sent the guest
        self.seen_syn_ack = False
        self.now = 0.0
        self.flow_id = 0
        self.ts = ts               # the guest offers timestamps and sends them on every segment
        self.tsecr = 0             # the last TSval we sent (what the guest echoes)

    # -------------------------------------------------------------- inputs

    def frame(self, flags: int, payload: bytes = b"", *, seq: int | None = None,
              ack: int | None = None, window: int = 65535, opts: bytes | None = None, urgent: int = 0,
              sport: int | None = None, src_mac: bytes = GUEST_MAC, ip: bytes | None = None,
              tcp_csum: int | None = None) -> bytes:
        s = self.seq if seq is None else seq
        a = self.ack if ack is None else ack
        if opts is None:
            opts = ts_option(self.tsval(), self.tsecr) if self.ts else b""
        tcp = bytearray(build_header(self.sport if sport is None else sport, 80, s, a, flags,
                                     window, opts, 0, urgent) + payload)
        csum = finish(sum16(tcp, pseudo_header_sum(self.src_ip, self.remote, 6, len(tcp))))
        struct.pack_into("!H", tcp, 16, csum if tcp_csum is None else tcp_csum)
        vnet = bytes([self.vflags]) + bytes(VNET_HDR_LEN - 1) if self.vnet else b""
        if self.v6:
            iph = ip if ip is not None else ip6_header(self.src_ip, self.remote, 6, len(tcp))
            return vnet + GW_MAC + src_mac + b"\x86\xdd" + iph + bytes(tcp)
        iph = ip if ip is not None else ip_header(self.src_ip, self.remote, 6, len(tcp))
        return vnet + GW_MAC + src_mac + b"\x08\x00" + iph + bytes(tcp)

    def tsval(self) -> int:
        """The guest's timestamp clock (ms, its own origin): what its next segment carries."""
        return (int(self.now * 1000) + 50_000) & 0xFFFFFFFF

    def send(self, flags: int, payload: bytes = b"", **kw: Any) -> None:
        """A guest segment at its next sequence number (the guest's seq advances)."""
        self.feed(self.frame(flags, payload, **kw))
        if "seq" not in kw:
            self.seq = (self.seq + len(payload) + (1 if flags & (SYN | FIN) else 0)) & 0xFFFFFFFF

    def feed(self, raw: bytes) -> None:
        self.now += 0.0001
        self.fast.receive_frame(raw, self.now)
        self.slow.receive_frame(raw, self.now)
        self.check()

    def host(self, data: bytes) -> None:
        self.now += 0.0001
        assert self.fast.tcp_host_data(self.flow_id, data, self.now) == \
            self.slow.tcp_host_data(self.flow_id, data, self.now)
        self.check()

    def host_eof(self) -> None:
        self.fast.tcp_host_eof(self.flow_id, self.now)
        self.slow.tcp_host_eof(self.flow_id, self.now)
        self.check()

    def timer(self, at: float) -> None:
        self.now = at
        self.fast.handle_timer(at)
        self.slow.handle_timer(at)
        self.check()

    # -------------------------------------------------------------- the comparison

    def check(self) -> list[bytes]:
        """Flush both; everything must be equal. Returns the frames (and learns our seq)."""
        out = [flat(f) for f in self.fast.frames_to_send(self.now)]
        assert out == [flat(f) for f in self.slow.frames_to_send(self.now)]
        evs = []
        while (ev := self.fast.next_event()) is not None:
            evs.append(ev)
        evs_slow = []
        while (ev := self.slow.next_event()) is not None:
            evs_slow.append(snap(ev))
        assert [snap(e) for e in evs] == evs_slow
        assert dict(self.fast.counters) == dict(self.slow.counters)
        assert self.fast.next_deadline() == self.slow.next_deadline()
        assert [snap(f) for f in self.fast.flows()] == [snap(f) for f in self.slow.flows()]
        for f in out:
            eth = VNET_HDR_LEN if self.vnet else 0
            if f[eth + 12:eth + 14] == b"\x08\x00" and f[eth + 23] == 6:
                tcp = f[eth + 14 + 20:]
            elif f[eth + 12:eth + 14] == b"\x86\xdd" and f[eth + 20] == 6:
                tcp = f[eth + 14 + 40:]
            else:
                continue                        # not TCP (ARP, NDP, a router advertisement)
            seq = struct.unpack_from("!I", tcp, 4)[0]
            if tcp[12] >> 4 == 8 and struct.unpack_from("!I", tcp, 20)[0] == TS_OPTION_LEAD:
                self.tsecr = struct.unpack_from("!I", tcp, 24)[0]
            n = len(tcp) - (tcp[12] >> 4) * 4 + (1 if tcp[13] & (SYN | FIN) else 0)
            end = (seq + n) & 0xFFFFFFFF
            if not self.seen_syn_ack or ((end - self.snd_top) & 0xFFFFFFFF) < 1 << 31:
                self.snd_top = end              # (the first: whatever half the ISS is in)
                self.seen_syn_ack = True
        self.events = evs
        self.frames = out
        return out

    def establish(self) -> None:
        opts = TcpOptions(mss=1460, wscale=7, sack_permitted=True,
                          timestamp=(self.tsval(), 0) if self.ts else None).pack()
        self.send(SYN, opts=opts, window=65535)
        [ev] = self.events
        self.flow_id = fid = ev.flow_id
        self.fast.tcp_host_connected(fid, self.now)
        self.slow.tcp_host_connected(fid, self.now)
        self.check()
        self.ack = self.snd_top
        self.send(ACK)
        assert self.general == 2            # SYN (and its new MAC), the handshake's ACK
        assert self.conn()._ts_ok == self.ts
        self.general = 0

    def conn(self) -> TcpConnection:
        return self.fast.flows()[0].conn

    def ack_all(self) -> None:
        """The guest acknowledges what we sent, at most 65,000 bytes per ACK."""
        for _ in range(10):
            if self.ack == self.snd_top:
                break
            self.ack = (self.ack + 65000) & 0xFFFFFFFF \
                if ((self.snd_top - self.ack) & 0xFFFFFFFF) > 65000 else self.snd_top
            self.send(ACK)

    def round_trip(self, request: bytes = b"q" * 64, answer: bytes = b"a" * 64) -> list[bytes]:
        """One request and its answer; returns the request as the host side got it."""
        self.send(ACK | PSH, request)
        got = [bytes(e.data) for e in self.events if type(e) is st.TcpDataReceived]
        self.host(answer)
        self.ack = self.snd_top
        return got


def _established(**kw: Any) -> Pair:
    p = Pair(**kw)
    p.establish()
    for _ in range(3):
        p.round_trip()
    assert p.general == 0
    return p


# ------------------------------------------------------------------ qualifying segments

@pytest.mark.parametrize("ts", [False, True], ids=["plain", "timestamps"])
@pytest.mark.parametrize("vflags", [F_NEEDS_CSUM, F_DATA_VALID, 0])
def test_request_response_takes_the_fast_path_with_identical_results(vflags, ts):
    p = Pair(flags=vflags, ts=ts)
    p.establish()
    for i in range(20):
        request = b"r%02d" % i * 20
        assert p.round_trip(request, b"A" * (i * 37 + 1)) == [request]
    assert p.general == 0
    assert p.fast.counters["rx.frames"] == 2 + 20


@pytest.mark.parametrize("ts", [False, True], ids=["plain", "timestamps"])
def test_bulk_upload_and_download_take_the_fast_path(ts):
    p = _established(ts=ts)
    for i in range(30):                       # upload: in-order data, no PSH, nothing to ACK
        p.send(ACK, bytes([i]) * 1400)
    p.host(random.Random(5).randbytes(300_000))     # download: GSO frames, then the ACKs
    p.ack_all()
    assert p.ack == p.snd_top
    assert p.general == 0


def test_a_member_behind_the_guest_takes_the_fast_path():
    """A source in a routed prefix (a network's member, routed by the holder through the
    guest's MAC) has no neighbour entry: the general path takes it without learning a MAC, so
    the fast path takes its established flow too; the same source without the prefix is
    refused by both, and a source on the sandbox network with an unknown MAC still goes to
    the general path (which learns it)."""
    member = bytes([10, 89, 0, 5])
    p = Pair(src_ip=member, routed=("10.89.0.0/24",))
    # the guest (the holder's side) asks for the gateway first: its MAC is where members live
    arp = ArpPacket(OP_REQUEST, GUEST_MAC, GUEST, bytes(6), bytes([10, 0, 2, 2])).pack()
    p.feed(bytes(VNET_HDR_LEN) + b"\xff" * 6 + GUEST_MAC + b"\x08\x06" + arp)
    p.general = 0
    p.establish()
    assert member not in p.fast.neighbours.entries
    for _ in range(5):
        assert p.round_trip() == [b"q" * 64]
    assert p.general == 0
    p.fast.set_routed(())
    p.slow.set_routed(())
    p.send(ACK | PSH, b"q" * 64)
    assert p.general == 1 and p.fast.counters["ipv4.rx.drop.bad_src"] == 1


def test_without_offloads_checksums_are_verified_on_the_fast_path():
    p = _established(offload=False, mtu=1500, flags=0)
    p.host(b"x" * 5000)                      # four MSS-sized segments
    p.ack = p.snd_top
    p.send(ACK | PSH, b"req")
    assert p.general == 0
    before = p.fast.counters["rx.drop.tcp.bad_checksum"]
    p.feed(p.frame(ACK | PSH, b"bad", tcp_csum=0x1234))
    assert p.general == 1 and p.fast.counters["rx.drop.tcp.bad_checksum"] == before + 1


def test_a_stack_without_virtio_headers_uses_the_general_path():
    p = Pair(vnet=False, offload=False, mtu=1500)
    p.establish()
    p.general = 0
    p.round_trip()
    assert p.general == 1


# ------------------------------------------------------------------ segments that do not qualify

def _ooo(p: Pair) -> None:
    p.send(ACK | PSH, b"late", seq=(p.seq + 100) & 0xFFFFFFFF)


def _retransmitted(p: Pair) -> None:
    p.send(ACK | PSH, b"q" * 64, seq=(p.seq - 64) & 0xFFFFFFFF)


def _caught_up(p: Pair) -> None:
    """The guest acknowledges all we sent (a predicted pure ACK)."""
    p.ack = p.snd_top
    p.send(ACK)
    assert p.conn().snd_una == p.snd_top
    p.general = 0


def _dup_ack(p: Pair) -> None:
    _caught_up(p)
    p.host(b"z" * 100)
    p.send(ACK)


def _window_update(p: Pair) -> None:
    _caught_up(p)
    p.send(ACK, window=40000)


def _ack_unsent(p: Pair) -> None:
    p.send(ACK | PSH, b"x", ack=(p.snd_top + 10) & 0xFFFFFFFF)


def _ack_old(p: Pair) -> None:
    p.send(ACK | PSH, b"x", ack=(p.conn().snd_una - 10) & 0xFFFFFFFF)


def _beyond_window(p: Pair) -> None:
    p.fast.tcp_host_write_paused(p.flow_id, True, p.now)
    p.slow.tcp_host_write_paused(p.flow_id, True, p.now)
    p.check()
    while p.conn().rcv_wnd >= 60000:
        p.send(ACK, b"w" * 60000)               # predicted: within the frozen window
    assert p.general == 0
    p.send(ACK, b"w" * (p.conn().rcv_wnd + 1))


def _bad_ip_checksum(p: Pair) -> None:
    ip = bytearray(ip_header(GUEST, REMOTE, 6, 20 + 3))
    ip[10] ^= 0xFF
    p.feed(p.frame(ACK | PSH, b"abc", ip=bytes(ip)))


def _ip_options(p: Pair) -> None:
    body = 24 + 20 + 3
    ip = bytearray(ip_header(GUEST, REMOTE, 6, 0))
    ip[0] = 0x46
    struct.pack_into("!H", ip, 2, body)
    ip += b"\x01\x01\x01\x00"
    ip[10:12] = b"\0\0"
    struct.pack_into("!H", ip, 10, finish(sum16(ip)))
    p.feed(p.frame(ACK | PSH, b"abc", ip=bytes(ip)))


def _fragment(p: Pair) -> None:
    ip = bytearray(ip_header(GUEST, REMOTE, 6, 23, df=False))
    ip[6] |= 0x20
    ip[10:12] = b"\0\0"
    struct.pack_into("!H", ip, 10, finish(sum16(ip)))
    p.feed(p.frame(ACK | PSH, b"abc", ip=bytes(ip)))


def _new_mac(p: Pair) -> None:
    p.send(ACK | PSH, b"moved", src_mac=bytes.fromhex("020000000099"))


def _no_flow(p: Pair) -> None:
    p.send(ACK | PSH, b"stray", sport=40001)


def _in_recovery(p: Pair) -> None:
    _caught_up(p)
    for i in range(4):                          # four separate segments in flight
        p.host(bytes([i]) * 1000)
    first_end = (p.ack + 1000) & 0xFFFFFFFF
    for _ in range(3):
        p.send(ACK)                             # three duplicate ACKs: fast retransmit
    assert p.conn()._in_recovery
    p.general = 0
    p.send(ACK, ack=first_end)                  # a partial ACK: recovery goes on


def _after_rto(p: Pair) -> None:
    p.host(b"r" * 500)
    p.timer(p.fast.next_deadline() + 0.5)       # the delayed ACK, then the RTO
    p.timer(p.fast.next_deadline())
    assert p.conn()._retries
    p.general = 0
    p.ack = p.snd_top
    p.send(ACK)


def _persist(p: Pair) -> None:
    p.host(b"s" * 100)
    p.ack = p.snd_top
    p.send(ACK, window=0)                       # all acknowledged, the window shut (fast)
    p.host(b"t" * 100)                          # waits: the persist timer
    assert p.conn()._persist_at is not None
    p.general = 0
    p.send(ACK, window=100)


def _fin_queued(p: Pair) -> None:
    p.host_eof()
    p.general = 0
    p.send(ACK | PSH, b"more")


def _after_guest_fin(p: Pair) -> None:
    p.send(ACK | FIN)
    p.general = 0
    p.send(ACK)


# Options of a 32-byte TCP header the fast path leaves alone: one SACK block; the timestamps
# option not in Linux's NOP, NOP, timestamps layout.
_SACK_OPTION = bytes((1, 1, 5, 10)) + struct.pack("!II", 1, 2)
_TS_UNALIGNED = bytes((8, 10)) + struct.pack("!II", 1, 2) + bytes((1, 1))


NOT_PREDICTED = {
    "fin": lambda p: p.send(ACK | FIN, b"bye"),
    "rst": lambda p: p.send(RST | ACK),
    "syn": lambda p: p.send(SYN | ACK),
    "urg": lambda p: p.send(ACK | URG | PSH, b"!", urgent=1),
    "ece": lambda p: p.send(ACK | ECE, b"e"),
    "cwr": lambda p: p.send(ACK | CWR, b"c"),
    "bare_psh": lambda p: p.send(PSH, b"p"),
    "options_not_timestamps": lambda p: p.send(ACK | PSH, b"ts", opts=_SACK_OPTION),
    "timestamps_unaligned": lambda p: p.send(ACK | PSH, b"ts", opts=_TS_UNALIGNED),
    "out_of_order": _ooo,
    "retransmission": _retransmitted,
    "dup_ack": _dup_ack,
    "window_update": _window_update,
    "ack_unsent": _ack_unsent,
    "ack_old": _ack_old,
    "beyond_window": _beyond_window,
    "bad_ip_checksum": _bad_ip_checksum,
    "ip_options": _ip_options,
    "fragment": _fragment,
    "new_mac": _new_mac,
    "no_flow": _no_flow,
    "in_recovery": _in_recovery,
    "after_rto": _after_rto,
    "persist": _persist,
    "fin_queued": _fin_queued,
    "after_guest_fin": _after_guest_fin,
}


@pytest.mark.parametrize("ts", [False, True], ids=["plain", "timestamps"])
@pytest.mark.parametrize("case", sorted(NOT_PREDICTED))
def test_segments_that_do_not_qualify_take_the_general_path(case, ts):
    p = _established(offload=case != "in_recovery", mtu=65520 if case != "in_recovery" else 1500,
                     ts=ts)
    NOT_PREDICTED[case](p)
    assert p.general == 1
    p.general = 0
    # and the flow goes on the same way on both (a predicted segment, if it still can be)
    p.ack = p.snd_top
    p.send(ACK | PSH, b"after")


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
def test_data_with_an_old_timestamp_is_dropped_by_both_paths(v6):
    """PAWS (RFC 7323 §5.3): data whose TSval is older than TS.Recent is an old duplicate;
    the general path drops and ACKs it. On a connection without timestamps the same segment
    is the next one in order, and predicted."""
    for ts in (True, False):
        p = _established(v6=v6, ts=ts)
        old = (p.conn()._ts_recent - 1000) & 0xFFFFFFFF if ts else 7
        p.send(ACK | PSH, b"old", opts=ts_option(old, p.tsecr), seq=p.seq)
        assert p.general == (1 if ts else 0)
        assert p.fast.counters["tcp.rx.drop.paws"] == (1 if ts else 0)
        assert [bytes(e.data) for e in p.events if type(e) is st.TcpDataReceived] == \
            ([] if ts else [b"old"])


def test_the_general_path_takes_over_in_flight_and_gives_back():
    """Loss recovery: segments go to the general path while it lasts, then back."""
    p = _established(offload=False, mtu=1500)
    _in_recovery(p)
    p.ack = p.snd_top
    p.general = 0
    p.send(ACK)                                 # the full ACK ends recovery (general path)
    assert p.general == 1 and not p.conn()._in_recovery
    p.round_trip()
    assert p.general == 1                       # predicted again


# ------------------------------------------------------------------ hostile input

@pytest.mark.parametrize("ts", [False, True], ids=["plain", "timestamps"])
@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
def test_mangled_frames_never_raise_and_both_paths_agree(v6, ts):
    rng = random.Random(18)
    p = _established(v6=v6, ts=ts)
    span = 100 if v6 else 80                    # the headers, and a little data
    for i in range(400):
        if i % 40 == 39:
            p = _established(flags=rng.choice((F_NEEDS_CSUM, 0)), v6=v6, ts=ts)
        raw = bytearray(p.frame(ACK | PSH, b"m" * rng.randrange(0, 80)))
        for _ in range(rng.randrange(1, 4)):
            pos = rng.randrange(0, min(len(raw), span + (12 if ts else 0)))
            raw[pos] = rng.randrange(256)
        if rng.random() < 0.2:
            raw = raw[:rng.randrange(0, len(raw))]
        p.feed(bytes(raw))


# ------------------------------------------------------------------ over IPv6 (wire/tcp6frame.py)

@pytest.mark.parametrize("ts", [False, True], ids=["plain", "timestamps"])
@pytest.mark.parametrize("vflags", [F_NEEDS_CSUM, 0])
def test_ipv6_request_response_and_bulk_take_the_fast_path(vflags, ts):
    p = Pair(v6=True, flags=vflags, ts=ts)
    p.establish()
    for i in range(10):
        request = b"s%02d" % i * 20
        assert p.round_trip(request, b"B" * (i * 41 + 1)) == [request]
    for i in range(10):
        p.send(ACK, bytes([i]) * 1400)
    p.host(random.Random(6).randbytes(200_000))
    p.ack_all()
    assert p.general == 0


def test_ipv6_a_router_advertisement_that_falls_due_goes_out_on_the_fast_path_too():
    p = Pair(v6=True)
    p.establish()
    p.round_trip()
    assert p.fast.ipv6 is not None
    p.now = p.fast.ipv6._ndp.advertise_due + 1.0
    before = p.general
    p.send(ACK | PSH, b"late")                  # check() compares both stacks' frames
    assert p.general == before
    assert [f for f in p.frames if f[VNET_HDR_LEN + 12:VNET_HDR_LEN + 14] == b"\x86\xdd"
            and f[VNET_HDR_LEN + 20] == 58 and f[VNET_HDR_LEN + 54] == 134]     # a router advertisement


def test_ipv6_a_member_behind_the_guest_takes_the_fast_path():
    member = bytes.fromhex("fd000089000000000000000000000005")   # fd00:89::5
    p = Pair(v6=True, src_ip=member, routed=("fd00:89::/64",))
    p.src_ip = GUEST6                       # the guest (the holder's side) shows itself first
    p.send(RST | ACK)
    p.src_ip = member
    p.general = 0
    p.establish()
    assert member not in p.fast.neighbours.entries
    for _ in range(3):
        p.round_trip()
    assert p.general == 0
    p.fast.set_routed(())
    p.slow.set_routed(())
    p.send(ACK | PSH, b"q" * 64)
    assert p.general == 1 and p.fast.counters["ipv6.rx.drop.bad_src"] == 1


def _ipv6_hop_by_hop(p: Pair) -> None:
    tcp = p.frame(ACK | PSH, b"abc")[VNET_HDR_LEN + 14 + 40:]
    hbh = bytes([6, 0]) + bytes([1, 4, 0, 0, 0, 0])                  # next: TCP; PadN
    ip = ip6_header(p.src_ip, p.remote, 0, len(hbh) + len(tcp))
    p.feed(bytes([p.vflags]) + bytes(VNET_HDR_LEN - 1) + GW_MAC + GUEST_MAC + b"\x86\xdd" + ip + hbh + tcp)


def _ipv6_off_network(p: Pair) -> None:
    p.feed(p.frame(ACK | PSH, b"x", ip=ip6_header(bytes.fromhex("20010db8000500000000000000000001"),
                                                   p.remote, 6, 23)))


NOT_PREDICTED_6 = {
    "fin": lambda p: p.send(ACK | FIN, b"bye"),
    "rst": lambda p: p.send(RST | ACK),
    "options_not_timestamps": lambda p: p.send(ACK | PSH, b"ts", opts=_SACK_OPTION),
    "timestamps_unaligned": lambda p: p.send(ACK | PSH, b"ts", opts=_TS_UNALIGNED),
    "out_of_order": _ooo,
    "new_mac": _new_mac,
    "no_flow": _no_flow,
    "hop_by_hop": _ipv6_hop_by_hop,
    "off_network": _ipv6_off_network,
    "bad_checksum": lambda p: p.send(ACK | PSH, b"bad", tcp_csum=0x1234),
}


@pytest.mark.parametrize("ts", [False, True], ids=["plain", "timestamps"])
@pytest.mark.parametrize("case", sorted(NOT_PREDICTED_6))
def test_ipv6_segments_that_do_not_qualify_take_the_general_path(case, ts):
    p = Pair(v6=True, flags=0 if case == "bad_checksum" else F_NEEDS_CSUM, ts=ts)
    p.establish()
    p.round_trip()
    p.general = 0
    NOT_PREDICTED_6[case](p)
    assert p.general == 1
    p.general = 0
    p.ack = p.snd_top
    p.send(ACK | PSH, b"after")

