"""Hostile frames from inside the sandbox: an AF_PACKET socket on tap0 (the guest is root of
its own user namespace, so it has CAP_NET_RAW there) writes arbitrary Ethernet frames to
slirpy, and sniffs what comes back.

Runs inside ``slirpy run`` as ``python rawframes.py '<json ops>'`` and prints one JSON line
(a list, one result per op), like util.py. Standard library only (plus util.py next to it);
frames are built with struct here so that each malformation is explicit.
"""

from __future__ import annotations

import ctypes
import fcntl
import json
import os
import random
import select
import socket
import struct
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import util  # noqa: E402  (guest side of the shared helpers)

ETH_P_ALL = 0x0003
ETH_P_IP = 0x0800
ETH_P_ARP = 0x0806
PACKET_OUTGOING = 4
IFACE = "tap0"

SYN, RST, PSH, ACK, FIN = 0x02, 0x04, 0x08, 0x10, 0x01


# --------------------------------------------------------------------------- frame builders

def csum(data: bytes) -> int:
    if len(data) & 1:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def mac_of(iface: str = IFACE) -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        ifr = fcntl.ioctl(s, 0x8927, struct.pack("16s16x", iface.encode()))   # SIOCGIFHWADDR
    return ifr[18:24]


def ip_mac(ip: str) -> bytes:
    return b"\x52\x55" + socket.inet_aton(ip)


def ipv4(src: str, dst: str, proto: int, payload: bytes, *, ihl: int = 5, total: int | None = None,
         version: int = 4, flags_frag: int = 0x4000, ttl: int = 64, bad_csum: bool = False,
         options: bytes = b"") -> bytes:
    hdr_len = 20 + len(options)
    if total is None:
        total = hdr_len + len(payload)
    hdr = struct.pack("!BBHHHBBH4s4s", (version << 4) | ihl, 0, total, 0x1234, flags_frag, ttl, proto, 0,
                      socket.inet_aton(src), socket.inet_aton(dst)) + options
    c = csum(hdr)
    if bad_csum:
        c ^= 0x5A5A
    return hdr[:10] + struct.pack("!H", c) + hdr[12:] + payload


def tcp(src: str, dst: str, sport: int, dport: int, seq: int, ack: int, flags: int, payload: bytes = b"",
        *, window: int = 65535, options: bytes = b"", doff: int | None = None, bad_csum: bool = False) -> bytes:
    if doff is None:
        doff = (20 + len(options)) // 4
    hdr = struct.pack("!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, doff << 4, flags,
                      window, 0, 0) + options
    seg = hdr + payload
    pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, 6, len(seg))
    c = csum(pseudo + seg)
    if bad_csum:
        c ^= 0x0F0F
    return seg[:16] + struct.pack("!H", c) + seg[18:]


def udp(src: str, dst: str, sport: int, dport: int, payload: bytes, *, length: int | None = None,
        bad_csum: bool = False) -> bytes:
    if length is None:
        length = 8 + len(payload)
    seg = struct.pack("!HHHH", sport, dport, length, 0) + payload
    pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, 17, len(seg))
    c = csum(pseudo + seg) or 0xFFFF
    if bad_csum:
        c ^= 0x0F0F
    return seg[:6] + struct.pack("!H", c) + seg[8:]


def icmp_echo(ident: int, seq: int, payload: bytes, *, bad_csum: bool = False) -> bytes:
    msg = struct.pack("!BBHHH", 8, 0, 0, ident, seq) + payload
    c = csum(msg)
    if bad_csum:
        c ^= 0x0F0F
    return msg[:2] + struct.pack("!H", c) + msg[4:]


def arp(op: int, sha: bytes, spa: str, tha: bytes, tpa: str, *, ptype: int = 0x0800) -> bytes:
    return struct.pack("!HHBBH6s4s6s4s", 1, ptype, 6, 4, op, sha, socket.inet_aton(spa), tha,
                       socket.inet_aton(tpa))


