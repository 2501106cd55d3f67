"""Capture real IPv6 frames for the ipv6, icmpv6 and ndp fuzz corpora:
``helpers/testns python -m tests.fuzz.capture_ipv6``.

The stack does not speak IPv6 yet on the branch that wrote this, so the frames come from the
kernel itself, through a TAP device in the test namespace: bringing tap0 up with IPv6
addresses makes it send router solicitations, duplicate-address-detection solicitations and
MLDv2 reports (hop-by-hop Router Alert); sockets send echo requests, UDP, TCP SYNs,
fragmented datagrams and datagrams with sticky hop-by-hop and destination-options headers
(Linux refuses a type-0 routing header); and frames written into the TAP, as a gateway would
send them (neighbor solicitations, echo requests with extension-header chains, a datagram to
a closed port, a SYN to a closed port, an unknown must-discard option, a live routing header,
a two-fragment echo, a Router Advertisement), draw the kernel's answers: advertisements, echo
replies, port unreachable, RST, parameter problems, and the SLAAC address's own detection.
Both directions are kept.
A selection of distinct messages is written to tests/fuzz/corpus/{ipv6,icmpv6,ndp}/ under
content-hash names: re-running adds, never duplicates.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import os
import select
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

from slirpy.tcpip.checksum import finish, pseudo_header_sum, sum16
from slirpy.tcpip.wire import icmpv6, ipv6
from slirpy.tcpip.wire.udp import build_datagram

CORPUS = Path(__file__).resolve().parent / "corpus"
TUNSETIFF = 0x400454CA
IFF_TAP, IFF_NO_PI = 0x0002, 0x1000
GUEST_MAC = bytes.fromhex("020000000064")
GW_MAC = bytes.fromhex("52550a000202")


def a6(text: str) -> bytes:
    return socket.inet_pton(socket.AF_INET6, text)


GUEST, GUEST2, GW, DNS, FAR = (a6(t) for t in ("fd00::100", "fd00::101", "fd00::2", "fd00::3",
                                               "2001:db8::1"))
GW_LL = icmpv6.link_local_from_mac(GW_MAC)


def sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True)


def open_tap(name: str) -> int:
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TAP | IFF_NO_PI))
    return fd


class Tap:
    """The TAP and every frame through it: `out` from the kernel, `inj` written by us."""

    def __init__(self, fd: int):
        self.fd = fd
        self.out: list[bytes] = []
        self.inj: list[bytes] = []
        self._stop = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            if select.select([self.fd], [], [], 0.1)[0]:
                try:
                    self.out.append(os.read(self.fd, 65600))
                except BlockingIOError:
                    pass

    def send(self, src: bytes, dst: bytes, proto: int, payload: bytes, hop: int = 64,
             first: int | None = None, chain: bytes = b"") -> None:
        """Write a frame from the gateway: IPv6 header, optional extension `chain` (whose
        first type is `first`), then `payload` of `proto`."""
        ip = ipv6.build_header(src, dst, proto if first is None else first, len(chain) + len(payload), hop)
        frame = GUEST_MAC + GW_MAC + b"\x86\xdd" + ip + chain + payload
        self.inj.append(frame)
        os.write(self.fd, frame)

    def stop(self) -> None:
        self._stop.set()
        self._reader.join()


def udp6(src: bytes, dst: bytes, sport: int, dport: int, data: bytes) -> bytes:
    return build_datagram(src, dst, sport, dport, data)


def tcp_syn(src: bytes, dst: bytes, sport: int, dport: int) -> bytes:
    hdr = struct.pack("!HHIIBBHHH", sport, dport, 12345, 0, 0x60, 0x02, 64240, 0, 0) + b"\x02\x04\x05\xa0"
    csum = finish(sum16(hdr, pseudo_header_sum(src, dst, 6, len(hdr))))
    return hdr[:16] + csum.to_bytes(2, "big") + hdr[18:]


def from_kernel(tap: Tap) -> None:
    """Traffic the guest's kernel originates."""
    raw = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    for dst in ("fd00::2", "fd00::3", "2001:db8::1"):
        raw.sendto(struct.pack("!BBHHH", 128, 0, 0, 0x77, 1) + bytes(range(48)), (dst, 0))
    u = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    u.sendto(bytes.fromhex("abcd01000001000000000000076578616d706c6503636f6d00001c0001"), ("fd00::3", 53))
    u.sendto(b"x" * 3000, ("fd00::2", 9))                        # fragments (MTU 1500)
    for level, opt, value in (
            (socket.IPPROTO_IPV6, socket.IPV6_DSTOPTS, bytes((0, 0, 1, 4, 0, 0, 0, 0))),
            (socket.IPPROTO_IPV6, socket.IPV6_HOPOPTS, bytes((0, 0, 5, 2, 0, 0, 1, 0)))):
        s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        try:
            s.setsockopt(level, opt, value)
            s.sendto(b"with an extension header", ("2001:db8::1", 7))
        except OSError as e:
            print(f"capture: extension header option {opt}: {e}", file=sys.stderr)
        s.close()
    for dst in ("fd00::2", "2001:db8::1"):
        t = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        t.setblocking(False)
        try:
            t.connect((dst, 80))
        except BlockingIOError:
            pass
        time.sleep(0.05)
        t.close()