class Guest:
    """Addresses and a packet socket bound to tap0."""

    def __init__(self, guest: str = util.GUEST_ADDR, gateway: str = util.GATEWAY_ADDR):
        self.ip = guest
        self.gw = gateway
        self.mac = mac_of()
        self.gw_mac = ip_mac(gateway)
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        self.sock.bind((IFACE, ETH_P_ALL))
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        self.sent = 0
        self.first_match_at = 0.0           # when the last sniff() saw its first match

    def eth(self, payload: bytes, ethertype: int = ETH_P_IP, dst: bytes | None = None,
            src: bytes | None = None) -> bytes:
        return (dst or self.gw_mac) + (src or self.mac) + struct.pack("!H", ethertype) + payload

    def send(self, frame: bytes) -> None:
        for _ in range(200):
            try:
                self.sock.send(frame)
                self.sent += 1
                return
            except BlockingIOError:
                time.sleep(0.001)
            except OSError as e:
                if e.errno != 105:       # ENOBUFS: the qdisc is full; wait and retry
                    raise
                time.sleep(0.001)
        raise OSError("packet socket send kept failing")

    def sniff(self, match, duration: float, first_within: float = 0.0) -> list[tuple[int, bytes]]:
        """Frames (pkttype, bytes) for which match(frame, pkttype) holds, for `duration` s; with
        `first_within`, for `duration` s after the first match, which may take that long."""
        got = []
        deadline = time.monotonic() + max(duration, first_within)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return got
            r, _, _ = select.select([self.sock], [], [], left)
            if not r:
                continue
            data, addr = self.sock.recvfrom(70000)
            if match(data, addr[2]):
                if not got:
                    self.first_match_at = time.monotonic()
                    if first_within:
                        deadline = self.first_match_at + duration
                got.append((addr[2], data))

    def sniff_until(self, match, done, timeout: float) -> list[tuple[int, bytes]]:
        """Frames (pkttype, bytes) for which match(frame, pkttype) holds, until done(frames)
        holds; TimeoutError after `timeout` s (a deadline, not a window: it only bounds a
        failure)."""
        got: list[tuple[int, bytes]] = []
        deadline = time.monotonic() + timeout
        while not done(got):
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"sniffed {len(got)} matching frames in {timeout}s, not the ones awaited")
            if not select.select([self.sock], [], [], left)[0]:
                continue
            data, addr = self.sock.recvfrom(70000)
            if match(data, addr[2]):
                got.append((addr[2], data))
        return got

    def only_tcp_port(self, port: int) -> None:
        """Let the kernel queue only IPv4/TCP frames to or from `port` on this socket (classic
        BPF). Otherwise a transfer running alongside fills the socket's receive buffer
        faster than Python drains it, and the frames a test waits for are dropped there."""
        drop, accept = 12, 11
        prog = [
            (0x28, 0, 0, 12),                   # ldh [12]            ethertype
            (0x15, 0, drop - 2, ETH_P_IP),      # jeq #IPv4
            (0x30, 0, 0, 23),                   # ldb [23]            protocol
            (0x15, 0, drop - 4, 6),             # jeq #TCP
            (0x28, 0, 0, 20),                   # ldh [20]            flags + fragment offset
            (0x45, drop - 6, 0, 0x1FFF),        # jset #0x1fff        a later fragment
            (0xB1, 0, 0, 14),                   # ldxb 4*([14]&0xf)   IPv4 header length
            (0x48, 0, 0, 14),                   # ldh [x+14]          source port
            (0x15, accept - 9, 0, port),        # jeq #port
            (0x48, 0, 0, 16),                   # ldh [x+16]          destination port
            (0x15, accept - 11, drop - 11, port),
            (0x06, 0, 0, 0x40000),              # ret #256K           accept
            (0x06, 0, 0, 0),                    # ret #0              drop
        ]
        code = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *ins) for ins in prog))
        fprog = struct.pack("HL", len(prog), ctypes.addressof(code))
        self.sock.setsockopt(socket.SOL_SOCKET, 26, fprog)           # SO_ATTACH_FILTER
        self.flush_rx()           # what was queued before the filter

    def rx_drops(self) -> int:
        """Frames this socket has dropped for want of buffer space (PACKET_STATISTICS; the
        kernel resets the count on every read)."""
        return struct.unpack("II", self.sock.getsockopt(263, 6, 8))[1]

    def flush_rx(self) -> None:
        self.sock.setblocking(False)
        try:
            while True:
                self.sock.recv(70000)
        except BlockingIOError:
            pass
        finally:
            self.sock.setblocking(True)


def parse_tcp(frame: bytes):
    """(src, dst, sport, dport, seq, ack, flags, payload_len) of an IPv4/TCP frame, or None."""
    if len(frame) < 54 or frame[12:14] != b"\x08\x00" or frame[23] != 6:
        return None
    ihl = (frame[14] & 15) * 4
    total = struct.unpack_from("!H", frame, 16)[0]
    t = 14 + ihl
    sport, dport, seq, ack, off, flags = struct.unpack_from("!HHIIBB", frame, t)
    return (socket.inet_ntoa(frame[26:30]), socket.inet_ntoa(frame[30:34]), sport, dport, seq, ack,
            flags, total - ihl - (off >> 4) * 4)


# --------------------------------------------------------------------------- malformed frames

def malformed_kinds(g: Guest, host: str) -> dict[str, bytes | list[bytes]]:
    """Every kind of broken frame, by name -> frame(s). The names are the test's keys."""
    me = g.ip
    ok_syn = lambda **kw: tcp(me, host, 41000, 9, 1, 0, SYN, **kw)   # noqa: E731
    udp_ok = udp(me, host, 41001, 9, b"x" * 16)
    kinds = {
        "ipv4_empty": g.eth(b""),
        "ipv4_short": g.eth(ipv4(me, host, 6, b"")[:12]),
        "ipv4_version6": g.eth(ipv4(me, host, 6, ok_syn(), version=6)),
        "ipv4_ihl_4": g.eth(ipv4(me, host, 6, ok_syn(), ihl=4)),
        "ipv4_ihl_past_end": g.eth(ipv4(me, host, 6, b"", ihl=15)[:20] + b"\0" * 8),
        "ipv4_total_too_long": g.eth(ipv4(me, host, 6, ok_syn(), total=1400)),
        "ipv4_total_below_ihl": g.eth(ipv4(me, host, 6, ok_syn(), total=12)),
        "ipv4_bad_checksum": g.eth(ipv4(me, host, 6, ok_syn(), bad_csum=True)),
        "ipv4_fragment_mf": g.eth(ipv4(me, host, 17, udp_ok, flags_frag=0x2000)),
        "ipv4_fragment_offset": g.eth(ipv4(me, host, 17, udp_ok[:8], flags_frag=0x0003)),
        "ipv4_proto_gre": g.eth(ipv4(me, host, 47, b"\0" * 8)),
        "tcp_short": g.eth(ipv4(me, host, 6, ok_syn()[:12])),
        "tcp_doff_3": g.eth(ipv4(me, host, 6, ok_syn(doff=3))),
        "tcp_doff_past_end": g.eth(ipv4(me, host, 6, ok_syn(doff=15))),
        "tcp_bad_checksum": g.eth(ipv4(me, host, 6, ok_syn(bad_csum=True))),
        "tcp_bad_checksum_data": g.eth(ipv4(me, host, 6, tcp(me, host, 41002, 9, 7, 9, ACK | PSH, b"d" * 100,
                                                            bad_csum=True))),
        "tcp_option_zero_length": g.eth(ipv4(me, host, 6, ok_syn(options=b"\x02\x00\x05\xb4"))),
        "tcp_option_len_one": g.eth(ipv4(me, host, 6, ok_syn(options=b"\x08\x01\x00\x00"))),
        "tcp_option_overrun": g.eth(ipv4(me, host, 6, ok_syn(options=b"\x01\x03\x0a\x07"))),
        "tcp_option_mss_bad_len": g.eth(ipv4(me, host, 6, ok_syn(options=b"\x02\x03\x05\x00"))),
        "udp_short": g.eth(ipv4(me, host, 17, b"\x00\x01\x00")),
        "udp_bad_length": g.eth(ipv4(me, host, 17, udp(me, host, 41003, 9, b"abc", length=200))),
        "udp_bad_checksum": g.eth(ipv4(me, host, 17, udp(me, host, 41004, 9, b"q" * 20, bad_csum=True))),
        "icmp_short_gateway": g.eth(ipv4(me, g.gw, 1, b"\x08\x00\x00")),
        "icmp_bad_checksum_gateway": g.eth(ipv4(me, g.gw, 1, icmp_echo(77, 1, b"p" * 32, bad_csum=True))),
        "icmp_bad_checksum_remote": g.eth(ipv4(me, host, 1, icmp_echo(78, 1, b"p" * 32, bad_csum=True))),
        "arp_short": g.eth(arp(1, g.mac, me, b"\0" * 6, g.gw)[:20], ETH_P_ARP),
        "arp_bad_op": g.eth(arp(9, g.mac, me, b"\0" * 6, g.gw), ETH_P_ARP),
        "arp_ipv6_ptype": g.eth(arp(1, g.mac, me, b"\0" * 6, g.gw, ptype=0x86DD), ETH_P_ARP),
        "syn_fin": g.eth(ipv4(me, host, 6, tcp(me, host, 41005, 9, 1, 0, SYN | FIN))),
        "ethertype_unknown": g.eth(b"\0" * 46, 0x88B5),
    }
    return kinds