def to_kernel(tap: Tap) -> None:
    """Frames a gateway sends the guest, which the kernel answers."""
    ns = icmpv6.build_ns(GW, icmpv6.solicited_node(GUEST), GUEST, GW_MAC)
    tap.send(GW, icmpv6.solicited_node(GUEST), 58, ns, hop=255)
    echo = icmpv6.build_message(GW, GUEST, 128, 0, bytes.fromhex("12340001"), b"ping through a chain")
    tap.send(GW, GUEST, 58, echo)
    hbh = bytes((60, 0, 5, 2, 0, 0, 1, 0))                       # hop-by-hop: Router Alert
    dst = bytes((43, 0, 1, 4, 0, 0, 0, 0))                       # destination options: PadN
    rt = bytes((58, 0, 0, 0, 0, 0, 0, 0))                        # routing, segments left 0
    tap.send(GW, GUEST, 58, echo, first=0, chain=hbh + dst + rt)
    tap.send(FAR, GUEST, 17, udp6(FAR, GUEST, 4000, 9, b"to a closed port"))
    tap.send(FAR, GUEST, 6, tcp_syn(FAR, GUEST, 4001, 1))
    bad_opt = bytes((58, 0, 0x80, 4, 0, 0, 0, 0))                # unknown option, "discard + ICMP"
    tap.send(FAR, GUEST, 58, echo, first=60, chain=bad_opt)
    rh_live = bytes((58, 2, 0, 1, 0, 0, 0, 0)) + FAR              # routing type 0, 1 segment left
    tap.send(FAR, GUEST, 58, echo, first=43, chain=rh_live)
    big = icmpv6.build_message(FAR, GUEST, 128, 0, bytes.fromhex("43210001"), bytes(range(256)) * 5)
    frag = struct.Struct("!BBHI")
    tap.send(FAR, GUEST, 58, big[:1000], first=44, chain=frag.pack(58, 0, 0 | 1, 0xABCD))
    tap.send(FAR, GUEST, 58, big[1000:], first=44, chain=frag.pack(58, 0, 1000, 0xABCD))
    ra = icmpv6.build_ra(GW_LL, icmpv6.ALL_NODES, GW_MAC, prefix=a6("fd00:0:0:1::"), prefix_len=64,
                         mtu=1500, rdnss=[DNS], router_lifetime=1800, valid_lifetime=86400,
                         preferred_lifetime=14400, rdnss_lifetime=1800)
    tap.send(GW_LL, icmpv6.ALL_NODES, 58, ra, hop=255)


def capture() -> Tap:
    for knob, value in (("accept_dad", "1"), ("accept_ra", "1"), ("autoconf", "1")):
        Path(f"/proc/sys/net/ipv6/conf/default/{knob}").write_text(value)
    tap = Tap(open_tap("tap0"))
    sh("ip", "link", "set", "tap0", "address", "02:00:00:00:00:64", "mtu", "1500")
    sh("ip", "-6", "addr", "add", "fd00::100/64", "dev", "tap0", "nodad")
    sh("ip", "link", "set", "tap0", "up")
    sh("ip", "-6", "addr", "add", "fd00::101/64", "dev", "tap0")       # detected: a DAD NS
    sh("ip", "-6", "neigh", "replace", "fd00::2", "lladdr", "52:55:0a:00:02:02", "dev", "tap0")
    sh("ip", "-6", "route", "add", "default", "via", "fd00::2", "dev", "tap0")
    time.sleep(0.3)
    from_kernel(tap)
    to_kernel(tap)
    time.sleep(2.5)                 # router solicitation delay, DAD of the SLAAC address
    tap.stop()
    print(f"capture: {len(tap.out)} frames from the kernel, {len(tap.inj)} written", file=sys.stderr)
    return tap


def layers(frame: bytes) -> dict[str, bytes]:
    """An Ethernet frame cut into what each harness takes: the IPv6 packet (ipv6, and icmpv6
    when it carries ICMPv6) and the NDP message (ndp)."""
    if len(frame) < 54 or frame[12:14] != b"\x86\xdd":
        return {}
    pkt = frame[14:]
    out = {"ipv6": pkt}
    try:
        proto, l4, end, *_ = ipv6.parse_fields(memoryview(pkt))
    except Exception:               # noqa: BLE001 - whatever it is, it is a seed for ipv6
        return out
    if proto == ipv6.PROTO_ICMPV6:
        out["icmpv6"] = pkt[:end]
        if 133 <= pkt[l4] <= 137:
            out["ndp"] = pkt[l4:end]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-kind", type=int, default=40, help="files per harness at most")
    args = ap.parse_args()
    tap = capture()
    written: dict[str, int] = {}
    seen = set()
    for frame in tap.out + tap.inj:
        for harness, data in layers(frame).items():
            shape = (harness, len(data), data[:8], data[40:42])
            if shape in seen or written.get(harness, 0) >= args.per_kind:
                continue
            seen.add(shape)
            d = CORPUS / harness
            d.mkdir(parents=True, exist_ok=True)
            p = d / (hashlib.sha1(data).hexdigest()[:16] + ".bin")
            if not p.exists():
                p.write_bytes(data)
                written[harness] = written.get(harness, 0) + 1
    print("written:", written, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