def op_malformed(count: int, host: str = util.HOST_ADDR, pace: float = 0.002) -> dict:
    g = Guest()
    kinds = malformed_kinds(g, host)
    sent = {}
    for _ in range(count):
        for name, frame in kinds.items():
            g.send(frame)
            sent[name] = sent.get(name, 0) + 1
            time.sleep(pace)
    return {"sent": sent}


# --------------------------------------------------------------------------- attacks on a live flow

def op_flow_attacks(host: str, port: int) -> dict:
    """On an established connection to an echo server: out-of-window data, RST and SYN with
    wrong sequence numbers (RFC 5961); each must draw a challenge ACK and leave the flow
    alive. Finally an exact-sequence RST, which must kill it (proves our numbers were right)."""
    g = Guest()
    s = socket.create_connection((host, port), timeout=10)
    s.settimeout(10)
    sport = s.getsockname()[1]
    me = g.ip
    res: dict = {"rounds": []}

    def echo(msg: bytes) -> bytes:
        s.sendall(msg)
        got = b""
        while len(got) < len(msg):
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
        return got

    res["echo_before"] = echo(b"hello before") == b"hello before"
    # The 4 bytes "sync" each way tell us SND.NXT (end of ours) and RCV.NXT (end of the echo):
    # wait for both segments themselves, not for a fixed time (a delayed ACK could come late).
    g.only_tcp_port(sport)
    g.rx_drops()
    flow = lambda f, t: ((p := parse_tcp(f)) is not None and p[7] == 4  # noqa: E731
                         and (p[2], p[3]) == ((sport, port) if t == PACKET_OUTGOING else (port, sport)))
    both = lambda frames: {t == PACKET_OUTGOING for t, _ in frames} == {True, False}  # noqa: E731
    s.sendall(b"sync")
    frames = g.sniff_until(flow, both, 10.0)
    assert echo_tail(s, 4) == b"sync"
    ours = next(parse_tcp(f) for t, f in frames if t == PACKET_OUTGOING)
    echo_seg = next(parse_tcp(f) for t, f in frames if t != PACKET_OUTGOING)
    snd_nxt, rcv_nxt = ours[4] + 4, echo_seg[4] + 4
    res["snd_nxt"], res["rcv_nxt"] = snd_nxt, rcv_nxt

    theirs = lambda f, t: (t != PACKET_OUTGOING and (p := parse_tcp(f)) is not None  # noqa: E731
                           and p[2] == port and p[3] == sport)
    # name -> segment from the current (snd_nxt, rcv_nxt); built per round, as they move
    attacks = {
        "out_of_window_data": lambda snd, rcv: tcp(me, host, sport, port, snd + 0x40000000, rcv, ACK | PSH,
                                                   b"Z" * 200),
        "old_data": lambda snd, rcv: tcp(me, host, sport, port, snd - 0x10000000, rcv, ACK | PSH, b"O" * 200),
        "rst_wrong_seq": lambda snd, rcv: tcp(me, host, sport, port, snd + 1000, 0, RST),
        "rst_ack_wrong_seq": lambda snd, rcv: tcp(me, host, sport, port, snd + 5, rcv, RST | ACK),
        "syn_wrong_seq": lambda snd, rcv: tcp(me, host, sport, port, snd + 777, 0, SYN),
        "syn_exact_seq": lambda snd, rcv: tcp(me, host, sport, port, snd, 0, SYN),
        "ack_of_unsent_data": lambda snd, rcv: tcp(me, host, sport, port, snd, rcv + 0x20000000, ACK),
        # RFC 5961 §3.2: an RST outside the window is dropped silently (no challenge ACK)
        "rst_out_of_window": lambda snd, rcv: tcp(me, host, sport, port, snd - 100000, 0, RST),
    }
    for name, build in attacks.items():
        g.flush_rx()
        sent_at = time.monotonic()
        g.send(g.eth(ipv4(me, host, 6, build(snd_nxt, rcv_nxt))))
        if name == "rst_out_of_window":      # silence expected: a fixed window
            replies = [parse_tcp(f) for _, f in g.sniff(theirs, 0.4)]
        else:                                 # the reply, then 0.3 s for an unwanted second
            replies = [parse_tcp(f) for _, f in g.sniff(theirs, 0.3, first_within=5.0)]
        res["rounds"].append({
            "attack": name,
            "challenge_acks": sum(1 for p in replies if p[6] == ACK and p[5] == snd_nxt and p[4] == rcv_nxt
                                  and p[7] == 0),
            "replies": [(p[6], p[4] - rcv_nxt, p[5] - snd_nxt, p[7]) for p in replies][:8],
            "reply_ms": round((g.first_match_at - sent_at) * 1000, 1) if replies else None,
            "echo_after": echo(name.encode()) == name.encode(),
        })
        snd_nxt += len(name)
        rcv_nxt += len(name)
    res["sniff_drops"] = g.rx_drops()
    # Positive control: the exact RST kills the flow on slirpy's side.
    g.send(g.eth(ipv4(me, host, 6, tcp(me, host, sport, port, snd_nxt, 0, RST))))
    time.sleep(0.3)
    try:
        s.sendall(b"after exact rst")
        data = s.recv(100)
        res["after_exact_rst"] = "data" if data else "eof"
    except OSError as e:
        res["after_exact_rst"] = util._errname(e)
    s.close()
    return res


def echo_tail(s: socket.socket, n: int) -> bytes:
    got = b""
    while len(got) < n:
        chunk = s.recv(n - len(got))
        if not chunk:
            break
        got += chunk
    return got


# --------------------------------------------------------------------------- floods

def op_arp_flood(count: int, guest: str, gateway: str, seed: int = 1, pace_every: int = 50) -> dict:
    """ARP requests for the gateway from `count` distinct in-subnet senders (random unicast
    MACs), never the guest's own address or the virtual ones."""
    g = Guest(guest=guest, gateway=gateway)
    rng = random.Random(seed)
    base = struct.unpack("!I", socket.inet_aton(g.gw))[0] & 0xFFFF0000
    avoid = {socket.inet_aton(g.ip), socket.inet_aton(g.gw)}
    sent = 0
    i = 1000
    while sent < count:
        i += 1
        ip = struct.pack("!I", base + i)
        if ip in avoid or ip[3] in (0, 255):
            continue
        mac = bytes([rng.randrange(256) & 0xFE | 0x02]) + rng.randbytes(5)
        g.send(g.eth(arp(1, mac, socket.inet_ntoa(ip), b"\0" * 6, g.gw), ETH_P_ARP,
                     dst=b"\xff" * 6, src=mac))
        sent += 1
        if sent % pace_every == 0:
            time.sleep(0.002)
    return {"sent": sent}


def op_syn_flood(host: str, port: int, count: int, sport_base: int = 20000, pace_every: int = 100,
                 await_last_rst: float = 0.0) -> dict:
    """`count` raw SYNs from distinct source ports; the guest kernel has no socket for them, so
    it answers any SYN-ACK with RST (that is fine: the flows are meant to be half-open).
    With `await_last_rst` (a deadline in s), then wait for slirpy's RST to the last SYN (sent
    when count > max_half_open): slirpy handles frames in order, so it has handled them all."""
    g = Guest()
    me = g.ip
    if await_last_rst:
        sniffer = Guest()
        flood_reply_filter(sniffer, port)
    t0 = time.monotonic()
    for i in range(count):
        sp = sport_base + i
        g.send(g.eth(ipv4(me, host, 6, tcp(me, host, sp, port, 0x10000000 + i * 7919, 0, SYN,
                                         options=b"\x02\x04\x05\xb4"))))
        if i % pace_every == pace_every - 1:
            time.sleep(0.001)
    res = {"sent": count, "seconds": time.monotonic() - t0}
    if await_last_rst:
        last = sport_base + count - 1
        is_last_rst = lambda f, t: (p := parse_tcp(f)) is not None and p[3] == last and p[6] & RST  # noqa: E731
        try:
            sniffer.sniff_until(is_last_rst, lambda got: bool(got), await_last_rst)
            res["last_refused"] = True
        except TimeoutError:
            res["last_refused"] = False
    return res


# --------------------------------------------------------------------------- driver

def op_sleep(seconds: float) -> dict:
    time.sleep(seconds)
    return {}


def op_tap_stats() -> dict:
    with open("/proc/net/dev") as f:
        for line in f:
            if line.strip().startswith(IFACE + ":"):
                v = line.split(":", 1)[1].split()
                return {"rx_packets": int(v[1]), "rx_dropped": int(v[3]), "tx_packets": int(v[9]),
                        "tx_dropped": int(v[11])}
    return {}


OPS = {
    "malformed": op_malformed,
    "flow_attacks": op_flow_attacks,
    "arp_flood": op_arp_flood,
    "syn_flood": op_syn_flood,
    "sleep": op_sleep,
    "tap_stats": op_tap_stats,
}
OPS.update(util.GUEST_OPS)


def run_ops(ops: list[dict]) -> list:
    results = []
    for op in ops:
        op = dict(op)
        fn = OPS[op.pop("op")]
        try:
            results.append(fn(**op))
        except Exception as e:            # report, do not hide: the test asserts on it
            results.append({"exception": type(e).__name__, "message": str(e)})
    return results


STOP = threading.Event()        # set when the foreground ops are done
FG_START = threading.Event()    # set when they begin (every background op is ready by then)
_bg = threading.local()


def signal_ready() -> None:
    """A background op calls this once it really runs alongside (connected, data moving);
    main() starts the foreground ops only when every background op has called it (or ended)."""
    event = getattr(_bg, "ready", None)
    if event is not None:
        event.set()


def signal_overlap() -> None:
    """A background transfer calls this once it moved data after the foreground ops began:
    main() sets STOP only after that (or a 30 s deadline), so a burst of foreground frames
    that ends within one of the transfer's paced steps still finds it moving (its
    `read_during_ops`/`chunks_during_ops` then count from the ops' start to STOP)."""
    event = getattr(_bg, "overlap", None)
    if event is not None:
        event.set()


OVERLAP_OPS = frozenset(("download_until", "upload_until"))   # ops that call signal_overlap


def op_upload_until(host: str, port: int, seed: int, min_size: int = 1 << 20, pace: float = 0.02) -> dict:
    """Upload pattern bytes to a sink in 1 MiB chunks until the foreground ops are done (and
    at least `min_size`), so the transfer really runs alongside them; then read the sink's
    {"len", "sha"} reply. The host checks it against expected(sent, seed). Ready once the
    first chunk is sent; `chunks_during_ops` counts those sent while the foreground ran."""
    with socket.create_connection((host, port), timeout=10) as s:
        s.settimeout(util.DEFAULT_TIMEOUT)
        sent = 0
        chunks = 0
        during = 0
        for chunk in util.pattern(1 << 40, seed):
            running = FG_START.is_set() and not STOP.is_set()
            s.sendall(chunk)
            sent += len(chunk)
            chunks += 1
            during += running
            signal_ready()
            if running:
                signal_overlap()
            time.sleep(pace)
            if STOP.is_set() and sent >= min_size:
                break
        s.shutdown(socket.SHUT_WR)
        line = b""
        while not line.endswith(b"\n"):
            data = s.recv(4096)
            if not data:
                break
            line += data
    return {"sent": sent, "chunks": chunks, "chunks_during_ops": during,
            "server": json.loads(line) if line.endswith(b"\n") else None}


def op_download_until(host: str, port: int, size: int, reserve: int = 1 << 20, pace: float = 0.02) -> dict:
    """Download `size` bytes from a source server alongside the foreground ops, however fast
    the machine: read in paced 256 KiB steps, but never past `size - reserve` before the
    foreground ops are done, so the transfer is still open (data queued in slirpy) when they
    end; then read the rest to EOF. Ready once the first bytes have arrived."""
    import hashlib
    h = hashlib.sha256()
    got = during = 0
    buf = bytearray(256 * 1024)
    with socket.create_connection((host, port), timeout=10) as s:
        s.settimeout(util.DEFAULT_TIMEOUT)
        while not STOP.is_set():
            room = size - reserve - got
            if room <= 0:
                STOP.wait(0.05)
                continue
            running = FG_START.is_set()
            n = s.recv_into(buf, min(len(buf), room))
            if n == 0:
                break
            h.update(memoryview(buf)[:n])
            got += n
            if running:
                during += n
                signal_overlap()
            signal_ready()
            time.sleep(pace)
        at_stop = got
        while True:
            n = s.recv_into(buf)
            if n == 0:
                break
            h.update(memoryview(buf)[:n])
            got += n
    return {"len": got, "sha": h.hexdigest(), "read_during_ops": during, "read_at_stop": at_stop}


OPS["download_until"] = op_download_until
OPS["upload_until"] = op_upload_until


def op_slow_download(host: str, port: int, stall: float) -> dict:
    """Connect, read nothing for `stall` seconds (the host keeps sending), then read to EOF."""
    with socket.create_connection((host, port), timeout=10) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 10)
        time.sleep(stall)
        s.settimeout(util.DEFAULT_TIMEOUT)
        n, sha, _ = util._recv_all(s)
    return {"len": n, "sha": sha}


SOL_PACKET = 263
PACKET_IGNORE_OUTGOING = 23
SO_TIMESTAMPNS = 35


def flood_reply_filter(g: Guest, port: int) -> None:
    """Let the socket queue only what slirpy sends about the flood (classic BPF): TCP from
    `port` (its RSTs over the half-open cap) and ICMP (its unreachables when a flood flow's
    host connect times out). Our own frames are not queued at all (PACKET_IGNORE_OUTGOING)."""
    g.sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
    drop, accept = 11, 10
    prog = [
        (0x28, 0, 0, 12),                   # ldh [12]            ethertype
        (0x15, 0, drop - 2, ETH_P_IP),      # jeq #IPv4
        (0x30, 0, 0, 23),                   # ldb [23]            protocol
        (0x15, accept - 4, 0, 1),           # jeq #ICMP           accept
        (0x15, 0, drop - 5, 6),             # jeq #TCP
        (0x28, 0, 0, 20),                   # ldh [20]            flags + fragment offset
        (0x45, drop - 7, 0, 0x1FFF),        # jset #0x1fff        a later fragment
        (0xB1, 0, 0, 14),                   # ldxb 4*([14]&0xf)   IPv4 header length
        (0x48, 0, 0, 14),                   # ldh [x+14]          source port
        (0x15, accept - 10, drop - 10, port),
        (0x06, 0, 0, 0x40000),              # ret #256K           accept
        (0x06, 0, 0, 0),                    # ret #0              drop
    ]
    code = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *ins) for ins in prog))
    g.sock.setsockopt(socket.SOL_SOCKET, 26, struct.pack("HL", len(prog), ctypes.addressof(code)))
    g.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    g.flush_rx()


def op_flood_download(host: str, port: int, flood_port: int | None = None, burst: int = 2048,
                      pace_every: int = 10, sport_base: int = 20000, max_count: int = 45000,
                      cap_timeout: float = 20.0, drain_timeout: float = 30.0) -> dict:
    """A 128 MiB download with the half-open cap held full the whole time it runs, whatever
    the speed of the machine (issue 12).

    1. connect the download (established before the cap fills: the cap refuses new flows),
       read nothing yet;
    2. start the flood: `burst` raw SYNs from new source ports (more than max_half_open),
       then more, paced, until told to stop, so that the cap is refilled as flows drain;
    3. wait until slirpy answers a flood SYN with RST: proof that the cap is full;
    4. only then read the whole download, timed;
    5. count the SYNs sent and the RSTs received (kernel timestamps) during the read;
    6. stop the flood and wait until every flood flow has drained, i.e. until an ICMP
       unreachable (its host connect timed out) arrived for every SYN not answered by RST.
    Without `flood_port`: steps 1 and 4 only (the baseline)."""
    dl = socket.create_connection((host, port), timeout=10)
    dl.settimeout(util.DEFAULT_TIMEOUT)
    res: dict = {}
    stop = threading.Event()
    first_rst = threading.Event()
    syns = [0]
    rst_ns: list[int] = []
    icmp = [0]
    threads = []
    if flood_port is not None:
        g = Guest()
        sniffer = Guest()
        flood_reply_filter(sniffer, flood_port)
        me = g.ip
        quote = struct.pack("!H", flood_port)

        def flood():
            i = 0
            while i < max_count and not stop.is_set():
                g.send(g.eth(ipv4(me, host, 6, tcp(me, host, sport_base + i, flood_port, 0x10000000 + i * 7919,
                                                 0, SYN, options=b"\x02\x04\x05\xb4"))))
                i += 1
                syns[0] = i
                if i % (50 if i < burst else pace_every) == 0:
                    time.sleep(0.001)
            res["flood_exhausted"] = i >= max_count

        def sniff():
            sock = sniffer.sock
            while not stop.is_set() or drain_pending():
                if not select.select([sock], [], [], 0.1)[0]:
                    continue
                data, anc, _, _ = sock.recvmsg(2048, 64)
                ts = time.time_ns()
                for level, kind, value in anc:
                    if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                        sec, nsec = struct.unpack("qq", value[:16])
                        ts = sec * 1_000_000_000 + nsec
                p = parse_tcp(data)
                if p is not None:
                    if p[2] == flood_port and p[6] & RST:
                        rst_ns.append(ts)
                        first_rst.set()
                elif len(data) >= 14 + 20 + 8 + 20 + 4 and data[23] == 1 and data[34] == 3:
                    inner = 14 + (data[14] & 15) * 4 + 8           # the quoted IPv4 header
                    q = inner + (data[inner] & 15) * 4
                    if data[inner + 9] == 6 and data[q + 2:q + 4] == quote:
                        icmp[0] += 1

        drain_deadline = [float("inf")]

        def drain_pending():
            return (time.monotonic() < drain_deadline[0]
                    and icmp[0] < syns[0] - len(rst_ns))

        threads = [threading.Thread(target=flood, daemon=True), threading.Thread(target=sniff, daemon=True)]
        for t in threads:
            t.start()
        t0 = time.monotonic()
        res["cap_reached"] = first_rst.wait(cap_timeout)
        res["cap_seconds"] = time.monotonic() - t0
    # the read, with the flood (if any) still refilling the cap
    syn0, ns0, t0 = syns[0], time.time_ns(), time.monotonic()
    with dl:
        n, sha, _ = util._recv_all(dl)
    syn1, ns1, t1 = syns[0], time.time_ns(), time.monotonic()
    res.update({"len": n, "sha": sha, "seconds": t1 - t0})
    if flood_port is not None:
        # RSTs stamped by the kernel before the read began, and during it
        rst_before = sum(1 for ts in list(rst_ns) if ts < ns0)
        rst_during = sum(1 for ts in list(rst_ns) if ns0 <= ts <= ns1)
        drain_deadline[0] = time.monotonic() + drain_timeout
        stop.set()
        for t in threads:
            t.join()
        res.update({"syn_before_read": syn0, "syn_during_read": syn1 - syn0, "syn_total": syns[0],
                    "rst_before_read": rst_before, "rst_during_read": rst_during,
                    "rst_total": len(rst_ns), "icmp_unreachable": icmp[0],
                    "drained": icmp[0] >= syns[0] - len(rst_ns),
                    "drain_seconds": time.monotonic() - t1, "sniff_drops": sniffer.rx_drops()})
    return res


def op_stop() -> dict:
    STOP.set()
    return {}


OPS.update(stop=op_stop, slow_download=op_slow_download, flood_download=op_flood_download)


def main(argv: list[str]) -> int:
    spec = json.loads(argv[1])
    # {"background": [ops...], "ops": [ops...]}: each background op runs in its own thread
    # alongside the foreground ops, which start once every background op is ready.
    background = spec.get("background", [])
    bg_results: list = [None] * len(background)
    threads = []
    ready = []
    overlaps = []
    for i, op in enumerate(background):
        event = threading.Event()
        overlap = threading.Event()
        if op.get("op") in OVERLAP_OPS:
            overlaps.append(overlap)

        def run(i=i, op=op, event=event, overlap=overlap):
            _bg.ready = event
            _bg.overlap = overlap
            try:
                bg_results[i] = run_ops([op])[0]
            finally:
                event.set()             # an op that never signals is ready when it ends
                overlap.set()
        t = threading.Thread(target=run, daemon=True)
        t.start()
        threads.append(t)
        ready.append(event)
    # Wait for every background op to really run (not a fixed head start: issue 12).
    deadline = time.monotonic() + spec.get("background_ready_timeout", 60.0)
    for event in ready:
        event.wait(max(0.0, deadline - time.monotonic()))
    all_ready = all(event.is_set() for event in ready)
    FG_START.set()
    t0 = time.monotonic()
    results = run_ops(spec.get("ops", []))
    fg_seconds = time.monotonic() - t0
    deadline = time.monotonic() + 30.0
    for overlap in overlaps:        # each transfer moved data while the ops ran (or gave up)
        overlap.wait(max(0.0, deadline - time.monotonic()))
    STOP.set()
    for t in threads:
        t.join()
    print(json.dumps({"ops": results, "background": bg_results, "fg_seconds": fg_seconds,
                      "background_ready": all_ready}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
